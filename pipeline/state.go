package pipeline

import (
	"fmt"
	"time"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// State is everything a training run carries from one step to the next: the network's
// tensors (parameters and batch-norm buffers), AdamW's moments and the step count.
type State struct {
	Arch    model.Arch
	Weights *model.Weights
	M, V    []float32 // AdamW moments, flat in Arch.Params() order of trainable tensors
	Step    int64     // optimizer steps taken
	// Mask, when set (flat like M), keeps pruned weights at zero: the train step multiplies
	// gradients and updated parameters by it.
	Mask []float32
	// LossScale and LossScaleGood are the FP16 step's dynamic loss scale and its count of
	// consecutive steps without overflow (0: start at the configured initial scale, 2^16 by default).
	LossScale, LossScaleGood float32
}

// NewState starts training from weights with zero moments.
func NewState(a model.Arch, w *model.Weights) (*State, error) {
	if err := a.Check(w); err != nil {
		return nil, err
	}
	n := a.TrainableCount()
	return &State{Arch: a, Weights: w, M: make([]float32, n), V: make([]float32, n)}, nil
}

// StepResult is what one training step reports.
type StepResult struct {
	Loss, CE, Dice, GradNorm float32
	// Skipped: the FP16 step found non-finite gradients, left the state as it was and
	// lowered the loss scale.
	Skipped bool
}

// TrainSession runs the train-step graph on ONNX Runtime.
type TrainSession struct {
	cfg   step.Config
	sess  *runtime.Session
	specs []model.ParamSpec
}

// NewTrainSession builds the train-step graph for cfg and opens it.
func NewTrainSession(cfg step.Config, opts runtime.SessionOptions) (*TrainSession, error) {
	ts, _, err := newTrainSession(cfg, opts)
	return ts, err
}

// newTrainSession is NewTrainSession that also reports how long building the graph took.
func newTrainSession(cfg step.Config, opts runtime.SessionOptions) (*TrainSession, time.Duration, error) {
	t0 := time.Now()
	cfg = cpuKernels(cfg, opts.Provider)
	opts.DisableMemPattern = opts.DisableMemPattern || noMemPattern(opts.Provider)
	b, err := trainStepModel(cfg, opts.Provider)
	if err != nil {
		return nil, 0, err
	}
	build := time.Since(t0)
	sess, err := runtime.NewSession("train_step", b, opts)
	if err != nil {
		return nil, build, err
	}
	return &TrainSession{cfg: cfg, sess: sess, specs: cfg.Arch.Params()}, build, nil
}

// Close releases the session.
func (t *TrainSession) Close() error { return t.sess.Close() }

// Step runs one optimizer step on a batch (image normalised [B,3,H,W], target [B,H,W]) with
// learning rate lr, and advances st in place.
func (t *TrainSession) Step(st *State, image []float32, target []int64, lr float32) (StepResult, error) {
	c := t.cfg
	b, h, w := int64(c.Batch), int64(c.Height), int64(c.Width)
	img, err := runtime.New([]int64{b, 3, h, w}, image)
	if err != nil {
		return StepResult{}, fmt.Errorf("train step: image: %w", err)
	}
	tgt, err := runtime.New([]int64{b, h, w}, target)
	if err != nil {
		return StepResult{}, fmt.Errorf("train step: target: %w", err)
	}
	feeds := map[string]*runtime.Tensor{
		step.InputImage:  img,
		step.InputTarget: tgt,
		step.InputLR:     runtime.Scalar(lr),
		step.InputStep:   runtime.Scalar(float32(st.Step + 1)),
	}
	for _, p := range t.specs {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), st.Weights.Tensors[p.Name])
	}
	if c.Masked {
		if len(st.Mask) != len(st.M) {
			return StepResult{}, fmt.Errorf("train step: the graph is masked but the state has %d mask values for %d parameters", len(st.Mask), len(st.M))
		}
		feeds[step.InputParamMask] = runtime.MustNew([]int64{int64(len(st.Mask))}, st.Mask)
	}
	feeds[step.InputMomentM] = runtime.MustNew([]int64{int64(len(st.M))}, st.M)
	feeds[step.InputMomentV] = runtime.MustNew([]int64{int64(len(st.V))}, st.V)
	out, err := t.sess.Run(feeds)
	if err != nil {
		return StepResult{}, err
	}
	for _, p := range t.specs {
		st.Weights.Tensors[p.Name] = runtime.Data[float32](out[step.Next(p.Name)])
	}
	st.M = runtime.Data[float32](out[step.Next(step.InputMomentM)])
	st.V = runtime.Data[float32](out[step.Next(step.InputMomentV)])
	st.Step++
	st.Weights.BatchesTracked++
	scalar := func(n string) float32 { return runtime.Data[float32](out[n])[0] }
	return StepResult{Loss: scalar(step.OutLoss), CE: scalar(step.OutCE), Dice: scalar(step.OutDice), GradNorm: scalar(step.OutGradNorm)}, nil
}

// trainStepModel builds and serialises the train-step graph for provider p.
func trainStepModel(cfg step.Config, p runtime.Provider) ([]byte, error) {
	g, err := step.TrainStep(cfg)
	if err != nil {
		return nil, err
	}
	return marshalFor(g, cfg, p)
}
