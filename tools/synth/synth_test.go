package synth

import (
	"bytes"
	"context"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

func TestRenderDeterministic(t *testing.T) {
	a, la := Render(11, 80, 60)
	b, lb := Render(11, 80, 60)
	if !bytes.Equal(a.Pix, b.Pix) || !bytes.Equal(la, lb) {
		t.Fatal("same seed, different pictures")
	}
	c, _ := Render(12, 80, 60)
	if bytes.Equal(a.Pix, c.Pix) {
		t.Fatal("different seeds, same picture")
	}
	if a.Rect.Dx() != 80 || a.Rect.Dy() != 60 || len(la) != 80*60 {
		t.Fatalf("size %v, %d labels", a.Rect, len(la))
	}
}

// TestLabelsAreExact draws one card and one occluder through known transforms and compares the
// labels with the shapes' geometry at every pixel centre.
func TestLabelsAreExact(t *testing.T) {
	const w, h = 120, 90
	c := newCanvas(w, h, true)
	card := shape{x0: -cardW / 2, y0: -cardH / 2, x1: cardW / 2, y1: cardH / 2,
		sd: func(u, v float64) float64 {
			return sdRoundRect(u, v, -cardW/2, -cardH/2, cardW/2, cardH/2, cardRadius)
		},
		color: flat(rgb{1, 1, 1})}
	cardPlace := similarity(0.3, 0.8, 55, 45)
	p, ok := place(card, cardPlace, w, h)
	if !ok {
		t.Fatal("card missed the frame")
	}
	c.draw(p, 1, setCard)
	coin := shape{x0: -10, y0: -10, x1: 10, y1: 10,
		sd:    func(u, v float64) float64 { return math.Hypot(u, v) - 10 },
		color: flat(rgb{0.5, 0.5, 0})}
	coinPlace := similarity(0, 1, 70, 30)
	q, ok := place(coin, coinPlace, w, h)
	if !ok {
		t.Fatal("coin missed the frame")
	}
	c.draw(q, 1, clearLabel)
	cardInv, _ := cardPlace.Inverse()
	cards, coins := 0, 0
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			u, v := cardInv.Apply(px, py)
			onCard := card.sd(u, v) < 0
			underCoin := math.Hypot(px-70, py-30) < 10
			want := uint8(0)
			if onCard && !underCoin {
				want = 1
			}
			if c.label[y*w+x] != want {
				t.Fatalf("label at (%d,%d) = %d, want %d", x, y, c.label[y*w+x], want)
			}
			cards += int(want)
			if onCard && underCoin {
				coins++
			}
		}
	}
	if cards < 1000 || coins < 50 {
		t.Fatalf("test shapes too small: %d card pixels, %d occluded", cards, coins)
	}
}

func TestRenderStatistics(t *testing.T) {
	const n, w, h = 150, 64, 48
	empty, cut, big := 0, 0, 0
	for i := 0; i < n; i++ {
		_, labels := Render(sampleSeed(5, "train", i), w, h)
		card := 0
		edge := false
		for j, v := range labels {
			if v > 1 {
				t.Fatalf("label %d", v)
			}
			card += int(v)
			x, y := j%w, j/w
			if v == 1 && (x == 0 || y == 0 || x == w-1 || y == h-1) {
				edge = true
			}
		}
		if card == 0 {
			empty++
		}
		if edge {
			cut++
		}
		if card > w*h/8 {
			big++
		}
	}
	// About 10 % of pictures have no card; some cards are cut by the frame; some are close-ups.
	if empty < n*3/100 || empty > n*20/100 {
		t.Errorf("%d of %d pictures without cards, want about 10 %%", empty, n)
	}
	if cut < n/20 {
		t.Errorf("only %d of %d pictures have a card cut by the frame", cut, n)
	}
	if big < n/10 {
		t.Errorf("only %d of %d pictures have cards covering an eighth of the frame", big, n)
	}
}

func TestGenerateWritesDataset(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Out: dir, Train: 3, Test: 2, Seed: 9, Height: 48, Width: 64, Workers: 3}
	calls := 0
	if err := Generate(context.Background(), opts, func(done, total int) {
		calls++
		if total != 5 || done < 1 || done > 5 {
			t.Errorf("progress %d/%d", done, total)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if calls != 5 {
		t.Fatalf("%d progress calls", calls)
	}
	for _, split := range []struct {
		name string
		n    int
	}{{"train", 3}, {"test", 2}} {
		images, _ := filepath.Glob(filepath.Join(dir, split.name, "image", "*"))
		masks, _ := filepath.Glob(filepath.Join(dir, split.name, "mask", "*"))
		if len(images) != split.n || len(masks) != split.n {
			t.Fatalf("%s: %d images, %d masks", split.name, len(images), len(masks))
		}
		for i := 0; i < split.n; i++ {
			name := Name(split.name, i)
			img, info, err := augment.ReadImage(filepath.Join(dir, split.name, "image", name+".jpg"))
			if err != nil || info.Format != augment.JPEG || img.Rect != image.Rect(0, 0, 64, 48) {
				t.Fatalf("%s: %v %+v", name, err, info)
			}
			m, mi, err := augment.ReadMask(filepath.Join(dir, split.name, "mask", name+".png"))
			if err != nil || mi.Format != augment.PNG || !mi.Binary() || (mi.Max != 0 && mi.CardValue != 255) {
				t.Fatalf("%s mask: %v %+v", name, err, mi)
			}
			_, labels := Render(sampleSeed(9, split.name, i), 64, 48)
			if !bytes.Equal(m.Pix, labels) {
				t.Fatalf("%s: mask file differs from the rendered labels", name)
			}
		}
	}
	// Workers do not change the output.
	again := t.TempDir()
	opts.Out, opts.Workers = again, 1
	if err := Generate(context.Background(), opts, nil); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"train/image/" + Name("train", 2) + ".jpg", "test/mask/" + Name("test", 1) + ".png"} {
		a, _ := os.ReadFile(filepath.Join(dir, rel))
		b, _ := os.ReadFile(filepath.Join(again, rel))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between 3 workers and 1", rel)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.tmp")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestGenerateRejectsBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no folder":  {Train: 1},
		"no samples": {Out: t.TempDir()},
		"negative":   {Out: t.TempDir(), Train: -1, Test: 2},
		"tiny":       {Out: t.TempDir(), Train: 1, Height: 8, Width: 8},
	} {
		if err := Generate(context.Background(), o, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Generate(ctx, Options{Out: t.TempDir(), Train: 50, Height: 48, Width: 64}, nil); err == nil {
		t.Error("cancelled context: no error")
	}
}

func BenchmarkRender(b *testing.B) {
	for _, size := range []struct{ w, h int }{{320, 240}, {640, 480}} {
		b.Run(image.Rect(0, 0, size.w, size.h).Size().String(), func(b *testing.B) {
			i := uint64(0)
			for b.Loop() {
				Render(sampleSeed(1, "train", int(i)), size.w, size.h)
				i++
			}
		})
	}
}
