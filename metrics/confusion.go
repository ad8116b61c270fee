package metrics

import "fmt"

// Class indices of the card segmentation task.
const (
	Background = 0
	Card       = 1
)

// ClassNames names the classes of the card task, indexed by class.
var ClassNames = [...]string{Background: "background", Card: "card"}

// ZeroDivision is the value of every ratio whose denominator is zero (0/0): nothing was
// there to find and nothing was claimed, which counts as perfect.
const ZeroDivision = 1.0

// Confusion counts pixels by (truth, prediction) class pair for K classes.
// The zero value is unusable; make one with NewConfusion.
type Confusion struct {
	k      int
	counts []int64 // row-major: counts[truth*k+pred]
}

// NewConfusion returns an empty K-class confusion matrix. It panics when k < 1, which is a
// programmer error.
func NewConfusion(k int) *Confusion {
	if k < 1 {
		panic(fmt.Sprintf("metrics: NewConfusion(%d): need at least one class", k))
	}
	return &Confusion{k: k, counts: make([]int64, k*k)}
}

// Classes returns K.
func (c *Confusion) Classes() int { return c.k }

// At returns the number of pixels of true class truth predicted as class pred.
func (c *Confusion) At(truth, pred int) int64 { return c.counts[truth*c.k+pred] }

// Counts returns a copy of the matrix, rows = truth, columns = prediction.
func (c *Confusion) Counts() [][]int64 {
	out := make([][]int64, c.k)
	for t := range out {
		out[t] = append([]int64(nil), c.counts[t*c.k:(t+1)*c.k]...)
	}
	return out
}

// Total returns the number of pixels counted.
func (c *Confusion) Total() int64 {
	var n int64
	for _, v := range c.counts {
		n += v
	}
	return n
}

// Reset zeroes every count.
func (c *Confusion) Reset() { clear(c.counts) }

// Clone returns an independent copy.
func (c *Confusion) Clone() *Confusion {
	return &Confusion{k: c.k, counts: append([]int64(nil), c.counts...)}
}

// Add counts one mask pair pixel by pixel. Both hold class indices (0..K-1), not 0/255 mask
// values. On error nothing is counted.
func (c *Confusion) Add(truth, pred []uint8) error {
	if len(truth) != len(pred) {
		return fmt.Errorf("metrics: truth has %d pixels, prediction %d", len(truth), len(pred))
	}
	k := c.k
	// Count into a scratch matrix first so that a bad label leaves c untouched.
	local := make([]int64, k*k)
	for i, t := range truth {
		p := pred[i]
		if int(t) >= k || int(p) >= k {
			return fmt.Errorf("metrics: pixel %d: truth %d, prediction %d: labels must be below %d", i, t, p, k)
		}
		local[int(t)*k+int(p)]++
	}
	for i, v := range local {
		c.counts[i] += v
	}
	return nil
}

// AddCounts adds a K×K matrix given row-major (truth-major) as K*K counts, the layout of the
// eval step graph's confusion output.
func (c *Confusion) AddCounts(counts []int64) error {
	if len(counts) != c.k*c.k {
		return fmt.Errorf("metrics: %d counts for a %d-class confusion matrix, want %d", len(counts), c.k, c.k*c.k)
	}
	for i, v := range counts {
		if v < 0 {
			return fmt.Errorf("metrics: count [%d][%d] = %d is negative", i/c.k, i%c.k, v)
		}
	}
	for i, v := range counts {
		c.counts[i] += v
	}
	return nil
}

// Merge adds every count of o to c.
func (c *Confusion) Merge(o *Confusion) error {
	if o.k != c.k {
		return fmt.Errorf("metrics: merge a %d-class confusion matrix into a %d-class one", o.k, c.k)
	}
	for i, v := range o.counts {
		c.counts[i] += v
	}
	return nil
}

// Normalized returns the matrix with each row divided by its sum, so each row is the
// distribution of predictions for that true class and sums to 1. A class with no true pixels
// has a row of zeros (scikit-learn's convention).
func (c *Confusion) Normalized() [][]float64 {
	out := make([][]float64, c.k)
	for t := range out {
		row := c.counts[t*c.k : (t+1)*c.k]
		var sum int64
		for _, v := range row {
			sum += v
		}
		out[t] = make([]float64, c.k)
		if sum == 0 {
			continue
		}
		for p, v := range row {
			out[t][p] = float64(v) / float64(sum)
		}
	}
	return out
}

// TP returns the pixels of class k predicted as k.
func (c *Confusion) TP(k int) int64 { return c.At(k, k) }

// FP returns the pixels predicted as class k whose truth is another class.
func (c *Confusion) FP(k int) int64 {
	var n int64
	for t := 0; t < c.k; t++ {
		if t != k {
			n += c.At(t, k)
		}
	}
	return n
}

// FN returns the pixels of class k predicted as another class.
func (c *Confusion) FN(k int) int64 {
	var n int64
	for p := 0; p < c.k; p++ {
		if p != k {
			n += c.At(k, p)
		}
	}
	return n
}

// TN returns the pixels neither of class k nor predicted as k.
func (c *Confusion) TN(k int) int64 { return c.Total() - c.TP(k) - c.FP(k) - c.FN(k) }

// Precision returns TP/(TP+FP) for class k.
func (c *Confusion) Precision(k int) float64 { return ratio(c.TP(k), c.TP(k)+c.FP(k)) }

// Recall returns TP/(TP+FN) for class k.
func (c *Confusion) Recall(k int) float64 { return ratio(c.TP(k), c.TP(k)+c.FN(k)) }

// IoU returns the Jaccard index TP/(TP+FP+FN) for class k.
func (c *Confusion) IoU(k int) float64 { return ratio(c.TP(k), c.TP(k)+c.FP(k)+c.FN(k)) }

// Dice returns 2TP/(2TP+FP+FN) for class k.
func (c *Confusion) Dice(k int) float64 { return ratio(2*c.TP(k), 2*c.TP(k)+c.FP(k)+c.FN(k)) }

// F1 returns the harmonic mean of precision and recall for class k, 2TP/(2TP+FP+FN),
// computed from the counts (as smp does); it always equals Dice.
func (c *Confusion) F1(k int) float64 { return c.Dice(k) }

// PixelAccuracy returns the fraction of pixels whose predicted class is the true class.
func (c *Confusion) PixelAccuracy() float64 {
	var diag int64
	for k := 0; k < c.k; k++ {
		diag += c.At(k, k)
	}
	return ratio(diag, c.Total())
}

// MeanIoU returns the unweighted mean of IoU over all K classes; a class absent from both
// truth and prediction contributes ZeroDivision.
func (c *Confusion) MeanIoU() float64 {
	var sum float64
	for k := 0; k < c.k; k++ {
		sum += c.IoU(k)
	}
	return sum / float64(c.k)
}

// ClassScores holds the scores of one class; its JSON field names are those of eval --json.
type ClassScores struct {
	IoU       float64 `json:"iou"`
	Dice      float64 `json:"dice"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

// Scores returns every score of class k.
func (c *Confusion) Scores(k int) ClassScores {
	return ClassScores{
		IoU:       c.IoU(k),
		Dice:      c.Dice(k),
		Precision: c.Precision(k),
		Recall:    c.Recall(k),
		F1:        c.F1(k),
	}
}

func ratio(num, den int64) float64 {
	if den == 0 {
		return ZeroDivision
	}
	return float64(num) / float64(den)
}
