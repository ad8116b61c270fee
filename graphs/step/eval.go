package step

import (
	"encoding/json"
	"fmt"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// Eval-step outputs besides the loss terms.
const (
	OutConfusion      = "confusion"       // int64 [N,K,K]: rows truth, columns prediction
	OutConfusionTotal = "confusion_total" // int64 [K,K]
	OutCESum          = "ce_sum"          // float32 [N]
	OutDiceInter      = "dice_inter"      // float32 [N]
	OutDiceP          = "dice_p"          // float32 [N]
	OutDiceT          = "dice_t"          // float32 [N]
)

// EvalStep builds the evaluation step: eval-mode forward (running statistics), the loss and
// its per-image parts, and confusion counts per image and in total. The batch dimension is
// symbolic, so one graph serves every batch size. Inputs: image, target and every network
// tensor by name. With c.FP16 the forward computes in float16 (batch norm's per-channel
// scale and shift from the running statistics in float32, then cast) and the loss and
// confusion counts in float32 on the logits cast back; inputs and outputs are as in FP32.
func EvalStep(c Config) (*graphs.Graph, error) {
	c.Batch = 1
	if err := c.validate(); err != nil {
		return nil, err
	}
	g := graphs.New("eval_step")
	g.NCHWcBlock = max(c.NCHWcBlock, 0)
	err := graphs.Build(func() error {
		image := g.Input(InputImage, graphs.Float, graphs.Shape{-1, 3, int64(c.Height), int64(c.Width)})
		target := g.Input(InputTarget, graphs.Int64, graphs.Shape{-1, int64(c.Height), int64(c.Width)})
		src := &inputSource{vals: map[string]*graphs.Value{}}
		out := model.Forward(g, computeInput(image, c), c.Arch, src, model.Eval)
		logits := lossInput(out.Logits)
		loss := SegLoss(logits, target, c.Loss)
		g.Output(OutLoss, loss.Total)
		g.Output(OutCE, loss.CE)
		g.Output(OutDice, loss.Dice)
		g.Output(OutCESum, loss.Parts.CESum)
		g.Output(OutDiceInter, loss.Parts.Inter)
		g.Output(OutDiceP, loss.Parts.P)
		g.Output(OutDiceT, loss.Parts.T)
		conf := Confusion(logits, target)
		g.Output(OutConfusion, conf)
		g.Output(OutConfusionTotal, graphs.ReduceSum(conf, false, 0))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// initSource stores every tensor as an initializer, float32 unless half is set (float16).
type initSource struct {
	w    *model.Weights
	half bool
}

func (s initSource) Param(g *graphs.Graph, spec model.ParamSpec) *graphs.Value {
	d, ok := s.w.Tensors[spec.Name]
	if !ok {
		panic(fmt.Sprintf("weights lack %s", spec.Name))
	}
	if s.half {
		return g.InitFloat16(spec.Name, spec.Shape, d)
	}
	return g.InitFloat(spec.Name, spec.Shape, d)
}

// Normalisation every model expects (ImageNet statistics on RGB scaled to [0,1]).
var (
	Mean       = [3]float32{0.485, 0.456, 0.406}
	Std        = [3]float32{0.229, 0.224, 0.225}
	ClassNames = []string{"background", "card"}
)

// MetaPrecision is the metadata key an FP16 inference model records its precision under
// ("fp16"); models without it compute in float32.
const MetaPrecision = "cardseg.precision"

// InferenceMetadata is what the inference model records in its ONNX metadata_props.
func InferenceMetadata(c Config) map[string]string {
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	return map[string]string{
		"cardseg.input":         InputImage,
		"cardseg.input_layout":  "NCHW float32 RGB",
		"cardseg.input_size":    j([2]int{c.Height, c.Width}),
		"cardseg.output":        OutLogits,
		"cardseg.output_layout": "NCHW float32 logits (softmax over axis 1 gives class probabilities)",
		"cardseg.normalization": j(map[string]any{"scale": 1.0 / 255, "mean": Mean, "std": Std}),
		"cardseg.classes":       j(ClassNames),
		"cardseg.architecture":  "lraspp_mobilenet_v3_large",
		"cardseg.arch":          j(c.Arch),
	}
}

// Inference builds the deployable model: eval forward with batch norm folded into the convs,
// input image float32 [N,3,H,W] (N symbolic), output logits float32 [N,K,H,W], weights as
// initializers, metadata describing I/O and normalisation. With c.FP16 the folded weights are
// stored as float16 and the network computes in float16 between a cast of the image and a
// cast of the logits, so the model's inputs and outputs are those of the FP32 model; its
// metadata adds cardseg.precision = fp16.
func Inference(c Config, w *model.Weights) (*graphs.Graph, error) {
	c.Batch = 1
	if err := c.validate(); err != nil {
		return nil, err
	}
	folded, err := model.FoldBN(c.Arch, w)
	if err != nil {
		return nil, err
	}
	g := graphs.New("cardseg_lraspp_mobilenet_v3_large")
	err = graphs.Build(func() error {
		image := g.Input(InputImage, graphs.Float, graphs.Shape{-1, 3, int64(c.Height), int64(c.Width)})
		out := model.Forward(g, computeInput(image, c), c.Arch, initSource{w: folded, half: c.FP16}, model.Folded)
		g.Output(OutLogits, lossInput(out.Logits))
		return nil
	})
	if err != nil {
		return nil, err
	}
	g.Metadata = InferenceMetadata(c)
	if c.FP16 {
		g.Metadata[MetaPrecision] = "fp16"
	}
	g.Doc = "LR-ASPP MobileNetV3-Large card segmentation (background=0, card=1), trained with cardseg-ort"
	return g, nil
}
