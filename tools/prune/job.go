package prune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Stages of a report.
const (
	StageBefore    = "before"
	StagePruned    = "pruned"
	StageFineTuned = "fine-tuned"
)

// FineTune configures the fine-tuning run after pruning. Its settings also go into the output
// checkpoint's configuration, so that `train --resume OUT` runs this fine-tuning when the
// job did not.
type FineTune struct {
	Run    bool
	Epochs int
	// LR is the peak learning rate (a cosine decay over Epochs, no warm-up); 0: a tenth of the
	// checkpoint's.
	LR float64
	// Dir is the run folder (checkpoints, logs, plots); "": next to the output, OUT less its
	// extension plus ".finetune".
	Dir string
	// MaxStepsPerEpoch caps an epoch (0: the checkpoint's setting).
	MaxStepsPerEpoch int
}

// Job is one pruning command.
type Job struct {
	Checkpoint string // input checkpoint
	Out        string // output checkpoint
	Options    Options
	// RemoveMasks drops the parameter mask from the output (after fine-tuning, if any): the
	// zeros stay, nothing keeps them zero in later training.
	RemoveMasks bool
	// Data replaces the dataset the checkpoint's configuration names.
	Data string
	// NoEval prunes without data: no IoU or Dice, no batch-norm re-estimation, no fine-tuning.
	NoEval bool
	// BNBatches training batches re-estimate batch-norm statistics after pruning; 0: the
	// checkpoint's bn_recalib_batches (16 if that is 0); negative: off.
	BNBatches int
	FineTune  FineTune
	// Session runs validation, statistics and training (provider, threads).
	Session runtime.SessionOptions
	// Latency configures the latency rounds (Runs 0: no latency measurement).
	Latency  LatencyOptions
	Log      zerolog.Logger
	Progress pipeline.ProgressSink // fine-tuning progress; may be nil
}

// Report is what a job measured and did.
type Report struct {
	Checkpoint string        `json:"checkpoint"`
	Out        string        `json:"out"`
	Method     string        `json:"method"` // structured or unstructured
	Amount     float64       `json:"amount"`
	Scope      Scope         `json:"scope"`
	Criterion  string        `json:"criterion"`
	Squeeze    bool          `json:"squeeze,omitempty"`
	Head       bool          `json:"head,omitempty"`
	Multiple   int           `json:"channel_multiple,omitempty"`
	Data       string        `json:"data,omitempty"`
	Size       [2]int        `json:"size"` // H, W of the measured models
	BNBatches  int           `json:"bn_recalib_batches"`
	Stages     []Measurement `json:"stages"`
	// Layers: every conv weight's sparsity in the output (unstructured pruning).
	Layers []LayerSparsity `json:"layers,omitempty"`
	// Channels: every channel group's width before and after (structured pruning).
	Channels []ChannelChange `json:"channels,omitempty"`
	// PrunedWeights is the number of weights the output's mask holds at zero (or that the
	// removed mask held), MaskKept whether the output still carries the mask.
	PrunedWeights int             `json:"pruned_weights,omitempty"`
	MaskKept      bool            `json:"mask_kept"`
	FineTune      *FineTuneReport `json:"fine_tune,omitempty"`
	Seconds       float64         `json:"seconds"`
}

// FineTuneReport describes the fine-tuning run.
type FineTuneReport struct {
	RunDir    string  `json:"run_dir"`
	Epochs    int     `json:"epochs"`
	Steps     int64   `json:"steps"`
	LR        float64 `json:"lr"`
	BestEpoch int     `json:"best_epoch"` // the epoch whose weights were kept (best test card IoU)
	// MaskedNonZero counts masked weights that fine-tuning moved off zero (always 0; checked).
	MaskedNonZero int `json:"masked_nonzero"`
}

// Stage returns the measurement of a stage (nil if absent).
func (r *Report) Stage(name string) *Measurement {
	for i := range r.Stages {
		if r.Stages[i].Stage == name {
			return &r.Stages[i]
		}
	}
	return nil
}

// Run executes the job: measure, prune, re-estimate batch-norm statistics, measure, write the
// output, optionally fine-tune, measure and write again, then time every stage's model.
func (j *Job) Run(ctx context.Context) (*Report, error) {
	start := time.Now()
	opts := j.Options.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if j.Out == "" {
		return nil, errors.New("prune: no output path")
	}
	if same, err := samePath(j.Checkpoint, j.Out); err != nil {
		return nil, err
	} else if same {
		return nil, fmt.Errorf("prune: the output %s is the input checkpoint; write the pruned model elsewhere", j.Out)
	}
	if j.NoEval && j.FineTune.Run {
		return nil, errors.New("prune: fine-tuning needs data; drop --no-eval")
	}
	if j.FineTune.Run && j.FineTune.Epochs < 1 {
		return nil, fmt.Errorf("prune: %d fine-tuning epochs, want at least 1", j.FineTune.Epochs)
	}
	ck, err := pipeline.LoadCheckpoint(j.Checkpoint)
	if err != nil {
		return nil, err
	}
	cfg := ck.Progress.Config
	sc := cfg.StepConfig()
	st := ck.State

	rep := &Report{Checkpoint: j.Checkpoint, Out: j.Out, Amount: opts.Amount, Scope: opts.Scope,
		Size: [2]int{cfg.Height, cfg.Width}, Method: "unstructured", Criterion: "magnitude (L1)"}
	if opts.Structured {
		rep.Method, rep.Criterion = "structured", string(opts.Criterion)
		rep.Squeeze, rep.Head, rep.Multiple = opts.Squeeze, opts.Head, opts.Multiple
	}

	var ev *evaluator
	if !j.NoEval {
		dir := j.Data
		if dir == "" {
			dir = cfg.Data
		}
		if dir == "" {
			return nil, fmt.Errorf("prune: the checkpoint's configuration names no dataset; pass --data DIR (or --no-eval)")
		}
		ds, err := pipeline.OpenDataset(ctx, dir, pipeline.DatasetOptions{SkipBad: cfg.SkipBad})
		if err != nil {
			return nil, fmt.Errorf("prune: dataset of %s: %w (pass --data DIR, or --no-eval to prune without data)", j.Checkpoint, err)
		}
		if len(ds.Test) == 0 {
			j.Log.Warn().Str("data", dir).Msg("the dataset has no test split: no IoU or Dice")
		}
		cfg.Data, rep.Data = dir, dir
		ev = &evaluator{ds: ds, cfg: cfg, session: j.Session}
	}

	// Before.
	before, err := j.measure(ctx, StageBefore, ev, sc, st.Weights)
	if err != nil {
		return nil, err
	}
	rep.Stages = append(rep.Stages, before)

	// Prune.
	res, err := Prune(st.Arch, st.Weights, st.Mask, opts)
	if err != nil {
		return nil, err
	}
	rep.Channels = res.Channels
	out := cfg
	if opts.Structured {
		a := res.Arch
		out.Arch = &a
	}
	out.Masked = res.Mask != nil
	psc := out.StepConfig()
	j.logPruning(res)

	// Re-estimate batch-norm statistics: removed channels and zeroed weights change what every
	// later layer sees, and the running averages describe the network before pruning.
	if ev != nil && j.BNBatches >= 0 {
		n := j.BNBatches
		if n == 0 {
			n = cfg.BNRecalibBatches
		}
		if n == 0 {
			n = 16
		}
		if rep.BNBatches, err = ev.recalibrate(ctx, psc, res.Weights, n); err != nil {
			return nil, fmt.Errorf("prune: batch-norm statistics of the pruned model: %w", err)
		}
		j.Log.Info().Int("batches", rep.BNBatches).Msg("re-estimated batch-norm statistics")
	}
	pruned, err := j.measure(ctx, StagePruned, ev, psc, res.Weights)
	if err != nil {
		return nil, err
	}
	rep.Stages = append(rep.Stages, pruned)

	// The output's configuration is the fine-tuning run's, so `train --resume OUT` fine-tunes.
	ftCfg := j.fineTuneConfig(out)
	final := &pipeline.State{Arch: res.Arch, Weights: res.Weights, Mask: res.Mask}
	progress := pipeline.Progress{BestIoU: -1}
	keepMask := !j.RemoveMasks || j.FineTune.Run
	if err := j.save(ftCfg, final, progress, keepMask); err != nil {
		return nil, err
	}

	if j.FineTune.Run {
		ft, st2, p2, err := j.fineTune(ctx, ftCfg, ev.ds, final)
		if err != nil {
			return nil, err
		}
		rep.FineTune = ft
		final, progress = st2, p2
		m, err := j.measure(ctx, StageFineTuned, ev, psc, final.Weights)
		if err != nil {
			return nil, err
		}
		rep.Stages = append(rep.Stages, m)
		if err := j.save(ftCfg, final, progress, !j.RemoveMasks); err != nil {
			return nil, err
		}
	}
	if final.Mask != nil {
		rep.PrunedWeights, _ = MaskedZeros(final.Arch, final.Weights, final.Mask)
	}
	rep.MaskKept = final.Mask != nil && !j.RemoveMasks
	if !opts.Structured {
		rep.Layers = Sparsity(final.Arch, final.Weights)
	}

	if j.Latency.Runs > 0 {
		models := make([][]byte, len(rep.Stages))
		for i, s := range rep.Stages {
			models[i] = s.model
		}
		j.Log.Info().Int("models", len(models)).Int("runs", j.Latency.Runs).Int("threads", j.Latency.Threads).Msg("timing batch-1 CPU latency")
		lat, err := Latencies(ctx, models, cfg.Height, cfg.Width, j.Latency)
		if err != nil {
			return nil, err
		}
		for i := range rep.Stages {
			rep.Stages[i].LatencyMS = float64(lat[i].Median.Microseconds()) / 1000
			rep.Stages[i].LatencyMinMS = float64(lat[i].Min.Microseconds()) / 1000
			rep.Stages[i].LatencyRuns = j.Latency.Runs
		}
	}
	rep.Seconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// measure describes a stage's model and, with data, scores it.
func (j *Job) measure(ctx context.Context, stage string, ev *evaluator, sc step.Config, w *model.Weights) (Measurement, error) {
	m, err := describeModel(stage, sc, w)
	if err != nil {
		return m, err
	}
	if ev != nil {
		if m.Val, err = ev.quality(ctx, sc, w); err != nil {
			return m, fmt.Errorf("prune: %s: %w", stage, err)
		}
	}
	ev2 := j.Log.Info().Str("stage", stage).Int("params", m.Params).Int("nonzero", m.NonZero).Int64("file_bytes", m.FileBytes)
	if m.Val != nil {
		ev2 = ev2.Float64("card_iou", round4(m.Val.IoU)).Float64("card_dice", round4(m.Val.Dice))
	}
	ev2.Msg("measured")
	return m, nil
}

// fineTuneConfig is the pruned model's training configuration: a cosine decay from the
// fine-tuning learning rate over its epochs, no warm-up, no early stopping.
func (j *Job) fineTuneConfig(c pipeline.TrainConfig) pipeline.TrainConfig {
	lr := j.FineTune.LR
	if lr <= 0 {
		lr = c.LR / 10
	}
	if j.FineTune.Epochs > 0 {
		c.Epochs = j.FineTune.Epochs
	}
	c.LR = lr
	c.MinLR = math.Min(c.MinLR, lr)
	if p := j.Session.Provider; p != "" && p != runtime.ProviderAuto {
		c.Device = string(p)
	}
	c.Schedule, c.CosineT0, c.CosineTMult, c.WarmupEpochs = "cosine-restarts", float64(c.Epochs), 1, 0
	c.Patience, c.CheckpointEvery = 0, 0
	if j.FineTune.MaxStepsPerEpoch > 0 {
		c.MaxStepsPerEpoch = j.FineTune.MaxStepsPerEpoch
	}
	return c
}

// fineTune trains the pruned model (with its mask) and returns the best epoch's state.
func (j *Job) fineTune(ctx context.Context, cfg pipeline.TrainConfig, ds *pipeline.Dataset, init *pipeline.State) (*FineTuneReport, *pipeline.State, pipeline.Progress, error) {
	dir := j.FineTune.Dir
	if dir == "" {
		dir = strings.TrimSuffix(j.Out, filepath.Ext(j.Out)) + ".finetune"
	}
	j.Log.Info().Str("run", dir).Int("epochs", cfg.Epochs).Float64("lr", cfg.LR).Bool("masked", cfg.Masked).Msg("fine-tuning")
	tr := &pipeline.Trainer{Cfg: cfg, RunDir: dir, Log: j.Log, Dataset: ds, Progress: j.Progress, Init: init, Session: j.Session}
	res, err := tr.Train(ctx)
	if errors.Is(err, pipeline.ErrInterrupted) {
		return nil, nil, pipeline.Progress{}, fmt.Errorf("prune: fine-tuning interrupted; %s holds the pruned model before fine-tuning; continue with: cardseg-ort train --resume %s: %w", j.Out, res.Last, err)
	}
	if err != nil {
		return nil, nil, pipeline.Progress{}, fmt.Errorf("prune: fine-tuning (%s): %w", dir, err)
	}
	path := res.Best
	if path == "" {
		path = res.Last
	}
	ck, err := pipeline.LoadCheckpoint(path)
	if err != nil {
		return nil, nil, pipeline.Progress{}, err
	}
	rep := &FineTuneReport{RunDir: dir, Epochs: res.Epochs, Steps: res.Steps, LR: cfg.LR, BestEpoch: ck.Progress.Epoch}
	if init.Mask != nil {
		// The train step multiplies updates by the mask; check that the weights agree.
		_, rep.MaskedNonZero = MaskedZeros(ck.State.Arch, ck.State.Weights, ck.State.Mask)
		if rep.MaskedNonZero > 0 || len(ck.State.Mask) != len(init.Mask) {
			return rep, nil, pipeline.Progress{}, fmt.Errorf("prune: fine-tuning moved %d pruned weights off zero (%s)", rep.MaskedNonZero, path)
		}
	}
	return rep, ck.State, ck.Progress, nil
}

// save writes the output checkpoint, with or without the mask.
func (j *Job) save(cfg pipeline.TrainConfig, st *pipeline.State, p pipeline.Progress, keepMask bool) error {
	s := *st
	if s.M == nil {
		n := s.Arch.TrainableCount()
		s.M, s.V = make([]float32, n), make([]float32, n)
	}
	if !keepMask {
		s.Mask = nil
	}
	cfg.Masked = s.Mask != nil
	if err := pipeline.SaveCheckpoint(j.Out, cfg, &s, p); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	j.Log.Info().Str("checkpoint", j.Out).Bool("masked", cfg.Masked).Msg("written")
	return nil
}

func (j *Job) logPruning(res *Result) {
	for _, c := range res.Channels {
		j.Log.Debug().Str("layer", c.Layer).Str("kind", c.Kind).Int("before", c.Before).Int("after", c.After).Str("kept", c.Kept).Msg("channels")
	}
	for _, l := range res.Layers {
		j.Log.Debug().Str("tensor", l.Name).Int("size", l.Size).Float64("sparsity", round4(l.Sparsity)).Str("skipped", l.Skipped).Msg("sparsity")
	}
}

func samePath(a, b string) (bool, error) {
	x, err := filepath.Abs(a)
	if err != nil {
		return false, err
	}
	y, err := filepath.Abs(b)
	if err != nil {
		return false, err
	}
	return x == y, nil
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
