package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// TrainConfig is the one training configuration: the seed's defaults, a preset on top, then a
// config file, then flags. It is saved with every run and inside every checkpoint.
type TrainConfig struct {
	Data    string `json:"data"`    // dataset folder; empty: the built-in synthetic dataset
	Preset  string `json:"preset"`  // cpu, gpu or smoke (what was applied)
	Device  string `json:"device"`  // auto, cpu or cuda
	Threads int    `json:"threads"` // ORT intra-op threads (0: ORT's default)
	// Precision is fp32 or fp16 (mixed precision: FP16 compute, FP32 master weights, dynamic
	// loss scaling; for the GPU). CUDAGraph replays each train step as one captured CUDA graph.
	Precision string `json:"precision"`
	CUDAGraph bool   `json:"cuda_graph"`
	Workers   int    `json:"workers"` // data loader workers (0: one per core)
	Seed      uint64 `json:"seed"`

	Epochs    int     `json:"epochs"`
	Batch     int     `json:"batch"`
	Height    int     `json:"height"`
	Width     int     `json:"width"`
	WidthMult float64 `json:"width_mult"`

	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	AdamEps     float64 `json:"adam_eps"`
	LossDice    float64 `json:"loss_dice"`
	LossCE      float64 `json:"loss_ce"`
	ClipNorm    float64 `json:"clip_norm"` // 0: off

	Schedule     string  `json:"schedule"`      // cosine-restarts, step or constant
	WarmupEpochs float64 `json:"warmup_epochs"` // linear warm-up from 0
	CosineT0     float64 `json:"cosine_t0"`     // first cycle, epochs
	CosineTMult  float64 `json:"cosine_tmult"`  // each cycle is this much longer
	MinLR        float64 `json:"min_lr"`
	StepEvery    float64 `json:"step_every"` // step decay period, epochs
	StepGamma    float64 `json:"step_gamma"`

	Patience int     `json:"patience"`  // epochs without a better validation card IoU; 0: off
	MinDelta float64 `json:"min_delta"` // improvement that counts

	// BNRecalibBatches training batches (no augmentation) re-estimate every batch-norm layer's
	// statistics before each validation; 0 keeps the running averages.
	BNRecalibBatches int `json:"bn_recalib_batches"`
	CheckpointEvery  int `json:"checkpoint_every"` // epochs between periodic checkpoints; 0: off

	Augment   augment.Config `json:"augment"`
	NoAugment bool           `json:"no_augment"`
	SkipBad   bool           `json:"skip_bad"`

	SynthTrain int `json:"synth_train"` // images of the synthetic dataset when Data is empty
	SynthTest  int `json:"synth_test"`

	// MaxStepsPerEpoch caps an epoch (0: the whole training split); for smoke runs and tests.
	MaxStepsPerEpoch int `json:"max_steps_per_epoch"`

	// Arch, when set, replaces the MobileNetV3-Large table at WidthMult (a structurally pruned
	// network); Masked trains with a parameter mask (unstructured pruning's fine-tuning).
	Arch   *model.Arch `json:"arch,omitempty"`
	Masked bool        `json:"masked,omitempty"`
}

// DefaultTrainConfig is the seed's configuration: batch 8, 100 epochs, AdamW lr 1e-3, loss
// 0.5·Dice + 0.5·CE, augmentation on (rotation ±15°, brightness ±0.2, ...), 480×640.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Device: "auto", Seed: 42, Precision: "fp32",
		Epochs: 100, Batch: 8, Height: 480, Width: 640, WidthMult: 1,
		LR: 1e-3, WeightDecay: 0.01, Beta1: 0.9, Beta2: 0.999, AdamEps: 1e-8,
		LossDice: 0.5, LossCE: 0.5,
		Schedule: "cosine-restarts", WarmupEpochs: 1, CosineT0: 10, CosineTMult: 2, MinLR: 1e-6,
		StepEvery: 30, StepGamma: 0.1,
		Patience: 15, MinDelta: 1e-4,
		BNRecalibBatches: 16, CheckpointEvery: 10,
		Augment:    augment.Defaults(),
		SynthTrain: 2000, SynthTest: 200,
	}
}

// Presets names the presets.
var Presets = []string{"cpu", "gpu", "smoke"}

// ApplyPreset sets what a preset decides on top of the defaults.
//   - gpu: the seed's 480×640, batch 8, 100 epochs.
//   - cpu: 144×192 (the 3:4 frame at 0.3×) and 30 epochs of an 800-image synthetic set, one
//     cosine cycle: a 2-core machine finishes `just train` within the hour.
//   - smoke: a couple of minutes: 64×96, tiny synthetic data, 2 epochs.
func (c *TrainConfig) ApplyPreset(name string) error {
	switch name {
	case "gpu":
		c.Height, c.Width, c.Batch, c.Epochs = 480, 640, 8, 100
		c.Precision, c.CUDAGraph = "fp16", true
	case "cpu":
		c.Height, c.Width, c.Batch, c.Epochs = 144, 192, 8, 30
		c.CosineT0, c.CosineTMult, c.WarmupEpochs = 29, 1, 1 // one cycle after the warm-up
		c.Patience = 10
		c.SynthTrain, c.SynthTest = 800, 160
		c.BNRecalibBatches = 12
		c.CheckpointEvery = 5
	case "smoke":
		c.Height, c.Width, c.Batch, c.Epochs = 64, 96, 4, 2
		c.CosineT0, c.CosineTMult, c.WarmupEpochs = 2, 1, 0
		c.SynthTrain, c.SynthTest = 24, 8
		c.BNRecalibBatches = 2
		c.CheckpointEvery = 1
		c.Patience = 0
	default:
		return fmt.Errorf("unknown preset %q: want %s", name, strings.Join(Presets, ", "))
	}
	c.Preset = name
	return nil
}

// LoadConfigFile overlays a JSON config file on c (fields absent from the file keep their
// value). Unknown fields are an error naming the file.
func (c *TrainConfig) LoadConfigFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate reports the first impossible setting.
func (c TrainConfig) Validate() error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if c.Epochs < 1 {
		bad("epochs %d: want at least 1", c.Epochs)
	}
	if c.Batch < 1 {
		bad("batch %d: want at least 1", c.Batch)
	}
	if c.Height < 32 || c.Width < 32 || c.Height%16 != 0 || c.Width%16 != 0 {
		bad("size %dx%d: height and width must be multiples of 16, at least 32", c.Height, c.Width)
	}
	if c.WidthMult <= 0 {
		bad("width_mult %g: want > 0", c.WidthMult)
	}
	if c.Arch != nil {
		if err := c.Arch.Validate(); err != nil {
			bad("%v", err)
		}
	}
	if !(c.LR > 0) || math.IsInf(c.LR, 0) {
		bad("lr %g: want > 0", c.LR)
	}
	if c.MinLR < 0 || c.MinLR > c.LR {
		bad("min_lr %g: want 0 <= min_lr <= lr", c.MinLR)
	}
	if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
		bad("betas %g, %g: want [0, 1)", c.Beta1, c.Beta2)
	}
	if c.LossDice < 0 || c.LossCE < 0 || c.LossDice+c.LossCE == 0 {
		bad("loss weights dice %g, ce %g: want non-negative, not both 0", c.LossDice, c.LossCE)
	}
	switch c.Schedule {
	case "cosine-restarts":
		if c.CosineT0 <= 0 || c.CosineTMult < 1 {
			bad("cosine_t0 %g, cosine_tmult %g: want t0 > 0, tmult >= 1", c.CosineT0, c.CosineTMult)
		}
	case "step":
		if c.StepEvery <= 0 || c.StepGamma <= 0 || c.StepGamma > 1 {
			bad("step_every %g, step_gamma %g: want > 0 and (0, 1]", c.StepEvery, c.StepGamma)
		}
	case "constant":
	default:
		bad("schedule %q: want cosine-restarts, step or constant", c.Schedule)
	}
	if c.Precision != "" && c.Precision != "fp32" && c.Precision != "fp16" { // "": fp32 (older configs)
		bad("precision %q: want fp32 or fp16", c.Precision)
	}
	if c.WarmupEpochs < 0 || c.Patience < 0 || c.BNRecalibBatches < 0 || c.CheckpointEvery < 0 || c.ClipNorm < 0 {
		bad("warmup_epochs, patience, bn_recalib_batches, checkpoint_every and clip_norm must not be negative")
	}
	if c.Data == "" && (c.SynthTrain < c.Batch || c.SynthTest < 1) {
		bad("synthetic dataset %d/%d images: need at least one batch of training images and one test image", c.SynthTrain, c.SynthTest)
	}
	if !c.NoAugment {
		if err := c.Augment.Validate(); err != nil {
			bad("augment: %v", err)
		}
	}
	if len(errs) > 0 {
		return errors.New("config: " + strings.Join(errs, "; "))
	}
	return nil
}

// StepConfig is the graphs' view of the configuration.
func (c TrainConfig) StepConfig() step.Config {
	arch := model.MobileNetV3Large(c.WidthMult, 2)
	if c.Arch != nil {
		arch = *c.Arch
	}
	return step.Config{
		Arch:   arch,
		Masked: c.Masked,
		FP16:   c.Precision == "fp16",
		Batch:  c.Batch, Height: c.Height, Width: c.Width,
		Loss:     step.LossWeights{Dice: float32(c.LossDice), CE: float32(c.LossCE)},
		Adam:     step.AdamW{Beta1: float32(c.Beta1), Beta2: float32(c.Beta2), Eps: float32(c.AdamEps), WeightDecay: float32(c.WeightDecay)},
		ClipNorm: float32(c.ClipNorm),
	}
}

// AugmentConfig is the loader's augmentation (nil when off).
func (c TrainConfig) AugmentConfig() *augment.Config {
	if c.NoAugment {
		return nil
	}
	a := c.Augment
	return &a
}
