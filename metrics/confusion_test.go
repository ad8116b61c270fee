package metrics

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

const tol = 1e-12

func near(a, b float64) bool { return math.Abs(a-b) <= tol }

// want holds hand-computed scores of one class.
type want struct{ iou, dice, precision, recall, f1 float64 }

func checkClass(t *testing.T, c *Confusion, k int, w want) {
	t.Helper()
	got := c.Scores(k)
	for _, f := range []struct {
		name      string
		got, want float64
	}{
		{"iou", got.IoU, w.iou},
		{"dice", got.Dice, w.dice},
		{"precision", got.Precision, w.precision},
		{"recall", got.Recall, w.recall},
		{"f1", got.F1, w.f1},
	} {
		if !near(f.got, f.want) {
			t.Errorf("class %d %s = %v, want %v", k, f.name, f.got, f.want)
		}
	}
}

func TestBinaryHandComputed(t *testing.T) {
	tests := []struct {
		name        string
		truth, pred []uint8
		matrix      [2][2]int64 // rows truth, columns prediction
		card, bg    want
		accuracy    float64
		meanIoU     float64
	}{
		{
			name:   "typical",
			truth:  []uint8{1, 1, 1, 1, 0, 0, 0, 0, 0, 0},
			pred:   []uint8{1, 1, 1, 0, 1, 1, 0, 0, 0, 0},
			matrix: [2][2]int64{{4, 2}, {1, 3}},
			// card: TP 3, FP 2, FN 1
			card: want{iou: 3.0 / 6, dice: 6.0 / 9, precision: 3.0 / 5, recall: 3.0 / 4, f1: 6.0 / 9},
			// background: TP 4, FP 1, FN 2
			bg:       want{iou: 4.0 / 7, dice: 8.0 / 11, precision: 4.0 / 5, recall: 4.0 / 6, f1: 8.0 / 11},
			accuracy: 7.0 / 10,
			meanIoU:  (3.0/6 + 4.0/7) / 2,
		},
		{
			name:   "empty truth, empty prediction",
			truth:  []uint8{0, 0, 0, 0},
			pred:   []uint8{0, 0, 0, 0},
			matrix: [2][2]int64{{4, 0}, {0, 0}},
			// card: 0/0 everywhere, perfect by convention
			card:     want{1, 1, 1, 1, 1},
			bg:       want{1, 1, 1, 1, 1},
			accuracy: 1,
			meanIoU:  1,
		},
		{
			name:   "empty truth, card predicted",
			truth:  []uint8{0, 0, 0, 0},
			pred:   []uint8{0, 1, 0, 0},
			matrix: [2][2]int64{{3, 1}, {0, 0}},
			// card: TP 0, FP 1, FN 0; recall 0/0
			card: want{iou: 0, dice: 0, precision: 0, recall: 1, f1: 0},
			// background: TP 3, FP 0, FN 1
			bg:       want{iou: 3.0 / 4, dice: 6.0 / 7, precision: 1, recall: 3.0 / 4, f1: 6.0 / 7},
			accuracy: 3.0 / 4,
			meanIoU:  3.0 / 8,
		},
		{
			name:   "all card, all card predicted",
			truth:  []uint8{1, 1, 1, 1},
			pred:   []uint8{1, 1, 1, 1},
			matrix: [2][2]int64{{0, 0}, {0, 4}},
			card:   want{1, 1, 1, 1, 1},
			// background absent from truth and prediction: perfect by convention
			bg:       want{1, 1, 1, 1, 1},
			accuracy: 1,
			meanIoU:  1,
		},
		{
			name:   "all card, nothing predicted",
			truth:  []uint8{1, 1, 1, 1},
			pred:   []uint8{0, 0, 0, 0},
			matrix: [2][2]int64{{0, 0}, {4, 0}},
			// card: TP 0, FP 0, FN 4; precision 0/0
			card: want{iou: 0, dice: 0, precision: 1, recall: 0, f1: 0},
			// background: TP 0, FP 4, FN 0; recall 0/0
			bg:       want{iou: 0, dice: 0, precision: 0, recall: 1, f1: 0},
			accuracy: 0,
			meanIoU:  0,
		},
		{
			name:     "all wrong",
			truth:    []uint8{0, 0, 0, 1, 1},
			pred:     []uint8{1, 1, 1, 0, 0},
			matrix:   [2][2]int64{{0, 3}, {2, 0}},
			card:     want{0, 0, 0, 0, 0},
			bg:       want{0, 0, 0, 0, 0},
			accuracy: 0,
			meanIoU:  0,
		},
		{
			name:     "no pixels",
			matrix:   [2][2]int64{{0, 0}, {0, 0}},
			card:     want{1, 1, 1, 1, 1},
			bg:       want{1, 1, 1, 1, 1},
			accuracy: 1,
			meanIoU:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfusion(2)
			if err := c.Add(tc.truth, tc.pred); err != nil {
				t.Fatal(err)
			}
			for tr := 0; tr < 2; tr++ {
				for p := 0; p < 2; p++ {
					if got := c.At(tr, p); got != tc.matrix[tr][p] {
						t.Errorf("At(%d, %d) = %d, want %d", tr, p, got, tc.matrix[tr][p])
					}
				}
			}
			if got := c.Total(); got != int64(len(tc.truth)) {
				t.Errorf("Total = %d, want %d", got, len(tc.truth))
			}
			checkClass(t, c, Card, tc.card)
			checkClass(t, c, Background, tc.bg)
			if got := c.PixelAccuracy(); !near(got, tc.accuracy) {
				t.Errorf("PixelAccuracy = %v, want %v", got, tc.accuracy)
			}
			if got := c.MeanIoU(); !near(got, tc.meanIoU) {
				t.Errorf("MeanIoU = %v, want %v", got, tc.meanIoU)
			}
			// The same matrix given as counts scores the same.
			d := NewConfusion(2)
			if err := d.AddCounts([]int64{tc.matrix[0][0], tc.matrix[0][1], tc.matrix[1][0], tc.matrix[1][1]}); err != nil {
				t.Fatal(err)
			}
			if d.Scores(Card) != c.Scores(Card) || d.Scores(Background) != c.Scores(Background) {
				t.Errorf("AddCounts scores %+v %+v, Add scores %+v %+v",
					d.Scores(Card), d.Scores(Background), c.Scores(Card), c.Scores(Background))
			}
		})
	}
}

func TestThreeClassHandComputed(t *testing.T) {
	c := NewConfusion(3)
	if err := c.Add([]uint8{0, 0, 0, 1, 1, 2}, []uint8{0, 0, 1, 1, 2, 2}); err != nil {
		t.Fatal(err)
	}
	wantCounts := [][]int64{{2, 1, 0}, {0, 1, 1}, {0, 0, 1}}
	got := c.Counts()
	for i := range wantCounts {
		for j := range wantCounts[i] {
			if got[i][j] != wantCounts[i][j] {
				t.Fatalf("Counts = %v, want %v", got, wantCounts)
			}
		}
	}
	checkClass(t, c, 0, want{iou: 2.0 / 3, dice: 4.0 / 5, precision: 1, recall: 2.0 / 3, f1: 4.0 / 5})
	checkClass(t, c, 1, want{iou: 1.0 / 3, dice: 1.0 / 2, precision: 1.0 / 2, recall: 1.0 / 2, f1: 1.0 / 2})
	checkClass(t, c, 2, want{iou: 1.0 / 2, dice: 2.0 / 3, precision: 1.0 / 2, recall: 1, f1: 2.0 / 3})
	for _, k := range []struct {
		class          int
		tp, fp, fn, tn int64
	}{{0, 2, 0, 1, 3}, {1, 1, 1, 1, 3}, {2, 1, 1, 0, 4}} {
		if c.TP(k.class) != k.tp || c.FP(k.class) != k.fp || c.FN(k.class) != k.fn || c.TN(k.class) != k.tn {
			t.Errorf("class %d: TP %d FP %d FN %d TN %d, want %d %d %d %d", k.class,
				c.TP(k.class), c.FP(k.class), c.FN(k.class), c.TN(k.class), k.tp, k.fp, k.fn, k.tn)
		}
	}
	if got := c.PixelAccuracy(); !near(got, 4.0/6) {
		t.Errorf("PixelAccuracy = %v, want %v", got, 4.0/6)
	}
	if got := c.MeanIoU(); !near(got, 0.5) {
		t.Errorf("MeanIoU = %v, want 0.5", got)
	}
}

func TestNormalized(t *testing.T) {
	tests := []struct {
		name   string
		counts []int64
		k      int
		want   [][]float64
	}{
		{"three classes", []int64{2, 1, 0, 0, 1, 1, 0, 0, 1}, 3,
			[][]float64{{2.0 / 3, 1.0 / 3, 0}, {0, 0.5, 0.5}, {0, 0, 1}}},
		{"class absent from truth has a zero row", []int64{3, 1, 0, 0}, 2,
			[][]float64{{0.75, 0.25}, {0, 0}}},
		{"empty", []int64{0, 0, 0, 0}, 2, [][]float64{{0, 0}, {0, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfusion(tc.k)
			if err := c.AddCounts(tc.counts); err != nil {
				t.Fatal(err)
			}
			got := c.Normalized()
			for i := range tc.want {
				for j := range tc.want[i] {
					if !near(got[i][j], tc.want[i][j]) {
						t.Fatalf("Normalized = %v, want %v", got, tc.want)
					}
				}
			}
		})
	}
}

// TestPoolingEqualsMerging checks that counting all pixels of all images at once, merging
// per-image matrices, adding their counts and the PerImage accumulator all agree.
func TestPoolingEqualsMerging(t *testing.T) {
	const k, images = 4, 7
	rng := rand.New(rand.NewPCG(1, 2))
	var allTruth, allPred []uint8
	merged := NewConfusion(k)
	counted := NewConfusion(k)
	acc := NewPerImage(k, 1)
	for i := 0; i < images; i++ {
		n := 50 + rng.IntN(200)
		truth, pred := make([]uint8, n), make([]uint8, n)
		for j := range truth {
			truth[j] = uint8(rng.IntN(k))
			if rng.IntN(3) == 0 {
				pred[j] = uint8(rng.IntN(k))
			} else {
				pred[j] = truth[j]
			}
		}
		allTruth = append(allTruth, truth...)
		allPred = append(allPred, pred...)
		one := NewConfusion(k)
		if err := one.Add(truth, pred); err != nil {
			t.Fatal(err)
		}
		if err := merged.Merge(one); err != nil {
			t.Fatal(err)
		}
		var flat []int64
		for _, row := range one.Counts() {
			flat = append(flat, row...)
		}
		if err := counted.AddCounts(flat); err != nil {
			t.Fatal(err)
		}
		if err := acc.Add("", truth, pred); err != nil {
			t.Fatal(err)
		}
	}
	pooled := NewConfusion(k)
	if err := pooled.Add(allTruth, allPred); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Confusion{"Merge": merged, "AddCounts": counted, "PerImage": acc.Pooled()} {
		for tr := 0; tr < k; tr++ {
			for p := 0; p < k; p++ {
				if c.At(tr, p) != pooled.At(tr, p) {
					t.Fatalf("%s: At(%d, %d) = %d, pooled %d", name, tr, p, c.At(tr, p), pooled.At(tr, p))
				}
			}
		}
		if c.MeanIoU() != pooled.MeanIoU() {
			t.Errorf("%s: MeanIoU %v, pooled %v", name, c.MeanIoU(), pooled.MeanIoU())
		}
	}
	if pooled.Total() != int64(len(allTruth)) {
		t.Errorf("Total = %d, want %d", pooled.Total(), len(allTruth))
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		do      func(c *Confusion) error
		wantErr string
	}{
		{"length mismatch", func(c *Confusion) error { return c.Add([]uint8{0, 1}, []uint8{0}) }, "truth has 2 pixels, prediction 1"},
		{"truth label too large", func(c *Confusion) error { return c.Add([]uint8{0, 255}, []uint8{0, 1}) }, "pixel 1: truth 255"},
		{"prediction label too large", func(c *Confusion) error { return c.Add([]uint8{1, 1, 0}, []uint8{1, 0, 2}) }, "pixel 2: truth 0, prediction 2"},
		{"counts of wrong length", func(c *Confusion) error { return c.AddCounts([]int64{1, 2, 3}) }, "want 4"},
		{"negative count", func(c *Confusion) error { return c.AddCounts([]int64{1, 2, -3, 4}) }, "count [1][0] = -3 is negative"},
		{"merge other class count", func(c *Confusion) error { return c.Merge(NewConfusion(3)) }, "merge a 3-class"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfusion(2)
			err := tc.do(c)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if c.Total() != 0 {
				t.Errorf("failed call counted %d pixels", c.Total())
			}
		})
	}
}

func TestProgrammerErrorsPanic(t *testing.T) {
	for name, f := range map[string]func(){
		"NewConfusion(0)":   func() { NewConfusion(0) },
		"NewPerImage(2, 2)": func() { NewPerImage(2, 2) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

func TestResetAndClone(t *testing.T) {
	c := NewConfusion(2)
	if err := c.Add([]uint8{0, 1, 1}, []uint8{0, 1, 0}); err != nil {
		t.Fatal(err)
	}
	d := c.Clone()
	c.Reset()
	if c.Total() != 0 {
		t.Errorf("after Reset Total = %d", c.Total())
	}
	if d.Total() != 3 || d.At(1, 0) != 1 {
		t.Errorf("clone changed by Reset: %v", d.Counts())
	}
}
