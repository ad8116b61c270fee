package export

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/metrics"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Limits of the verification.
const (
	// FP32MaxAbsDiff is how far the FP32 export's logits may be from the checkpoint's: folding
	// batch norm only reorders float32 rounding.
	FP32MaxAbsDiff = 1e-4
	// RGBMaxProbDiff is how far an RGB variant's card probability may be from its network's fed
	// the same pixels through Go preprocessing (float32 rounding of the normalisation).
	RGBMaxProbDiff = 1e-4
	// DefaultMaxInt8IoUDrop is the largest INT8 card-IoU drop on the test split accepted.
	DefaultMaxInt8IoUDrop = 0.01
)

// sample is one verification input: the network's normalised input and, when it came from an
// image file, the image's own pixels (for the RGB variants).
type sample struct {
	name   string
	input  []float32 // [3,h,w] normalised
	atSize []uint8   // the image resized to the network's size, HWC
	orig   []uint8   // the image as decoded, HWC
	ow, oh int
}

func imageSamples(imgs []loadedImage, h, w int) []sample {
	out := make([]sample, len(imgs))
	for i, im := range imgs {
		x := make([]float32, 3*h*w)
		normalize(x, im.Resized)
		out[i] = sample{name: im.Path, input: x, atSize: hwc(im.Resized), orig: hwc(im.Orig), ow: im.Orig.Rect.Dx(), oh: im.Orig.Rect.Dy()}
	}
	return out
}

// session opens model bytes on ORT.
func session(name string, b []byte, opts runtime.SessionOptions) (*runtime.Session, error) {
	s, err := runtime.NewSession(name, b, opts)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", name, err)
	}
	return s, nil
}

// runLogits runs a network (image → logits) on each sample at batch 1. The input and output
// may be float32 or float16.
func runLogits(s *runtime.Session, samples []sample, h, w int) ([][]float32, error) {
	in := s.Inputs()[0]
	out := make([][]float32, len(samples))
	for i, smp := range samples {
		var t *runtime.Tensor
		var err error
		shape := []int64{1, 3, int64(h), int64(w)}
		if in.DType == runtime.Float16 {
			t, err = runtime.New(shape, runtime.ToFloat16(smp.input))
		} else {
			t, err = runtime.New(shape, smp.input)
		}
		if err != nil {
			return nil, err
		}
		res, err := s.Run(map[string]*runtime.Tensor{in.Name: t})
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", smp.name, err)
		}
		lt, ok := res[step.OutLogits]
		if !ok {
			return nil, fmt.Errorf("the model has no %s output", step.OutLogits)
		}
		out[i] = lt.Float32s()
		for _, v := range out[i] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("sample %s: the model returned %v", smp.name, v)
			}
		}
	}
	return out, nil
}

// rgbResult is an RGB variant's output for one image.
type rgbResult struct {
	mask []uint8
	prob []float32
}

// runRGB feeds uint8 HWC pixels (w×h) to an RGB variant.
func runRGB(s *runtime.Session, pix []uint8, h, w int) (rgbResult, error) {
	in := s.Inputs()[0]
	shape := []int64{int64(h), int64(w), 3}
	if len(in.Shape) == 4 {
		shape = append([]int64{1}, shape...)
	}
	t, err := runtime.New(shape, pix)
	if err != nil {
		return rgbResult{}, err
	}
	res, err := s.Run(map[string]*runtime.Tensor{in.Name: t})
	if err != nil {
		return rgbResult{}, err
	}
	m, p := res[OutputMask], res[OutputProbability]
	if m == nil || p == nil {
		return rgbResult{}, fmt.Errorf("the model lacks the %s and %s outputs", OutputMask, OutputProbability)
	}
	r := rgbResult{mask: runtime.Data[uint8](m), prob: runtime.Data[float32](p)}
	if len(r.mask) != h*w || len(r.prob) != h*w {
		return r, fmt.Errorf("outputs of %d and %d values for a %dx%d image", len(r.mask), len(r.prob), w, h)
	}
	return r, nil
}

// consistent checks that the mask is the probability thresholded at 0.5 and that both are
// in range: the two outputs come from one margin.
func (r rgbResult) consistent() error {
	for k, m := range r.mask {
		p := r.prob[k]
		switch {
		case !(p >= 0 && p <= 1):
			return fmt.Errorf("card probability %g at pixel %d", p, k)
		case m != 0 && m != 255:
			return fmt.Errorf("mask value %d at pixel %d, want 0 or 255", m, k)
		case m == 255 && p < 0.5, m == 0 && p > 0.5:
			return fmt.Errorf("mask %d where the card probability is %g (pixel %d)", m, p, k)
		}
	}
	return nil
}

// margin is the card-minus-background logit of one image's logits [2,h,w].
func margin(logits []float32) []float32 {
	n := len(logits) / 2
	out := make([]float32, n)
	for i := range out {
		out[i] = logits[n+i] - logits[i]
	}
	return out
}

// labels turns margins into class labels (card where the card logit is larger, as ArgMax
// with ties to background).
func labels(m []float32) []uint8 {
	out := make([]uint8, len(m))
	for i, v := range m {
		if v > 0 {
			out[i] = 1
		}
	}
	return out
}

func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

// resizeBilinear resizes a plane (h×w) to oh×ow with PyTorch's align_corners=False
// interpolation, through graphs/model's interpolation matrices (the same as the network's).
func resizeBilinear(src []float32, h, w, oh, ow int) []float32 {
	if h == oh && w == ow {
		return src
	}
	my := model.BilinearMatrix(int64(oh), int64(h)) // [oh, h]
	mx := model.BilinearMatrix(int64(ow), int64(w)) // [ow, w]
	tmp := make([]float32, oh*w)
	for y := 0; y < oh; y++ {
		for k := 0; k < h; k++ {
			c := my[y*h+k]
			if c == 0 {
				continue
			}
			row := src[k*w : (k+1)*w]
			out := tmp[y*w : (y+1)*w]
			for x := range row {
				out[x] += c * row[x]
			}
		}
	}
	dst := make([]float32, oh*ow)
	for y := 0; y < oh; y++ {
		row := tmp[y*w : (y+1)*w]
		for x := 0; x < ow; x++ {
			var s float32
			for k := 0; k < w; k++ {
				if c := mx[x*w+k]; c != 0 {
					s += c * row[k]
				}
			}
			dst[y*ow+x] = s
		}
	}
	return dst
}

// maskScores compares label planes with reference planes: pooled card IoU and the fraction of
// equal pixels.
func maskScores(got, ref [][]uint8) (iou, agreement float64, err error) {
	c := metrics.NewConfusion(2)
	for i := range got {
		if err := c.Add(ref[i], got[i]); err != nil {
			return 0, 0, err
		}
	}
	return c.IoU(metrics.Card), c.PixelAccuracy(), nil
}

func maxAbsDiff(a, b []float32) (diff, scale float64) {
	for i := range a {
		diff = math.Max(diff, math.Abs(float64(a[i])-float64(b[i])))
		scale = math.Max(scale, math.Abs(float64(b[i])))
	}
	return diff, scale
}

// measureLatency times s on one input: warm-up runs, then runs timed one by one.
func measureLatency(s *runtime.Session, feeds map[string]*runtime.Tensor, warmup, runs int) (*Latency, error) {
	for i := 0; i < warmup; i++ {
		if _, err := s.Run(feeds); err != nil {
			return nil, err
		}
	}
	ms := make([]float64, runs)
	for i := range ms {
		t0 := time.Now()
		if _, err := s.Run(feeds); err != nil {
			return nil, err
		}
		ms[i] = float64(time.Since(t0).Microseconds()) / 1000
	}
	sort.Float64s(ms)
	var shape string
	for _, t := range feeds {
		shape = fmt.Sprintf("%v %v", t.DType, t.Shape)
	}
	return &Latency{MedianMS: ms[len(ms)/2], P90MS: ms[(len(ms)*9)/10], MinMS: ms[0], Runs: runs, Input: shape}, nil
}
