package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// GraphsCmd groups the graph tools.
type GraphsCmd struct {
	Build     GraphsBuildCmd     `cmd:"" help:"Write train_step.onnx, eval_step.onnx, inference.onnx and initial weights.safetensors."`
	CheckGrad GraphsCheckGradCmd `cmd:"" name:"check-grad" help:"One training-mode forward/backward on a given batch; writes loss and grad.<param> to compare with another framework."`
}

// netFlags are the architecture and input-size flags shared by graph commands.
type netFlags struct {
	Height      int     `help:"Input height (multiple of 16)." default:"480"`
	Width       int     `help:"Input width (multiple of 16)." default:"640"`
	WidthMult   float64 `name:"width-mult" help:"MobileNetV3 width multiplier." default:"1.0"`
	LossDice    float32 `name:"loss-dice" help:"Weight of the Dice loss." default:"0.5"`
	LossCE      float32 `name:"loss-ce" help:"Weight of the cross-entropy loss." default:"0.5"`
	ClipNorm    float32 `name:"clip-norm" help:"Clip the global gradient norm (0: off)." default:"0"`
	WeightDecay float32 `name:"weight-decay" help:"AdamW decoupled weight decay." default:"0.01"`
}

func (f netFlags) config(batch int) step.Config {
	adam := step.DefaultAdamW
	adam.WeightDecay = f.WeightDecay
	return step.Config{
		Arch:  model.MobileNetV3Large(f.WidthMult, 2),
		Batch: batch, Height: f.Height, Width: f.Width,
		Loss: step.LossWeights{Dice: f.LossDice, CE: f.LossCE}, Adam: adam, ClipNorm: f.ClipNorm,
	}
}

// GraphsBuildCmd writes the three graphs and initial weights.
type GraphsBuildCmd struct {
	Out   string `help:"Output folder." required:"" type:"path"`
	Batch int    `help:"Train-step batch size (eval and inference take any batch)." default:"8"`
	Seed  uint64 `help:"Seed of the initial weights." default:"0"`
	netFlags
}

func (c *GraphsBuildCmd) Run(log *zerolog.Logger) error {
	cfg := c.config(c.Batch)
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	w := model.Init(cfg.Arch, c.Seed)
	train, err := step.TrainStep(cfg)
	if err != nil {
		return err
	}
	eval, err := step.EvalStep(cfg)
	if err != nil {
		return err
	}
	inf, err := step.Inference(cfg, w)
	if err != nil {
		return err
	}
	for _, item := range []struct {
		name string
		g    *graphs.Graph
	}{{"train_step.onnx", train}, {"eval_step.onnx", eval}, {"inference.onnx", inf}} {
		b, err := item.g.Marshal()
		if err != nil {
			return err
		}
		path := filepath.Join(c.Out, item.name)
		if err := pipeline.WriteFileAtomic(path, b); err != nil {
			return err
		}
		log.Info().Str("file", path).Int("nodes", len(item.g.Nodes())).Int("bytes", len(b)).Msg("wrote graph")
	}
	wp := filepath.Join(c.Out, "weights.safetensors")
	if err := cfg.Arch.SaveWeights(wp, w, map[string]string{"seed": fmt.Sprint(c.Seed), "architecture": "lraspp_mobilenet_v3_large"}); err != nil {
		return err
	}
	log.Info().Str("file", wp).Int("parameters", cfg.Arch.TrainableCount()).Msg("wrote initial weights")
	return nil
}

// GraphsCheckGradCmd runs one forward/backward and writes the gradients.
type GraphsCheckGradCmd struct {
	Weights string `help:"Weights (safetensors, torchvision names)." required:"" type:"existingfile"`
	Batch   string `help:"Batch (safetensors): image float32 [N,3,H,W] normalised, target int64 or uint8 [N,H,W]." required:"" type:"existingfile"`
	Out     string `help:"Output safetensors: loss, loss_ce, loss_dice and grad.<param>." required:"" type:"path"`
	Device  string `help:"auto, cpu or cuda." default:"cpu"`
	netFlags
}

func (c *GraphsCheckGradCmd) Run(log *zerolog.Logger) error {
	bf, err := safetensors.ReadFile(c.Batch)
	if err != nil {
		return err
	}
	imgT, ok := bf.Tensors["image"]
	if !ok || len(imgT.Shape) != 4 || imgT.Shape[1] != 3 {
		return fmt.Errorf("%s: need tensor image [N,3,H,W], have %v", c.Batch, bf.Names())
	}
	tgtT, ok := bf.Tensors["target"]
	n, h, w := imgT.Shape[0], imgT.Shape[2], imgT.Shape[3]
	if !ok || len(tgtT.Shape) != 3 || tgtT.Shape[0] != n || tgtT.Shape[1] != h || tgtT.Shape[2] != w {
		return fmt.Errorf("%s: need tensor target [%d,%d,%d] matching the image", c.Batch, n, h, w)
	}
	img, err := imgT.Float32s()
	if err != nil {
		return fmt.Errorf("%s: image: %w", c.Batch, err)
	}
	tgt, err := tgtT.Int64s()
	if err != nil {
		return fmt.Errorf("%s: target: %w", c.Batch, err)
	}
	for i, v := range tgt {
		if v != 0 && v != 1 {
			return fmt.Errorf("%s: target[%d] = %d; classes are 0 (background) and 1 (card)", c.Batch, i, v)
		}
	}
	c.Height, c.Width = int(h), int(w)
	cfg := c.config(int(n))
	weights, err := cfg.Arch.LoadWeights(c.Weights)
	if err != nil {
		return err
	}
	g, err := step.GradGraph(cfg)
	if err != nil {
		return err
	}
	b, err := g.Marshal()
	if err != nil {
		return err
	}
	prov, err := runtime.ParseProvider(c.Device)
	if err != nil {
		return err
	}
	sess, err := runtime.NewSession("grad_check", b, runtime.SessionOptions{Provider: prov})
	if err != nil {
		return err
	}
	defer sess.Close()
	feeds := map[string]*runtime.Tensor{
		step.InputImage:  runtime.MustNew([]int64{n, 3, h, w}, img),
		step.InputTarget: runtime.MustNew([]int64{n, h, w}, tgt),
	}
	for _, p := range cfg.Arch.Params() {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), weights.Tensors[p.Name])
	}
	out, err := sess.Run(feeds)
	if err != nil {
		return err
	}
	f := safetensors.File{Tensors: map[string]safetensors.Tensor{}}
	names := make([]string, 0, len(out))
	for k := range out {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t := out[k]
		st, err := safetensors.FromFloat32(runtime.Data[float32](t), t.Shape...)
		if err != nil {
			return err
		}
		f.Tensors[k] = st
	}
	if err := safetensors.WriteFile(c.Out, f); err != nil {
		return err
	}
	log.Info().Str("file", c.Out).Float32("loss", runtime.Data[float32](out[step.OutLoss])[0]).Int("gradients", len(names)-3).Msg("wrote gradients")
	return nil
}
