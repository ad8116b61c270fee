package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
	"github.com/cardseg-ort/cardseg-ort/tools/synth"
)

// TrainCmd trains the network. Settings come from the seed's defaults, then --preset, then
// --config, then the flags given explicitly.
type TrainCmd struct {
	Data     string `help:"Dataset folder (DIR/{train,test}/{image,mask}); default: the built-in synthetic dataset." type:"path"`
	Out      string `help:"Run folder (checkpoints, logs, plots, config). Default: runs/<time>." type:"path"`
	Preset   string `help:"cpu, gpu or smoke; default: gpu when a CUDA GPU is usable, else cpu." enum:",cpu,gpu,smoke" default:""`
	Config   string `help:"JSON config file (fields of config.json in a run folder)." type:"existingfile"`
	Resume   string `help:"Continue a checkpoint (RUN/checkpoints/last.onnx) exactly, with its run's configuration (only --device, --precision, --cuda-graph, --threads and --workers may change)." type:"existingfile"`
	Init     string `help:"Start from these weights instead of a random initialisation: a .safetensors file by torchvision names (tensors it lacks keep their random start; a MobileNetV3-Large classifier's features.N tensors fill the backbone) or a .onnx checkpoint (weights only; fresh optimizer and schedule)." type:"existingfile"`
	SynthDir string `name:"synth-dir" help:"Where the synthetic dataset is generated (reused when present)." default:"data" type:"path"`

	Device      *string  `help:"auto, cpu or cuda."`
	Threads     *int     `help:"ONNX Runtime intra-op threads (0: all cores)."`
	Precision   *string  `help:"fp32 or fp16 (mixed precision, for the GPU; the gpu preset's choice)." enum:"fp32,fp16"`
	CUDAGraph   *bool    `name:"cuda-graph" help:"Replay each train step as one captured CUDA graph (the gpu preset's choice)." negatable:""`
	Workers     *int     `help:"Data loader workers (0: one per core)."`
	Seed        *uint64  `help:"Seed of initialisation, data order and augmentation."`
	Epochs      *int     `help:"Epochs."`
	Batch       *int     `help:"Batch size."`
	Height      *int     `help:"Input height (multiple of 16)."`
	Width       *int     `help:"Input width (multiple of 16)."`
	WidthMult   *float64 `name:"width-mult" help:"MobileNetV3 width multiplier."`
	LR          *float64 `name:"lr" help:"Peak learning rate."`
	WeightDecay *float64 `name:"weight-decay" help:"AdamW decoupled weight decay."`
	LossDice    *float64 `name:"loss-dice" help:"Weight of the Dice loss."`
	LossCE      *float64 `name:"loss-ce" help:"Weight of the cross-entropy loss."`
	ClipNorm    *float64 `name:"clip-norm" help:"Clip the global gradient norm (0: off)."`
	Schedule    *string  `help:"cosine-restarts, step or constant."`
	Warmup      *float64 `name:"warmup-epochs" help:"Linear warm-up, epochs."`
	CosineT0    *float64 `name:"cosine-t0" help:"First cosine cycle, epochs."`
	CosineTMult *float64 `name:"cosine-tmult" help:"Growth of each cosine cycle."`
	MinLR       *float64 `name:"min-lr" help:"Learning rate at the bottom of a cosine cycle."`
	StepEvery   *float64 `name:"step-every" help:"Step decay period, epochs."`
	StepGamma   *float64 `name:"step-gamma" help:"Step decay factor."`
	Patience    *int     `help:"Early stopping: epochs without a better validation card IoU (0: off)."`
	BNRecalib   *int     `name:"bn-recalib" help:"Training batches that re-estimate batch-norm statistics before validation (0: off)."`
	CkptEvery   *int     `name:"checkpoint-every" help:"Epochs between periodic checkpoints (0: off)."`
	NoAugment   *bool    `name:"no-augment" help:"Turn augmentation off."`
	Rotation    *float64 `help:"Augmentation: rotation range, ± degrees."`
	Brightness  *float64 `help:"Augmentation: brightness range, ± fraction of full scale."`
	SkipBad     *bool    `name:"skip-bad" help:"Train on the usable pairs of a dataset with bad files (they are reported and counted)."`
	SynthTrain  *int     `name:"synth-train" help:"Training images of the synthetic dataset."`
	SynthTest   *int     `name:"synth-test" help:"Test images of the synthetic dataset."`
	MaxSteps    *int     `name:"max-steps-per-epoch" help:"Cap on steps per epoch (0: whole split)."`
}

func (c *TrainCmd) config() (pipeline.TrainConfig, error) {
	cfg := pipeline.DefaultTrainConfig()
	preset := c.Preset
	if preset == "" {
		preset = "cpu"
		if c.Device == nil || *c.Device != "cpu" {
			if p, err := runtime.ResolveProvider(runtime.ProviderAuto); err == nil && p == runtime.ProviderCUDA {
				preset = "gpu"
			}
		}
	}
	if err := cfg.ApplyPreset(preset); err != nil {
		return cfg, err
	}
	if c.Config != "" {
		if err := cfg.LoadConfigFile(c.Config); err != nil {
			return cfg, err
		}
	}
	if c.Data != "" {
		cfg.Data = c.Data
	}
	setIf(&cfg.Device, c.Device)
	setIf(&cfg.Threads, c.Threads)
	setIf(&cfg.Precision, c.Precision)
	setIf(&cfg.CUDAGraph, c.CUDAGraph)
	setIf(&cfg.Workers, c.Workers)
	setIf(&cfg.Seed, c.Seed)
	setIf(&cfg.Epochs, c.Epochs)
	setIf(&cfg.Batch, c.Batch)
	setIf(&cfg.Height, c.Height)
	setIf(&cfg.Width, c.Width)
	setIf(&cfg.WidthMult, c.WidthMult)
	setIf(&cfg.LR, c.LR)
	setIf(&cfg.WeightDecay, c.WeightDecay)
	setIf(&cfg.LossDice, c.LossDice)
	setIf(&cfg.LossCE, c.LossCE)
	setIf(&cfg.ClipNorm, c.ClipNorm)
	setIf(&cfg.Schedule, c.Schedule)
	setIf(&cfg.WarmupEpochs, c.Warmup)
	setIf(&cfg.CosineT0, c.CosineT0)
	setIf(&cfg.CosineTMult, c.CosineTMult)
	setIf(&cfg.MinLR, c.MinLR)
	setIf(&cfg.StepEvery, c.StepEvery)
	setIf(&cfg.StepGamma, c.StepGamma)
	setIf(&cfg.Patience, c.Patience)
	setIf(&cfg.BNRecalibBatches, c.BNRecalib)
	setIf(&cfg.CheckpointEvery, c.CkptEvery)
	setIf(&cfg.NoAugment, c.NoAugment)
	setIf(&cfg.Augment.RotateDegrees, c.Rotation)
	setIf(&cfg.Augment.BrightnessLimit, c.Brightness)
	setIf(&cfg.SkipBad, c.SkipBad)
	setIf(&cfg.SynthTrain, c.SynthTrain)
	setIf(&cfg.SynthTest, c.SynthTest)
	setIf(&cfg.MaxStepsPerEpoch, c.MaxSteps)
	return cfg, cfg.Validate()
}

// setIf sets *dst to *src when the flag src was given (non-nil).
func setIf[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// resumeOverrides applies to a resumed run's configuration the settings that change how it
// runs but not what it computes (device, precision — the checkpoint holds FP32 master weights
// either way —, CUDA graphs, threads, loader workers), and refuses every flag that would
// change the result, which a resume would otherwise silently ignore.
func (c *TrainCmd) resumeOverrides(cfg *pipeline.TrainConfig) error {
	execution := map[string]bool{"Device": true, "Threads": true, "Workers": true, "Precision": true, "CUDAGraph": true}
	var refused []string
	v, t := reflect.ValueOf(c).Elem(), reflect.TypeOf(c).Elem()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Pointer || v.Field(i).IsNil() || execution[f.Name] {
			continue
		}
		name := f.Tag.Get("name")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		refused = append(refused, "--"+name)
	}
	for flag, given := range map[string]bool{"--data": c.Data != "", "--preset": c.Preset != "", "--config": c.Config != ""} {
		if given {
			refused = append(refused, flag)
		}
	}
	if len(refused) > 0 {
		sort.Strings(refused)
		return fmt.Errorf("--resume continues %s exactly, with the configuration it was started with; %s would change it (to train on from these weights with other settings, start a new run with --init %s)",
			c.Resume, strings.Join(refused, ", "), c.Resume)
	}
	setIf(&cfg.Device, c.Device)
	setIf(&cfg.Threads, c.Threads)
	setIf(&cfg.Workers, c.Workers)
	setIf(&cfg.Precision, c.Precision)
	setIf(&cfg.CUDAGraph, c.CUDAGraph)
	return cfg.Validate()
}

func (c *TrainCmd) Run(g *Globals, log *zerolog.Logger) error {
	var resume *pipeline.Checkpoint
	var cfg pipeline.TrainConfig
	var err error
	if c.Resume != "" {
		resume, err = pipeline.LoadCheckpoint(c.Resume)
		if err != nil {
			return err
		}
		cfg = resume.Progress.Config // a resumed run keeps its configuration
		if err := c.resumeOverrides(&cfg); err != nil {
			return err
		}
		if p := resume.Progress; p.Epoch >= cfg.Epochs && p.BatchInEpoch == 0 {
			fmt.Printf("%s: the run already finished (epoch %d of %d); nothing to resume\n", c.Resume, p.Epoch, cfg.Epochs)
			if p.BestIoU >= 0 {
				fmt.Printf("best model: %s (epoch %d, validation card IoU %.4f)\n",
					filepath.Join(filepath.Dir(c.Resume), pipeline.BestName), p.BestEpoch, p.BestIoU)
			}
			return nil
		}
		if c.Out == "" {
			c.Out = filepath.Dir(filepath.Dir(c.Resume))
		}
	} else if cfg, err = c.config(); err != nil {
		return err
	}
	if c.Out == "" {
		c.Out = filepath.Join("runs", time.Now().Format("20060102-150405"))
	}
	if err := runtime.Init(); err != nil {
		return err
	}
	prov, err := runtime.ParseProvider(cfg.Device)
	if err != nil {
		return err
	}
	if prov, err = runtime.ResolveProvider(prov); err != nil {
		return err
	}
	cfg.Device = string(prov)

	// Ctrl-C / SIGTERM: finish the current step, save, exit 130. A second signal kills.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	finished := make(chan struct{})
	defer func() { close(finished); stop() }()
	go func() {
		select {
		case <-finished: // a normal return, not a signal
			return
		case <-ctx.Done():
		}
		stop() // the next signal uses the default action
		log.Warn().Msg("stopping after the current step (press Ctrl-C again to abort without saving)")
	}()

	if cfg.Data == "" {
		dir, err := ensureSynthDataset(ctx, c.SynthDir, cfg, log)
		if err != nil {
			return err
		}
		cfg.Data = dir
	}
	ds, err := pipeline.OpenDataset(ctx, cfg.Data, pipeline.DatasetOptions{SkipBad: cfg.SkipBad})
	if err != nil {
		var de *pipeline.DatasetError
		if errors.As(err, &de) {
			de.Report.WriteText(os.Stderr)
			return fmt.Errorf("dataset %s has problems (listed above); fix them or pass --skip-bad to train on the usable pairs", cfg.Data)
		}
		return err
	}
	for _, s := range ds.Report.Splits {
		if s.Skipped > 0 {
			log.Warn().Str("split", s.Name).Int("skipped", s.Skipped).Int("usable", s.Usable).Msg("skipping bad pairs (--skip-bad)")
		}
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	var sink pipeline.ProgressSink = &pipeline.LineProgress{Log: *log, Every: 30 * time.Second}
	if g.LogFormat == "console" && pipeline.IsTerminal(os.Stderr) {
		sink = &pipeline.BarProgress{W: os.Stderr}
	}
	log.Info().Str("run", c.Out).Str("data", cfg.Data).Str("preset", cfg.Preset).Str("device", cfg.Device).Msg("training")
	tr := &pipeline.Trainer{Cfg: cfg, RunDir: c.Out, Log: *log, Dataset: ds, Progress: sink, Resume: resume,
		Session: runtime.SessionOptions{Provider: prov, IntraOpThreads: cfg.Threads}}
	if c.Init != "" {
		if resume != nil {
			return fmt.Errorf("--init and --resume exclude each other: a resumed run continues its own weights")
		}
		if tr.Init, err = initialWeights(c.Init, cfg, log); err != nil {
			return err
		}
	}
	res, err := tr.Train(ctx)
	if errors.Is(err, pipeline.ErrInterrupted) {
		fmt.Fprintf(os.Stderr, "interrupted at step %d; resume with: cardseg-ort train --resume %s\n", res.Steps, res.Last)
		return &exitError{code: 130, err: err}
	}
	if err != nil {
		return err
	}
	fmt.Printf("training finished (%s) after %d epochs, %d steps, %.1f img/s\n", res.StoppedBy, res.Epochs, res.Steps, res.TrainImgPS)
	if res.Best != "" {
		fmt.Printf("best model: %s (epoch %d)\n", res.Best, res.BestEpoch)
		fmt.Printf("validation: card IoU %.4f, Dice %.4f, pixel accuracy %.4f, loss %.4f (%d images)\n",
			res.BestVal.IoU, res.BestVal.Dice, res.BestVal.PixelAccuracy, res.BestVal.Loss, res.BestVal.Images)
	}
	fmt.Printf("run folder: %s (logs/metrics.jsonl, plots/, config.json)\n", c.Out)
	return nil
}

// initialWeights reads --init: a safetensors file laid over the seeded random start, or the
// weights of an ONNX checkpoint of the same architecture.
func initialWeights(path string, cfg pipeline.TrainConfig, log *zerolog.Logger) (*pipeline.State, error) {
	arch := cfg.StepConfig().Arch
	if strings.HasSuffix(strings.ToLower(path), ".onnx") {
		ck, err := pipeline.LoadCheckpoint(path)
		if err != nil {
			return nil, err
		}
		if err := arch.Check(ck.State.Weights); err != nil {
			return nil, fmt.Errorf("--init %s: %w", path, err)
		}
		log.Info().Str("init", path).Msg("starting from the checkpoint's weights")
		return &pipeline.State{Weights: ck.State.Weights}, nil
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--init: %w", err)
	}
	w := model.Init(arch, cfg.Seed)
	r, err := arch.Overlay(w, f, path)
	if err != nil {
		return nil, fmt.Errorf("--init: %w", err)
	}
	ev := log.Info().Str("init", path).Int("loaded", len(r.Loaded)).Int("random", len(r.Kept)).Int("unused", len(r.Unused))
	if r.Renamed > 0 {
		ev = ev.Int("from_features", r.Renamed)
	}
	ev.Msg("starting from pretrained weights")
	if len(r.Unused) > 0 {
		log.Debug().Strs("unused", r.Unused).Msg("tensors of --init that the network has no place for")
	}
	return &pipeline.State{Weights: w}, nil
}

// ensureSynthDataset generates the built-in synthetic dataset for cfg (or reuses a complete
// one from an earlier run) under root, and returns its folder. Pictures are rendered at twice
// the training size (at most 480×640) so that resizing and augmentation work on detail, as they
// would on photos. Generation goes to a temporary folder renamed into place when complete, so
// an interrupted generation is never mistaken for a dataset.
func ensureSynthDataset(ctx context.Context, root string, cfg pipeline.TrainConfig, log *zerolog.Logger) (string, error) {
	h, w := 2*cfg.Height, 2*cfg.Width
	if h > synth.DefaultHeight || w > synth.DefaultWidth {
		h, w = synth.DefaultHeight, synth.DefaultWidth
	}
	dir := filepath.Join(root, fmt.Sprintf("synth-s%d-%d-%d-%dx%d", cfg.Seed, cfg.SynthTrain, cfg.SynthTest, h, w))
	if _, err := os.Stat(filepath.Join(dir, "train")); err == nil {
		log.Info().Str("dir", dir).Msg("using the synthetic dataset generated earlier")
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(root, ".synth-tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	log.Info().Int("train", cfg.SynthTrain).Int("test", cfg.SynthTest).Str("size", fmt.Sprintf("%dx%d", h, w)).Str("dir", dir).Msg("generating the synthetic dataset")
	start := time.Now()
	last := time.Now()
	err = synth.Generate(ctx, synth.Options{Out: tmp, Train: cfg.SynthTrain, Test: cfg.SynthTest, Seed: cfg.Seed, Height: h, Width: w, Workers: cfg.Workers},
		func(done, total int) {
			if time.Since(last) > 10*time.Second {
				last = time.Now()
				log.Info().Int("done", done).Int("total", total).Msg("generating")
			}
		})
	if err != nil {
		return "", fmt.Errorf("synthetic dataset: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	log.Info().Dur("took", time.Since(start).Round(time.Second)).Msg("synthetic dataset ready")
	return dir, nil
}
