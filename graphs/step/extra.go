package step

import (
	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// BNStatName names the BNStats output that carries a batch statistic for a running buffer.
func BNStatName(buffer string) string { return "batch." + buffer }

// BNStats builds a training-mode forward that outputs, for every batch-norm layer, the batch
// mean and unbiased batch variance (batch.<bn>.running_mean / batch.<bn>.running_var). Averaged
// over several training batches they re-estimate the running statistics ("precise BN"), which
// with torchvision's momentum of 0.01 otherwise lag far behind the weights in short runs.
// Inputs: image (any batch size) and every network tensor. With c.FP16 the forward computes in
// float16 (statistics in float32, as in the FP16 train step).
func BNStats(c Config) (*graphs.Graph, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	g := graphs.New("bn_stats")
	err := graphs.Build(func() error {
		image := g.Input(InputImage, graphs.Float, graphs.Shape{int64(c.Batch), 3, int64(c.Height), int64(c.Width)})
		src := &inputSource{vals: map[string]*graphs.Value{}}
		out := model.Forward(g, computeInput(image, c), c.Arch, src, model.Train)
		for _, u := range out.BN {
			g.Output(BNStatName(u.Mean.Name), u.BatchMean)
			g.Output(BNStatName(u.Var.Name), u.BatchV())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Checkpoint builds the model a checkpoint stores: the eval-mode forward (batch norm with its
// running statistics, not folded, so every tensor keeps its torchvision name) with the weights
// as initializers; input image float32 [N,3,H,W], output logits. ONNX Runtime runs it as is.
// It is float32 whatever c.FP16 says: it holds the master weights.
func Checkpoint(c Config, w *model.Weights) (*graphs.Graph, error) {
	c.Batch = 1
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := c.Arch.Check(w); err != nil {
		return nil, err
	}
	g := graphs.New("cardseg_checkpoint")
	err := graphs.Build(func() error {
		image := g.Input(InputImage, graphs.Float, graphs.Shape{-1, 3, int64(c.Height), int64(c.Width)})
		out := model.Forward(g, image, c.Arch, initSource{w: w}, model.Eval)
		g.Output(OutLogits, out.Logits)
		return nil
	})
	if err != nil {
		return nil, err
	}
	g.Metadata = InferenceMetadata(c)
	return g, nil
}
