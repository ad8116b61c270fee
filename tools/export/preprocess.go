package export

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// Names of the RGB variants' inputs and outputs.
const (
	InputRGB          = "rgb"              // uint8 [H,W,3] (or [N,H,W,3]) RGB, any size
	OutputMask        = "mask"             // uint8 [H,W] (or [N,H,W]): 255 card, 0 background
	OutputProbability = "card_probability" // float32 [H,W] (or [N,H,W]): P(card) in [0,1]
)

// wrapRGB wraps a network (input image [N,3,h,w], output logits [N,2,h,w]) into a model an
// app feeds camera pixels to: uint8 RGB rows of any size in, and at that same size out a uint8
// mask (255 card, 0 background) and the card probability. Inside: the pixels are transposed
// to planes, resized to h×w (bilinear, half-pixel centres as PyTorch and the training data
// loader; antialiased from opset 18, which has the attribute), scaled and normalised with
// ImageNet's mean and std; after the network the card-minus-background logit is resized back
// to the input's size (bilinear, as `cardseg-ort eval` scores), its sigmoid is the probability
// (the two-class softmax) and its sign the mask.
func wrapRGB(core *onnxpb.ModelProto, h, w int, dynamicBatch bool, opset int) (*onnxpb.ModelProto, error) {
	m := cloneModel(core)
	cg := m.Graph
	if len(cg.Input) != 1 || len(cg.Output) != 1 || cg.Input[0].GetName() != step.InputImage || cg.Output[0].GetName() != step.OutLogits {
		return nil, fmt.Errorf("embed preprocessing: the network must take %s and return %s", step.InputImage, step.OutLogits)
	}
	coreIn, coreOut := cg.Input[0], cg.Output[0]
	g := &onnxpb.GraphProto{Name: proto.String(cg.GetName() + "_rgb"), DocString: cg.DocString}
	var nodes []*onnxpb.NodeProto
	node := func(op, name string, in []string, attrs ...*onnxpb.AttributeProto) string {
		out := name
		nodes = append(nodes, nodeProto(op, name, in, []string{out}, attrs...))
		return out
	}
	inits := []*onnxpb.TensorProto{}
	ints := func(name string, v ...int64) string {
		inits = append(inits, int64Tensor(name, []int64{int64(len(v))}, v))
		return name
	}
	floats := func(name string, dims []int64, v ...float32) string {
		inits = append(inits, floatTensor(name, dims, v))
		return name
	}

	var inDims, outDims []int64
	var inNames, outNames []string
	if dynamicBatch {
		inDims, inNames = []int64{-1, -1, -1, 3}, []string{"batch", "height", "width"}
		outDims, outNames = []int64{-1, -1, -1}, []string{"batch", "height", "width"}
	} else {
		inDims, inNames = []int64{-1, -1, 3}, []string{"height", "width"}
		outDims, outNames = []int64{-1, -1}, []string{"height", "width"}
	}
	g.Input = []*onnxpb.ValueInfoProto{valueInfo(InputRGB, elemUint8, inDims, inNames...)}

	x := InputRGB
	if !dynamicBatch {
		x = node("Unsqueeze", "preprocess/batch", []string{x, ints("preprocess/axis0", 0)})
	}
	x = node("Cast", "preprocess/to_float", []string{x}, attrInt("to", int64(elemFloat)))
	x = node("Transpose", "preprocess/nhwc_to_nchw", []string{x}, attrInts("perm", 0, 3, 1, 2))
	shape := node("Shape", "preprocess/input_shape", []string{x})
	nc := node("Slice", "preprocess/batch_channels", []string{shape, ints("preprocess/start0", 0), ints("preprocess/end2", 2)})
	sizes := node("Concat", "preprocess/network_size", []string{nc, ints("preprocess/hw", int64(h), int64(w))}, attrInt("axis", 0))
	resize := func(name, in, sizes string) string {
		attrs := []*onnxpb.AttributeProto{attrString("mode", "linear"), attrString("coordinate_transformation_mode", "half_pixel")}
		if opset >= 18 {
			attrs = append(attrs, attrInt("antialias", 1))
		}
		return node("Resize", name, []string{in, "", "", sizes}, attrs...)
	}
	x = resize("preprocess/resize", x, sizes)
	var scale, shift [3]float32
	for c := 0; c < 3; c++ {
		scale[c] = 1 / (255 * step.Std[c])
		shift[c] = -step.Mean[c] / step.Std[c]
	}
	x = node("Mul", "preprocess/scale", []string{x, floats("preprocess/scale_by", []int64{1, 3, 1, 1}, scale[:]...)})
	x = node("Add", "preprocess/normalize", []string{x, floats("preprocess/shift_by", []int64{1, 3, 1, 1}, shift[:]...)})
	if e := elemType(coreIn); e != elemFloat {
		x = node("Cast", "preprocess/to_network_type", []string{x}, attrInt("to", int64(e)))
	}
	renameUses(cg, step.InputImage, x)

	logits := "postprocess/logits"
	if !renameProducer(cg, step.OutLogits, logits) {
		return nil, fmt.Errorf("embed preprocessing: no node produces %s", step.OutLogits)
	}
	renameUses(cg, step.OutLogits, logits)
	nodes = append(nodes, cg.Node...)
	if e := elemType(coreOut); e != elemFloat {
		logits = node("Cast", "postprocess/to_float", []string{logits}, attrInt("to", int64(elemFloat)))
	}
	axis1 := ints("postprocess/axis1", 1)
	card := node("Slice", "postprocess/card_logit", []string{logits, ints("postprocess/one", 1), ints("postprocess/two", 2), axis1})
	bg := node("Slice", "postprocess/background_logit", []string{logits, ints("postprocess/zero", 0), "postprocess/one", axis1})
	diff := node("Sub", "postprocess/margin", []string{card, bg})
	n := node("Slice", "postprocess/batch", []string{shape, "postprocess/zero", "postprocess/one"})
	hw := node("Slice", "postprocess/input_hw", []string{shape, ints("postprocess/start2", 2), ints("postprocess/end4", 4)})
	outSizes := node("Concat", "postprocess/input_size", []string{n, "postprocess/one", hw}, attrInt("axis", 0))
	diff = resize("postprocess/resize", diff, outSizes)
	axes := []int64{1}
	if !dynamicBatch {
		axes = []int64{0, 1}
	}
	squeeze := ints("postprocess/squeeze_axes", axes...)
	prob := node("Sigmoid", "postprocess/sigmoid", []string{diff})
	nodes = append(nodes, nodeProto("Squeeze", "postprocess/probability", []string{prob, squeeze}, []string{OutputProbability}))
	isCard := node("Greater", "postprocess/is_card", []string{diff, floats("postprocess/threshold", nil, 0)})
	inits = append(inits, uint8Tensor("postprocess/card_value", nil, []uint8{255}), uint8Tensor("postprocess/background_value", nil, []uint8{0}))
	maskFull := node("Where", "postprocess/mask_values", []string{isCard, "postprocess/card_value", "postprocess/background_value"})
	nodes = append(nodes, nodeProto("Squeeze", "postprocess/mask", []string{maskFull, squeeze}, []string{OutputMask}))
	g.Node = nodes
	g.Initializer = append(inits, cg.Initializer...)
	g.Output = []*onnxpb.ValueInfoProto{
		valueInfo(OutputMask, elemUint8, outDims, outNames...),
		valueInfo(OutputProbability, elemFloat, outDims, outNames...),
	}
	m.Graph = g

	layout := "[H,W,3]"
	outLayout := "[H,W]"
	if dynamicBatch {
		layout, outLayout = "[N,H,W,3]", "[N,H,W]"
	}
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	setMetadata(m, map[string]string{
		"cardseg.input":        InputRGB,
		"cardseg.input_layout": fmt.Sprintf("%s uint8 RGB (rows of pixels, any height and width; resized to %dx%d and normalised inside)", layout, h, w),
		"cardseg.output":       OutputMask,
		"cardseg.output_layout": fmt.Sprintf("%s: %s uint8, 255 card, 0 background; %s: %s float32 card probability; both at the input's size",
			OutputMask, outLayout, OutputProbability, outLayout),
		MetaOutputs: j(map[string]string{
			OutputMask:        "uint8 " + outLayout + ": 255 where the card is (card probability > 0.5), 0 elsewhere",
			OutputProbability: "float32 " + outLayout + ": probability of the card class (softmax of the two logits)",
		}),
		MetaPreprocessing: "embedded",
	})
	return m, nil
}
