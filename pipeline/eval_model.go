package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// OutputKind says what a segmentation model's output holds.
type OutputKind string

const (
	// OutputAuto decides from the output's type and shape, the model's metadata and the first
	// batch of values (see SegModel).
	OutputAuto OutputKind = "auto"
	// OutputLogits: [N,2,H,W] class logits (softmax over axis 1), or [N,1,H,W]/[N,H,W] card
	// logits (sigmoid).
	OutputLogits OutputKind = "logits"
	// OutputProbabilities: [N,2,H,W] class probabilities, or [N,1,H,W]/[N,H,W] card probability.
	OutputProbabilities OutputKind = "probabilities"
	// OutputLabels: [N,H,W] or [N,1,H,W] integer class labels (0 background, 1 card).
	OutputLabels OutputKind = "labels"
)

// ParseOutputKind accepts auto, logits, probabilities or labels.
func ParseOutputKind(s string) (OutputKind, error) {
	switch k := OutputKind(strings.ToLower(strings.TrimSpace(s))); k {
	case "":
		return OutputAuto, nil
	case OutputAuto, OutputLogits, OutputProbabilities, OutputLabels:
		return k, nil
	}
	return "", fmt.Errorf("unknown output kind %q: want auto, logits, probabilities or labels", s)
}

// Metadata keys (ONNX metadata_props) that eval reads; graphs/step writes them into every model
// cardseg-ort exports.
const (
	MetaInput         = "cardseg.input"         // name of the image input
	MetaOutput        = "cardseg.output"        // name of the segmentation output
	MetaInputSize     = "cardseg.input_size"    // JSON [H, W]
	MetaNormalization = "cardseg.normalization" // JSON {"scale", "mean", "std"}
	MetaOutputLayout  = "cardseg.output_layout" // free text naming logits or probabilities
)

// Normalization maps 8-bit RGB to the model's input: (v·Scale − Mean[c]) / Std[c].
type Normalization struct {
	Scale float64    `json:"scale"`
	Mean  [3]float64 `json:"mean"`
	Std   [3]float64 `json:"std"`
}

// ImageNet is the normalisation of DESIGN.md's contract and of torchvision's models: RGB
// scaled to [0,1], then ImageNet's mean and standard deviation.
var ImageNet = Normalization{
	Scale: 1.0 / 255,
	Mean:  [3]float64{0.485, 0.456, 0.406},
	Std:   [3]float64{0.229, 0.224, 0.225},
}

func (n Normalization) validate() error {
	if !(n.Scale > 0) || math.IsInf(n.Scale, 0) {
		return fmt.Errorf("scale %v must be positive", n.Scale)
	}
	for c := 0; c < 3; c++ {
		if !(n.Std[c] > 0) || math.IsInf(n.Std[c], 0) {
			return fmt.Errorf("std[%d] = %v must be positive", c, n.Std[c])
		}
		if math.IsNaN(n.Mean[c]) || math.IsInf(n.Mean[c], 0) {
			return fmt.Errorf("mean[%d] = %v must be finite", c, n.Mean[c])
		}
	}
	return nil
}

// lut returns, per channel, the normalised value of each 8-bit level.
func (n Normalization) lut() [3][256]float32 {
	var t [3][256]float32
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			t[c][v] = float32((float64(v)*n.Scale - n.Mean[c]) / n.Std[c])
		}
	}
	return t
}

// ModelOptions choose how a model is read where the model itself does not say.
type ModelOptions struct {
	Session runtime.SessionOptions
	// Height and Width feed models whose input height or width is symbolic and whose metadata
	// lacks cardseg.input_size; 0 when not given. A model with static dimensions must agree.
	Height, Width int
	// Kind overrides what the output holds; "" or OutputAuto decides.
	Kind OutputKind
	// OutputName picks the output of a model with several; "" uses cardseg.output metadata or
	// the one output whose layout fits.
	OutputName string
}

// SegModel is an ONNX segmentation model opened for evaluation: its image input, its
// segmentation output and how to read both.
type SegModel struct {
	Path     string
	Input    runtime.IOInfo
	Output   runtime.IOInfo
	Height   int    // input height fed to the model
	Width    int    // input width fed to the model
	SizeFrom string // where Height and Width came from: "model", "metadata" or "flag"
	// Batch is the model's static batch size, or 0 when the batch dimension is symbolic.
	Batch int
	// Channels is the output's class axis: 2, 1, or 0 for an [N,H,W] output.
	Channels int
	// Kind is what the output holds. It is OutputAuto until the first batch settles it, for
	// float outputs whose metadata does not say.
	Kind          OutputKind
	Normalization Normalization
	NormFrom      string // "metadata" or "default (ImageNet)"
	Metadata      map[string]string

	sess *runtime.Session
	norm [3][256]float32
}

// OpenSegModel opens the model at path and checks that it has the layout eval needs: one image
// input [N,3,H,W] (float32 or float16) and one output [N,2,H,W], [N,1,H,W] or [N,H,W].
func OpenSegModel(path string, opts ModelOptions) (*SegModel, error) {
	kind, err := ParseOutputKind(string(opts.Kind))
	if err != nil {
		return nil, err
	}
	sess, err := runtime.NewSessionFromFile(path, opts.Session)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err) // runtime names the file
	}
	m := &SegModel{Path: path, sess: sess, Kind: kind}
	if err := m.inspect(opts); err != nil {
		sess.Close()
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	return m, nil
}

// Close releases the session.
func (m *SegModel) Close() error { return m.sess.Close() }

// Provider is the execution provider the model runs on.
func (m *SegModel) Provider() runtime.Provider { return m.sess.Provider() }

func describeIO(infos []runtime.IOInfo) string {
	parts := make([]string, len(infos))
	for i, x := range infos {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}

func (m *SegModel) inspect(opts ModelOptions) error {
	md, err := m.sess.Metadata()
	if err != nil {
		return err
	}
	m.Metadata = md
	if err := m.pickInput(); err != nil {
		return err
	}
	if err := m.pickOutput(opts.OutputName); err != nil {
		return err
	}
	if err := m.inputSize(opts.Height, opts.Width); err != nil {
		return err
	}
	if err := m.outputKind(); err != nil {
		return err
	}
	m.Normalization, m.NormFrom = ImageNet, "default (ImageNet)"
	if s, ok := md[MetaNormalization]; ok {
		var n Normalization
		if err := json.Unmarshal([]byte(s), &n); err != nil {
			return fmt.Errorf("metadata %s = %q is not {\"scale\", \"mean\": [3], \"std\": [3]}: %v", MetaNormalization, s, err)
		}
		if err := n.validate(); err != nil {
			return fmt.Errorf("metadata %s = %q: %v", MetaNormalization, s, err)
		}
		m.Normalization, m.NormFrom = n, "metadata"
	}
	m.norm = m.Normalization.lut()
	return nil
}

const inputContract = "eval needs one image input [N,3,H,W] of float32 or float16"

func (m *SegModel) pickInput() error {
	ins := m.sess.Inputs()
	if len(ins) != 1 {
		return fmt.Errorf("the model has %d inputs (%s); %s", len(ins), describeIO(ins), inputContract)
	}
	in := ins[0]
	if want := m.Metadata[MetaInput]; want != "" && want != in.Name {
		return fmt.Errorf("metadata %s names input %q but the model's input is %s", MetaInput, want, in)
	}
	if in.DType != runtime.Float32 && in.DType != runtime.Float16 {
		return fmt.Errorf("input %s is %v; %s (normalised RGB)", in, in.DType, inputContract)
	}
	if len(in.Shape) != 4 {
		return fmt.Errorf("input %s has rank %d; %s", in, len(in.Shape), inputContract)
	}
	if c := in.Shape[1]; c >= 0 && c != 3 {
		if in.Shape[3] == 3 {
			return fmt.Errorf("input %s looks channels-last (NHWC); %s (channels first)", in, inputContract)
		}
		return fmt.Errorf("input %s has %d channels; %s (RGB)", in, c, inputContract)
	}
	if b := in.Shape[0]; b >= 0 {
		if b == 0 {
			return fmt.Errorf("input %s has batch size 0", in)
		}
		m.Batch = int(b)
	}
	m.Input = in
	return nil
}

const outputContract = "eval needs [N,2,H,W] logits or probabilities, or [N,1,H,W]/[N,H,W] card probabilities, logits or labels"

// outputLayout checks one output against the contract and returns its class axis size.
func outputLayout(o runtime.IOInfo) (channels int, err error) {
	switch o.DType {
	case runtime.Float32, runtime.Float16, runtime.Float64, runtime.Int64, runtime.Int32, runtime.Uint8, runtime.Int8, runtime.Bool:
	default:
		return 0, fmt.Errorf("output %s is %v; %s", o, o.DType, outputContract)
	}
	switch len(o.Shape) {
	case 3:
		return 0, nil
	case 4:
		switch c := o.Shape[1]; {
		case c == 1 || c == 2:
			return int(c), nil
		case c < 0:
			return -1, nil // settled by the first batch
		default:
			return 0, fmt.Errorf("output %s has %d channels, a %d-class model; eval scores the 2-class card task (background, card); %s", o, c, c, outputContract)
		}
	}
	return 0, fmt.Errorf("output %s has rank %d; %s", o, len(o.Shape), outputContract)
}

func (m *SegModel) pickOutput(name string) error {
	outs := m.sess.Outputs()
	if name == "" {
		name = m.Metadata[MetaOutput]
	}
	if name != "" {
		for _, o := range outs {
			if o.Name == name {
				c, err := outputLayout(o)
				if err != nil {
					return err
				}
				m.Output, m.Channels = o, c
				return nil
			}
		}
		return fmt.Errorf("no output named %q; the model's outputs are %s", name, describeIO(outs))
	}
	if len(outs) == 1 {
		c, err := outputLayout(outs[0])
		if err != nil {
			return err
		}
		m.Output, m.Channels = outs[0], c
		return nil
	}
	var fits []runtime.IOInfo
	var chans []int
	for _, o := range outs {
		if c, err := outputLayout(o); err == nil {
			fits = append(fits, o)
			chans = append(chans, c)
		}
	}
	if len(fits) != 1 {
		return fmt.Errorf("the model has %d outputs (%s) and %d fit the layout; name the segmentation output with --output-name (%s)",
			len(outs), describeIO(outs), len(fits), outputContract)
	}
	m.Output, m.Channels = fits[0], chans[0]
	return nil
}

// inputSize settles the height and width fed to the model: the model's own static dimensions,
// else the cardseg.input_size metadata, else the caller's.
func (m *SegModel) inputSize(h, w int) error {
	if h < 0 || w < 0 || (h == 0) != (w == 0) {
		return fmt.Errorf("input size %d×%d: give both height and width, positive", h, w)
	}
	mh, mw := m.Input.Shape[2], m.Input.Shape[3]
	if mh >= 0 && mw >= 0 {
		if mh == 0 || mw == 0 {
			return fmt.Errorf("input %s has an empty image size", m.Input)
		}
		if h != 0 && (int64(h) != mh || int64(w) != mw) {
			return fmt.Errorf("input %s takes %d×%d images, not the %d×%d asked for", m.Input, mh, mw, h, w)
		}
		m.Height, m.Width, m.SizeFrom = int(mh), int(mw), "model"
		return nil
	}
	if h == 0 {
		s, ok := m.Metadata[MetaInputSize]
		if !ok {
			return fmt.Errorf("input %s has a symbolic height or width and the model has no %s metadata; give the size (--size HxW)", m.Input, MetaInputSize)
		}
		var hw [2]int
		if err := json.Unmarshal([]byte(s), &hw); err != nil || hw[0] <= 0 || hw[1] <= 0 {
			return fmt.Errorf("metadata %s = %q is not [height, width]", MetaInputSize, s)
		}
		h, w = hw[0], hw[1]
		m.SizeFrom = "metadata"
	} else {
		m.SizeFrom = "flag"
	}
	if (mh >= 0 && int64(h) != mh) || (mw >= 0 && int64(w) != mw) {
		return fmt.Errorf("input %s cannot take %d×%d images", m.Input, h, w)
	}
	m.Height, m.Width = h, w
	return nil
}

func isFloat(d runtime.DType) bool {
	return d == runtime.Float32 || d == runtime.Float16 || d == runtime.Float64
}

// outputKind checks an explicit kind against the output's type, or decides what it can now.
func (m *SegModel) outputKind() error {
	o := m.Output
	switch m.Kind {
	case OutputLabels:
		if isFloat(o.DType) {
			return fmt.Errorf("output %s is %v, not integer labels; use --output logits or probabilities", o, o.DType)
		}
		if m.Channels == 2 {
			return fmt.Errorf("output %s has 2 channels; labels need [N,H,W] or [N,1,H,W]", o)
		}
	case OutputLogits, OutputProbabilities:
		if !isFloat(o.DType) {
			return fmt.Errorf("output %s is %v; %s need a float output (integer outputs are labels)", o, o.DType, m.Kind)
		}
	case OutputAuto:
		if !isFloat(o.DType) {
			m.Kind = OutputLabels
			return m.outputKind()
		}
		// cardseg-ort writes "NCHW float32 logits (softmax over axis 1 gives class
		// probabilities)": logits are named first.
		switch layout := strings.ToLower(m.Metadata[MetaOutputLayout]); {
		case strings.Contains(layout, "logit"):
			m.Kind = OutputLogits
		case strings.Contains(layout, "probabilit"):
			m.Kind = OutputProbabilities
		}
	}
	return nil
}

// ParseSize reads "HxW" (or "H×W", "H,W"), e.g. "480x640"; "" gives 0, 0.
func ParseSize(s string) (h, w int, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, 0, nil
	}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == 'x' || r == 'X' || r == '×' || r == ',' })
	if len(parts) == 2 {
		h, err1 := strconv.Atoi(strings.TrimSpace(parts[0]))
		w, err2 := strconv.Atoi(strings.TrimSpace(parts[1]))
		if err1 == nil && err2 == nil && h > 0 && w > 0 {
			return h, w, nil
		}
	}
	return 0, 0, fmt.Errorf("size %q: want HEIGHTxWIDTH, e.g. 480x640", s)
}
