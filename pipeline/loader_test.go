package pipeline

import (
	"context"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// loaderDataset writes n PNG pairs of w×h: image i is uniform gray level 10·i+5 (so a batch
// shows which sample it holds), its mask a card rectangle whose width depends on i.
func loaderDataset(t testing.TB, n, w, h int) []Sample {
	dir := t.TempDir()
	var samples []Sample
	for i := 0; i < n; i++ {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		m := image.NewGray(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := uint8(10*i + 5)
				img.SetRGBA(x, y, color.RGBA{v, v, v, 255})
				if x >= 2 && x < 2+(i%(w-2))+1 && y >= h/4 && y < 3*h/4 {
					m.SetGray(x, y, color.Gray{255})
				}
			}
		}
		name := string(rune('a'+i/26)) + string(rune('a'+i%26))
		writeFile(t, dir, "train/image/"+name+".png", pngBytes(t, img))
		writeFile(t, dir, "train/mask/"+name+".png", pngBytes(t, m))
		samples = append(samples, Sample{Split: "train", Name: name,
			Image: dir + "/train/image/" + name + ".png", Mask: dir + "/train/mask/" + name + ".png"})
	}
	return samples
}

// collect runs one epoch and returns copies of its batches.
func collect(t *testing.T, l *Loader, epoch int) []Batch {
	t.Helper()
	e := l.Epoch(context.Background(), epoch)
	defer e.Close()
	var out []Batch
	for e.Next() {
		b := e.Batch()
		out = append(out, Batch{Index: b.Index, Size: b.Size, Height: b.Height, Width: b.Width,
			Images: slices.Clone(b.Images), Targets: slices.Clone(b.Targets), Samples: slices.Clone(b.Samples)})
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoaderBatchesWithoutAugmentation(t *testing.T) {
	samples := loaderDataset(t, 7, 12, 8)
	l, err := NewLoader(samples, LoaderConfig{Height: 8, Width: 12, BatchSize: 3, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	batches := collect(t, l, 0)
	if len(batches) != 3 || batches[2].Size != 1 || l.Batches() != 3 {
		t.Fatalf("%d batches, last of %d", len(batches), batches[len(batches)-1].Size)
	}
	// DESIGN.md's contract, written out rather than read from ImageNet, so the test checks it.
	mean := [3]float64{0.485, 0.456, 0.406}
	std := [3]float64{0.229, 0.224, 0.225}
	if ImageNet.Scale != 1.0/255 {
		t.Fatalf("the loader scales by 1/255, ImageNet.Scale is %v", ImageNet.Scale)
	}
	const hw = 8 * 12
	for bi, b := range batches {
		if len(b.Images) != b.Size*3*hw || len(b.Targets) != b.Size*hw {
			t.Fatalf("batch %d: %d image values, %d targets", bi, len(b.Images), len(b.Targets))
		}
		for s := 0; s < b.Size; s++ {
			i := bi*3 + s // no shuffle: samples in order
			if b.Samples[s].Name != samples[i].Name {
				t.Fatalf("batch %d slot %d holds %s, want %s", bi, s, b.Samples[s].Name, samples[i].Name)
			}
			v := float64(10*i+5) / 255
			for c := 0; c < 3; c++ {
				got := b.Images[s*3*hw+c*hw+5]
				if want := (v - mean[c]) / std[c]; math.Abs(float64(got)-want) > 1e-5 {
					t.Fatalf("sample %d channel %d = %v, want %v", i, c, got, want)
				}
			}
			// Same size, no augmentation: targets are the mask exactly.
			for p := 0; p < hw; p++ {
				x, y := p%12, p/12
				want := int64(0)
				if x >= 2 && x < 2+(i%10)+1 && y >= 2 && y < 6 {
					want = 1
				}
				if b.Targets[s*hw+p] != want {
					t.Fatalf("sample %d target (%d,%d) = %d, want %d", i, x, y, b.Targets[s*hw+p], want)
				}
			}
		}
	}
	l2, _ := NewLoader(samples, LoaderConfig{Height: 8, Width: 12, BatchSize: 3, DropLast: true})
	if got := collect(t, l2, 0); len(got) != 2 || l2.Batches() != 2 {
		t.Fatalf("drop last: %d batches", len(got))
	}
}

func TestLoaderDeterministicPerEpochSeed(t *testing.T) {
	samples := loaderDataset(t, 10, 24, 16)
	cfg := augment.Defaults().WithProbability(0.7)
	newLoader := func(workers int, seed uint64) *Loader {
		l, err := NewLoader(samples, LoaderConfig{Height: 12, Width: 20, BatchSize: 4, Workers: workers,
			Shuffle: true, Augment: &cfg, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := collect(t, newLoader(1, 42), 3)
	b := collect(t, newLoader(4, 42), 3) // more workers, same batches
	if len(a) != len(b) {
		t.Fatalf("%d vs %d batches", len(a), len(b))
	}
	for i := range a {
		if !slices.Equal(a[i].Images, b[i].Images) || !slices.Equal(a[i].Targets, b[i].Targets) ||
			!slices.Equal(a[i].Samples, b[i].Samples) {
			t.Fatalf("batch %d differs between 1 and 4 workers", i)
		}
	}
	names := func(bs []Batch) []string {
		var out []string
		for _, b := range bs {
			for _, s := range b.Samples {
				out = append(out, s.Name)
			}
		}
		return out
	}
	order3 := names(a)
	order4 := names(collect(t, newLoader(2, 42), 4))
	if slices.Equal(order3, order4) {
		t.Fatal("epochs 3 and 4 have the same order")
	}
	if slices.Equal(order3, names(collect(t, newLoader(2, 43), 3))) {
		t.Fatal("seeds 42 and 43 give the same order")
	}
	for _, order := range [][]string{order3, order4} {
		sorted := slices.Sorted(slices.Values(order))
		want := make([]string, len(samples))
		for i, s := range samples {
			want[i] = s.Name
		}
		if !slices.Equal(sorted, want) {
			t.Fatalf("epoch order %v is not a permutation of the samples", order)
		}
	}
	for _, bt := range a {
		for _, v := range bt.Targets {
			if v != 0 && v != 1 {
				t.Fatalf("target %d", v)
			}
		}
	}
}

// settle waits for the goroutine count to drop to at most n.
func settle(n int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoaderShutdown(t *testing.T) {
	samples := loaderDataset(t, 12, 24, 16)
	cfg := augment.Defaults()
	l, err := NewLoader(samples, LoaderConfig{Height: 16, Width: 24, BatchSize: 2, Workers: 3, Prefetch: 1, Augment: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	// Each subtest runs in its own goroutine, so each counts its own baseline.
	t.Run("close mid-epoch", func(t *testing.T) {
		base := runtime.NumGoroutine()
		e := l.Epoch(context.Background(), 0)
		if !e.Next() {
			t.Fatal(e.Err())
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if err := e.Close(); err != nil { // twice is fine
			t.Fatal(err)
		}
		if e.Next() {
			t.Fatal("Next after Close returned a batch")
		}
		if got := settle(base); got > base {
			t.Fatalf("%d goroutines after Close, %d before", got, base)
		}
	})
	t.Run("full epoch", func(t *testing.T) {
		base := runtime.NumGoroutine()
		e := l.Epoch(context.Background(), 1)
		n := 0
		for e.Next() {
			n++
		}
		if err := e.Err(); err != nil || n != 6 {
			t.Fatalf("%d batches, err %v", n, err)
		}
		e.Close()
		if got := settle(base); got > base {
			t.Fatalf("%d goroutines after the epoch, %d before", got, base)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		base := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		e := l.Epoch(ctx, 2)
		e.Next()
		cancel()
		for e.Next() {
		}
		if err := e.Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Err() = %v, want context.Canceled", err)
		}
		e.Close()
		if got := settle(base); got > base {
			t.Fatalf("%d goroutines after cancel, %d before", got, base)
		}
	})
	t.Run("failing sample", func(t *testing.T) {
		base := runtime.NumGoroutine()
		broken := slices.Clone(samples)
		if err := os.WriteFile(broken[5].Image, []byte("gone bad"), 0o644); err != nil {
			t.Fatal(err)
		}
		lb, _ := NewLoader(broken, LoaderConfig{Height: 16, Width: 24, BatchSize: 2, Workers: 3})
		e := lb.Epoch(context.Background(), 0)
		n := 0
		for e.Next() {
			n++
		}
		err := e.Err()
		if err == nil || !strings.Contains(err.Error(), broken[5].Image) || !errors.Is(err, augment.ErrUnsupportedFormat) {
			t.Fatalf("Err() = %v, want the file named", err)
		}
		if n > 2 {
			t.Fatalf("%d batches delivered past the failing sample's batch", n)
		}
		if cerr := e.Close(); cerr == nil {
			t.Fatal("Close lost the error")
		}
		if got := settle(base); got > base {
			t.Fatalf("%d goroutines after a failure, %d before", got, base)
		}
	})
}

func TestNewLoaderRejectsBadConfig(t *testing.T) {
	s := []Sample{{Name: "x"}}
	bad := augment.Defaults()
	bad.RotateProb = 2
	for name, c := range map[string]LoaderConfig{
		"no size":         {BatchSize: 1},
		"no batch":        {Height: 4, Width: 4},
		"bad augment":     {Height: 4, Width: 4, BatchSize: 1, Augment: &bad},
		"negative worker": {Height: 4, Width: 4, BatchSize: 1, Workers: -1},
	} {
		if _, err := NewLoader(s, c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewLoader(nil, LoaderConfig{Height: 4, Width: 4, BatchSize: 1}); err == nil {
		t.Error("no samples: accepted")
	}
}
