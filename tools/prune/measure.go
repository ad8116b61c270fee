package prune

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Measurement is one stage's figures: the exported inference model (batch norm folded, what
// `export` ships) and its quality on the test split.
type Measurement struct {
	Stage     string `json:"stage"`            // before, pruned, fine-tuned
	Params    int    `json:"params"`           // parameters of the exported model
	NonZero   int    `json:"nonzero_params"`   // of which not zero
	Trainable int    `json:"trainable_params"` // parameters the train step updates (batch norm unfolded)
	FileBytes int64  `json:"file_bytes"`       // size of the exported inference ONNX file
	// GzipBytes is that file gzip-compressed: what an app download carries, and where
	// unstructured pruning's zeros pay off (a dense ONNX tensor stores zeros like any value).
	GzipBytes int64 `json:"gzip_bytes"`
	// LatencyMS is the median CPU batch-1 latency of the exported model, LatencyMinMS its
	// fastest run (the least disturbed by other work on the machine); 0 when not measured.
	LatencyMS    float64 `json:"latency_ms"`
	LatencyMinMS float64 `json:"latency_min_ms"`
	LatencyRuns  int     `json:"latency_runs,omitempty"`
	// Val is the test split's loss, card IoU and Dice (nil without data or a test split).
	Val *pipeline.ValMetrics `json:"val,omitempty"`

	model []byte // the exported model, for the latency rounds
}

// describeModel fills the size figures of a network and keeps its exported bytes.
func describeModel(stage string, cfg step.Config, w *model.Weights) (Measurement, error) {
	m := Measurement{Stage: stage, Trainable: cfg.Arch.TrainableCount()}
	folded, err := model.FoldBN(cfg.Arch, w)
	if err != nil {
		return m, fmt.Errorf("%s model: %w", stage, err)
	}
	for _, d := range folded.Tensors {
		m.Params += len(d)
		for _, v := range d {
			if v != 0 {
				m.NonZero++
			}
		}
	}
	g, err := step.Inference(cfg, w)
	if err != nil {
		return m, fmt.Errorf("%s model: %w", stage, err)
	}
	if m.model, err = g.Marshal(); err != nil {
		return m, fmt.Errorf("%s model: %w", stage, err)
	}
	m.FileBytes = int64(len(m.model))
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(m.model)
	if err := zw.Close(); err != nil {
		return m, err
	}
	m.GzipBytes = int64(buf.Len())
	return m, nil
}

// LatencyOptions configure the latency rounds.
type LatencyOptions struct {
	Runs    int // timed rounds (every model runs once per round)
	Warmup  int // untimed rounds first
	Threads int // ORT intra-op threads; 0: ORT's default
}

// Timing is one model's latency: the median and the fastest of its runs.
type Timing struct{ Median, Min time.Duration }

// Latencies measures each model's CPU latency on one random image of h×w. The models run
// interleaved, one run each per round, so that load from elsewhere on the machine falls on
// all of them alike.
func Latencies(ctx context.Context, models [][]byte, h, w int, o LatencyOptions) ([]Timing, error) {
	if o.Runs < 1 {
		return nil, fmt.Errorf("latency: %d runs, want at least 1", o.Runs)
	}
	sessions := make([]*runtime.Session, len(models))
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i, b := range models {
		s, err := runtime.NewSession(fmt.Sprintf("latency model %d", i+1), b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: o.Threads})
		if err != nil {
			return nil, err
		}
		sessions[i] = s
	}
	r := rand.New(rand.NewPCG(1, 2))
	img := make([]float32, 3*h*w)
	for i := range img {
		img[i] = float32(r.NormFloat64())
	}
	feeds := map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{1, 3, int64(h), int64(w)}, img)}
	times := make([][]time.Duration, len(models))
	for round := range o.Warmup + o.Runs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i, s := range sessions {
			start := time.Now()
			if _, err := s.Run(feeds); err != nil {
				return nil, fmt.Errorf("latency: %w", err)
			}
			if round >= o.Warmup {
				times[i] = append(times[i], time.Since(start))
			}
		}
	}
	out := make([]Timing, len(models))
	for i, t := range times {
		slices.Sort(t)
		out[i] = Timing{Median: t[len(t)/2], Min: t[0]}
		if len(t)%2 == 0 {
			out[i].Median = (t[len(t)/2-1] + t[len(t)/2]) / 2
		}
	}
	return out, nil
}

// evaluator scores weights on the test split and re-estimates batch-norm statistics on the
// training split, with the loaders the trainer uses.
type evaluator struct {
	ds      *pipeline.Dataset
	cfg     pipeline.TrainConfig
	session runtime.SessionOptions
}

// quality runs the validation pass; nil without a test split.
func (e *evaluator) quality(ctx context.Context, sc step.Config, w *model.Weights) (*pipeline.ValMetrics, error) {
	if e == nil || len(e.ds.Test) == 0 {
		return nil, nil
	}
	l, err := pipeline.NewLoader(e.ds.Test, pipeline.LoaderConfig{Height: sc.Height, Width: sc.Width, BatchSize: sc.Batch, Workers: e.cfg.Workers})
	if err != nil {
		return nil, fmt.Errorf("test split: %w", err)
	}
	v, err := pipeline.NewValidator(sc, e.session)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	m, err := v.Run(ctx, &pipeline.State{Arch: sc.Arch, Weights: w}, l)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// recalibrate replaces w's batch-norm running statistics with averages over batches training
// batches (no augmentation, the trainer's fixed order); it returns the batches used.
func (e *evaluator) recalibrate(ctx context.Context, sc step.Config, w *model.Weights, batches int) (int, error) {
	l, err := pipeline.NewLoader(e.ds.Train, pipeline.LoaderConfig{Height: sc.Height, Width: sc.Width, BatchSize: sc.Batch,
		Workers: e.cfg.Workers, Shuffle: true, DropLast: true, Seed: e.cfg.Seed ^ 0x5eed})
	if err != nil {
		return 0, fmt.Errorf("training split: %w", err)
	}
	r, err := pipeline.NewBNRecalibrator(sc, e.session)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return r.Run(ctx, &pipeline.State{Arch: sc.Arch, Weights: w}, l, batches)
}
