package metrics

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// cardImages builds a PerImage over five 4-pixel images with hand-known card IoUs.
func cardImages(t *testing.T) *PerImage {
	t.Helper()
	p := NewPerImage(2, Card)
	for _, im := range []struct {
		name        string
		truth, pred []uint8
	}{
		{"empty", []uint8{0, 0, 0, 0}, []uint8{0, 0, 0, 0}},   // IoU 1 (0/0), Dice 1
		{"half", []uint8{1, 1, 0, 0}, []uint8{1, 0, 0, 1}},    // TP 1 FP 1 FN 1: IoU 1/3, Dice 1/2
		{"missed", []uint8{1, 1, 1, 0}, []uint8{0, 0, 0, 0}},  // IoU 0, Dice 0
		{"perfect", []uint8{0, 1, 1, 0}, []uint8{0, 1, 1, 0}}, // IoU 1, Dice 1
		{"phantom", []uint8{0, 0, 0, 0}, []uint8{0, 1, 0, 0}}, // IoU 0, Dice 0
	} {
		if err := p.Add(im.name, im.truth, im.pred); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestPerImage(t *testing.T) {
	p := cardImages(t)
	if p.Images() != 5 {
		t.Fatalf("Images = %d, want 5", p.Images())
	}
	wantIoUs := []float64{1, 1.0 / 3, 0, 1, 0}
	if got := p.IoUs(); !reflect.DeepEqual(got, wantIoUs) {
		t.Errorf("IoUs = %v, want %v", got, wantIoUs)
	}
	if got, want := p.MeanIoU(), (1+1.0/3+1)/5; !near(got, want) {
		t.Errorf("MeanIoU = %v, want %v", got, want)
	}
	if got, want := p.MeanDice(), (1+0.5+1)/5; !near(got, want) {
		t.Errorf("MeanDice = %v, want %v", got, want)
	}
	// Pooled card: TP 1+2 = 3, FP 1+1 = 2, FN 1+3 = 4 over 20 pixels.
	if got, want := p.Pooled().IoU(Card), 3.0/9; !near(got, want) {
		t.Errorf("pooled card IoU = %v, want %v", got, want)
	}

	worst := []struct {
		n    int
		want []string
	}{
		{0, nil},
		{1, []string{"missed"}},
		{2, []string{"missed", "phantom"}}, // tie at 0: order of addition
		{3, []string{"missed", "phantom", "half"}},
		{9, []string{"missed", "phantom", "half", "empty", "perfect"}},
		{-1, nil},
	}
	for _, tc := range worst {
		var names []string
		for _, s := range p.Worst(tc.n) {
			if p.Scores()[s.Index].Name != s.Name {
				t.Errorf("Worst(%d): index %d names %q, not %q", tc.n, s.Index, p.Scores()[s.Index].Name, s.Name)
			}
			names = append(names, s.Name)
		}
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("Worst(%d) = %v, want %v", tc.n, names, tc.want)
		}
	}
	if w := p.Worst(1); w[0].Index != 2 || w[0].IoU != 0 {
		t.Errorf("Worst(1) = %+v, want index 2 with IoU 0", w[0])
	}
}

func TestPerImageEmpty(t *testing.T) {
	p := NewPerImage(2, Card)
	if p.MeanIoU() != ZeroDivision || p.MeanDice() != ZeroDivision || len(p.Worst(3)) != 0 {
		t.Errorf("empty accumulator: MeanIoU %v MeanDice %v Worst %v", p.MeanIoU(), p.MeanDice(), p.Worst(3))
	}
}

func TestPerImageAddError(t *testing.T) {
	p := NewPerImage(2, Card)
	err := p.Add("a.png", []uint8{0, 3}, []uint8{0, 1})
	if err == nil || !strings.Contains(err.Error(), `image "a.png"`) {
		t.Fatalf("error %v, want one naming the image", err)
	}
	if p.Images() != 0 || p.Pooled().Total() != 0 {
		t.Errorf("failed Add recorded %d images, %d pixels", p.Images(), p.Pooled().Total())
	}
	if err := p.AddConfusion("b", NewConfusion(3)); err == nil || p.Images() != 0 {
		t.Errorf("AddConfusion of a 3-class matrix: error %v, %d images", err, p.Images())
	}
}

func TestSummaryJSON(t *testing.T) {
	p := cardImages(t)
	s, err := p.Summary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// Pooled over 20 pixels: card TP 3 FP 2 FN 4; background TP 11 FP 4 FN 2.
	want := map[string]any{
		"card": map[string]any{
			"iou": 3.0 / 9, "dice": 6.0 / 12, "precision": 3.0 / 5, "recall": 3.0 / 7, "f1": 6.0 / 12,
		},
		"background": map[string]any{
			"iou": 11.0 / 17, "dice": 22.0 / 28, "precision": 11.0 / 15, "recall": 11.0 / 13, "f1": 22.0 / 28,
		},
		"pixel_accuracy":     14.0 / 20,
		"mean_iou":           (3.0/9 + 11.0/17) / 2,
		"images":             5.0,
		"per_image_iou_mean": (1 + 1.0/3 + 1) / 5,
	}
	compareJSON(t, "", got, want)
}

func compareJSON(t *testing.T, path string, got, want map[string]any) {
	t.Helper()
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %s%s", path, k)
		}
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing key %s%s", path, k)
			continue
		}
		switch w := w.(type) {
		case map[string]any:
			gm, ok := g.(map[string]any)
			if !ok {
				t.Errorf("%s%s = %v, want an object", path, k, g)
				continue
			}
			compareJSON(t, path+k+".", gm, w)
		case float64:
			if gf, ok := g.(float64); !ok || !near(gf, w) {
				t.Errorf("%s%s = %v, want %v", path, k, g, w)
			}
		}
	}
}

func TestSummaryNeedsCardTask(t *testing.T) {
	for _, p := range []*PerImage{NewPerImage(3, Card), NewPerImage(2, Background)} {
		if _, err := p.Summary(); err == nil {
			t.Errorf("Summary of %d classes tracking %d: no error", p.Pooled().Classes(), p.class)
		}
	}
	// An empty two-class summary is NaN-free and encodes.
	s, err := NewPerImage(2, Card).Summary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Fatalf("empty summary does not encode: %v", err)
	}
	if s.Card.IoU != 1 || s.PixelAccuracy != 1 || s.Images != 0 {
		t.Errorf("empty summary = %+v", s)
	}
}

func BenchmarkAdd(b *testing.B) {
	const n = 480 * 640
	truth, pred := make([]uint8, n), make([]uint8, n)
	for i := range truth {
		truth[i] = uint8(i / 7 % 2)
		pred[i] = uint8(i / 5 % 2)
	}
	c := NewConfusion(2)
	b.SetBytes(n)
	for b.Loop() {
		if err := c.Add(truth, pred); err != nil {
			b.Fatal(err)
		}
	}
}
