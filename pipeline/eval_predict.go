package pipeline

import (
	"fmt"
	"image"
	"math"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// scoreKind says how a score map encodes the card decision and the confidence.
type scoreKind uint8

const (
	// scoreLogit: the card logit against background (l1−l0 for two class logits, the logit
	// itself for one); card where > 0, confidence sigmoid(|s|), the larger softmax probability.
	scoreLogit scoreKind = iota
	// scoreProbDiff: p1−p0 of two class probabilities; card where > 0, confidence (1+|s|)/2.
	scoreProbDiff
	// scoreProbCentered: p−0.5 of a card probability; card where > 0, confidence 0.5+|s|.
	scoreProbCentered
	// scoreLabel: +1 card, −1 background; resized by nearest neighbour, no confidence.
	scoreLabel
)

// scoreMap is one image's prediction at the model's output resolution as one signed card score
// per pixel: the pixel is card where the score is positive. Bilinear interpolation is linear,
// so resizing l1−l0 and then thresholding at 0 decides exactly as resizing both logits and
// taking the argmax (PyTorch's F.interpolate then argmax), at half the work.
type scoreMap struct {
	W, H int
	S    []float32
	Kind scoreKind
}

// resized returns the scores at w×h: bilinear for logits and probabilities, nearest for labels.
func (s scoreMap) resized(w, h int) scoreMap {
	out := scoreMap{W: w, H: h, S: make([]float32, w*h), Kind: s.Kind}
	if s.Kind == scoreLabel {
		resizeNearest(out.S, w, h, s.S, s.W, s.H)
	} else {
		resizeBilinear(out.S, w, h, s.S, s.W, s.H)
	}
	return out
}

// hasConfidence reports whether the map gives a probability (labels do not).
func (s scoreMap) hasConfidence() bool { return s.Kind != scoreLabel }

// confidence returns the probability of the predicted class for score v: the per-pixel maximum
// class probability.
func (k scoreKind) confidence(v float32) float32 {
	a := float64(v)
	if a < 0 {
		a = -a
	}
	switch k {
	case scoreLogit:
		return float32(1 / (1 + math.Exp(-a)))
	case scoreProbDiff:
		return float32(min(1, (1+a)/2))
	case scoreProbCentered:
		return float32(min(1, 0.5+a))
	}
	return 1
}

// fillInput writes images (each Width×Height, RGBA) normalised into an [B,3,H,W] tensor of the
// model's input type; slots past len(images) stay zero (padding for a static batch).
func (m *SegModel) fillInput(images []*image.RGBA, batch int) (*runtime.Tensor, error) {
	h, w := m.Height, m.Width
	plane := h * w
	data := make([]float32, batch*3*plane)
	for i, img := range images {
		if img.Rect.Dx() != w || img.Rect.Dy() != h {
			return nil, fmt.Errorf("image %d is %d×%d, the model takes %d×%d", i, img.Rect.Dx(), img.Rect.Dy(), w, h)
		}
		r := data[(i*3+0)*plane : (i*3+1)*plane]
		g := data[(i*3+1)*plane : (i*3+2)*plane]
		b := data[(i*3+2)*plane : (i*3+3)*plane]
		for y := 0; y < h; y++ {
			px := img.Pix[y*img.Stride : y*img.Stride+4*w]
			o := y * w
			for x := 0; x < w; x++ {
				r[o+x] = m.norm[0][px[4*x]]
				g[o+x] = m.norm[1][px[4*x+1]]
				b[o+x] = m.norm[2][px[4*x+2]]
			}
		}
	}
	shape := []int64{int64(batch), 3, int64(h), int64(w)}
	if m.Input.DType == runtime.Float16 {
		return runtime.New(shape, runtime.ToFloat16(data))
	}
	return runtime.New(shape, data)
}

// predict runs the model on images (each at the model's input size) and returns one score map
// per image. names are used in errors.
func (m *SegModel) predict(images []*image.RGBA, names []string) ([]scoreMap, error) {
	batch := len(images)
	if m.Batch > 0 {
		if batch > m.Batch {
			return nil, fmt.Errorf("%d images for a model with static batch size %d", batch, m.Batch)
		}
		batch = m.Batch
	}
	in, err := m.fillInput(images, batch)
	if err != nil {
		return nil, err
	}
	outs, err := m.sess.Run(map[string]*runtime.Tensor{m.Input.Name: in})
	if err != nil {
		return nil, err
	}
	t := outs[m.Output.Name]
	return m.scores(t, batch, len(images), names)
}

// scores converts the output tensor into score maps for the first n of batch images.
func (m *SegModel) scores(t *runtime.Tensor, batch, n int, names []string) ([]scoreMap, error) {
	o := m.Output
	shape := t.Shape
	bad := func() error {
		return fmt.Errorf("output %s came back with shape %v for a batch of %d; %s", o.Name, shape, batch, outputContract)
	}
	var c, h, w int
	switch len(shape) {
	case 3:
		c, h, w = 0, int(shape[1]), int(shape[2])
	case 4:
		c, h, w = int(shape[1]), int(shape[2]), int(shape[3])
		if c != 1 && c != 2 {
			if c > 2 {
				return nil, fmt.Errorf("output %s came back with %d channels (shape %v), a %d-class model; eval scores the 2-class card task (background, card)", o.Name, c, shape, c)
			}
			return nil, bad()
		}
	default:
		return nil, bad()
	}
	if int(shape[0]) != batch || h <= 0 || w <= 0 {
		return nil, bad()
	}
	if m.Channels < 0 {
		m.Channels = c
	}
	if c == 2 && m.Kind == OutputLabels {
		return nil, fmt.Errorf("output %s has 2 channels; labels need [N,H,W] or [N,1,H,W]", o.Name)
	}
	plane := h * w
	per := max(c, 1) * plane
	out := make([]scoreMap, n)
	if !isFloat(t.DType) {
		labels, err := labelValues(t)
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", o.Name, err)
		}
		for i := 0; i < n; i++ {
			s := make([]float32, plane)
			for k, v := range labels[i*plane : (i+1)*plane] {
				switch v {
				case 0:
					s[k] = -1
				case 1:
					s[k] = 1
				default:
					return nil, fmt.Errorf("output %s holds label %d for %s; labels must be 0 (background) or 1 (card)", o.Name, v, names[i])
				}
			}
			out[i] = scoreMap{W: w, H: h, S: s, Kind: scoreLabel}
		}
		return out, nil
	}
	var vals []float32
	if t.DType == runtime.Float64 {
		d := runtime.Data[float64](t)
		vals = make([]float32, len(d))
		for i, v := range d {
			vals[i] = float32(v)
		}
	} else {
		vals = t.Float32s()
	}
	for i := 0; i < n; i++ {
		for _, v := range vals[i*per : (i+1)*per] {
			if math.IsNaN(float64(v)) {
				return nil, fmt.Errorf("output %s has NaN for %s", o.Name, names[i])
			}
		}
	}
	if m.Kind == OutputAuto {
		m.Kind = guessKind(vals[:n*per], c, plane)
	}
	for i := 0; i < n; i++ {
		v := vals[i*per : (i+1)*per]
		s := make([]float32, plane)
		var kind scoreKind
		switch {
		case c == 2 && m.Kind == OutputLogits:
			kind = scoreLogit
			for k := range s {
				s[k] = v[plane+k] - v[k]
			}
		case c == 2:
			kind = scoreProbDiff
			if err := checkProbabilities(v, o.Name, names[i]); err != nil {
				return nil, err
			}
			for k := range s {
				s[k] = v[plane+k] - v[k]
			}
		case m.Kind == OutputLogits:
			kind = scoreLogit
			copy(s, v)
		default:
			kind = scoreProbCentered
			if err := checkProbabilities(v, o.Name, names[i]); err != nil {
				return nil, err
			}
			for k := range s {
				s[k] = v[k] - 0.5
			}
		}
		out[i] = scoreMap{W: w, H: h, S: s, Kind: kind}
	}
	return out, nil
}

// probSlack is how far outside [0,1] a probability may stray through rounding.
const probSlack = 1e-3

func checkProbabilities(v []float32, output, name string) error {
	for _, p := range v {
		if p < -probSlack || p > 1+probSlack {
			return fmt.Errorf("output %s holds %g for %s, outside [0,1], so it is not a probability; if the model outputs logits, use --output logits", output, p, name)
		}
	}
	return nil
}

// guessKind decides what a float output holds from its first batch: probabilities when every
// value lies in [0,1] and, for two channels, each pixel's two values sum to 1; logits
// otherwise. Logits of a trained model leave [0,1] on nearly every image.
func guessKind(vals []float32, c, plane int) OutputKind {
	for _, v := range vals {
		if v < -probSlack || v > 1+probSlack {
			return OutputLogits
		}
	}
	if c == 2 {
		per := 2 * plane
		for i := 0; i+per <= len(vals); i += per {
			for k := 0; k < plane; k++ {
				if d := vals[i+k] + vals[i+plane+k] - 1; d < -probSlack || d > probSlack {
					return OutputLogits
				}
			}
		}
	}
	return OutputProbabilities
}

// labelValues widens an integer or bool tensor to int64.
func labelValues(t *runtime.Tensor) ([]int64, error) {
	switch t.DType {
	case runtime.Int64:
		return runtime.Data[int64](t), nil
	case runtime.Int32:
		return widen(runtime.Data[int32](t)), nil
	case runtime.Uint8:
		return widen(runtime.Data[uint8](t)), nil
	case runtime.Int8:
		return widen(runtime.Data[int8](t)), nil
	case runtime.Bool:
		d := runtime.Data[bool](t)
		out := make([]int64, len(d))
		for i, b := range d {
			if b {
				out[i] = 1
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%v is not a label type", t.DType)
}

func widen[T int32 | uint8 | int8](d []T) []int64 {
	out := make([]int64, len(d))
	for i, v := range d {
		out[i] = int64(v)
	}
	return out
}
