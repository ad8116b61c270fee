package export

import (
	"context"
	"fmt"
	"math"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Calibration methods.
const (
	CalibMinMax     = "minmax"     // the smallest and largest value seen
	CalibPercentile = "percentile" // the central Percentile % of values (two-sided; one-sided from 0 for non-negative tensors)
)

// histBins is the resolution of the percentile histograms.
const histBins = 4096

// calibrator runs the float model with every tensor to quantise as an extra output.
type calibrator struct {
	sess    *runtime.Session
	tensors []string
	h, w    int
}

func newCalibrator(m *onnxpb.ModelProto, tensors []string, shapes map[string][]int64, h, w int, opts runtime.SessionOptions) (*calibrator, error) {
	c := cloneModel(m)
	have := map[string]bool{}
	for _, o := range c.Graph.Output {
		have[o.GetName()] = true
	}
	for _, t := range tensors {
		if have[t] {
			continue
		}
		s, ok := shapes[t]
		if !ok {
			return nil, fmt.Errorf("int8 calibration: no shape known for %s", t)
		}
		c.Graph.Output = append(c.Graph.Output, valueInfo(t, elemFloat, s))
	}
	b, err := marshalModel(c)
	if err != nil {
		return nil, err
	}
	sess, err := runtime.NewSession("int8 calibration model", b, opts)
	if err != nil {
		return nil, err
	}
	return &calibrator{sess: sess, tensors: tensors, h: h, w: w}, nil
}

func (c *calibrator) Close() error { return c.sess.Close() }

// run feeds one normalised image and hands every tensor's values to visit.
func (c *calibrator) run(img []float32, visit func(i int, v []float32)) error {
	in, err := runtime.New([]int64{1, 3, int64(c.h), int64(c.w)}, img)
	if err != nil {
		return err
	}
	out, err := c.sess.Run(map[string]*runtime.Tensor{step.InputImage: in})
	if err != nil {
		return err
	}
	for i, t := range c.tensors {
		visit(i, runtime.Data[float32](out[t]))
	}
	return nil
}

// calibrate returns each tensor's range over the images (normalised network inputs).
// Percentile calibration takes two passes: the minimum and maximum fix each histogram's
// bins, the second pass fills them.
func calibrate(ctx context.Context, c *calibrator, images [][]float32, method string, percentile float64) (map[string]actRange, error) {
	n := len(c.tensors)
	lo := make([]float32, n)
	hi := make([]float32, n)
	for i := range lo {
		lo[i], hi[i] = float32(math.Inf(1)), float32(math.Inf(-1))
	}
	for k, img := range images {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := c.run(img, func(i int, v []float32) {
			for _, x := range v {
				if x < lo[i] {
					lo[i] = x
				}
				if x > hi[i] {
					hi[i] = x
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("int8 calibration image %d: %w", k+1, err)
		}
	}
	for i, t := range c.tensors {
		if math.IsNaN(float64(lo[i])) || math.IsInf(float64(lo[i]), 0) || math.IsInf(float64(hi[i]), 0) {
			return nil, fmt.Errorf("int8 calibration: tensor %s has non-finite values (range %g..%g): the model is broken", t, lo[i], hi[i])
		}
	}
	out := make(map[string]actRange, n)
	switch method {
	case CalibMinMax, "":
		for i, t := range c.tensors {
			out[t] = actRange{lo[i], hi[i]}
		}
		return out, nil
	case CalibPercentile:
	default:
		return nil, fmt.Errorf("int8 calibration method %q: want %s or %s", method, CalibMinMax, CalibPercentile)
	}
	if !(percentile > 50 && percentile <= 100) {
		return nil, fmt.Errorf("int8 calibration percentile %g: want (50, 100]", percentile)
	}
	hists := make([][]int64, n)
	for i := range hists {
		hists[i] = make([]int64, histBins)
	}
	for k, img := range images {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := c.run(img, func(i int, v []float32) {
			h := hists[i]
			span := float64(hi[i]) - float64(lo[i])
			if span <= 0 {
				h[0] += int64(len(v))
				return
			}
			k := float64(histBins) / span
			for _, x := range v {
				b := int((float64(x) - float64(lo[i])) * k)
				if b >= histBins {
					b = histBins - 1
				} else if b < 0 {
					b = 0
				}
				h[b]++
			}
		})
		if err != nil {
			return nil, fmt.Errorf("int8 calibration image %d: %w", k+1, err)
		}
	}
	for i, t := range c.tensors {
		out[t] = percentileRange(hists[i], lo[i], hi[i], percentile)
	}
	return out, nil
}

// percentileRange cuts a histogram over [lo, hi]: a non-negative tensor keeps [0, the
// percentile]; others drop (100 − percentile)/2 % of the values at each end.
func percentileRange(h []int64, lo, hi float32, percentile float64) actRange {
	var total int64
	for _, c := range h {
		total += c
	}
	if total == 0 || hi <= lo {
		return actRange{lo, hi}
	}
	width := (float64(hi) - float64(lo)) / float64(len(h))
	edge := func(b int) float32 { return float32(float64(lo) + float64(b)*width) }
	// upper is the upper edge of the bin where the count reaches q·total; lower the lower edge
	// of the first bin the count passes q·total in.
	upper := func(q float64) float32 {
		var acc float64
		for b, c := range h {
			if acc += float64(c); acc >= q*float64(total) {
				return edge(b + 1)
			}
		}
		return hi
	}
	lower := func(q float64) float32 {
		var acc float64
		for b, c := range h {
			if acc += float64(c); acc > q*float64(total) {
				return edge(b)
			}
		}
		return lo
	}
	tail := (100 - percentile) / 100
	if lo >= 0 {
		return actRange{lo, min(hi, upper(1-tail))}
	}
	return actRange{max(lo, lower(tail/2)), min(hi, upper(1-tail/2))}
}
