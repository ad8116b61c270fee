package step

import "github.com/cardseg-ort/cardseg-ort/graphs"

// The FP16 train step's loss-scaling state and its skip flag (all float32 scalars).
const (
	InputLossScale     = "loss_scale"      // the factor the loss is multiplied by before differentiation
	InputLossScaleGood = "loss_scale.good" // consecutive steps with finite gradients since the scale last changed
	OutFoundInf        = "found_inf"       // 1 when the gradients held Inf or NaN and the step was skipped, else 0
)

// lossScaler is the FP16 train step's dynamic loss scaling (torch.cuda.amp.GradScaler), with
// all of its state as graph inputs and outputs: the graph runs on the GPU step after step with
// its state resident there, and nothing is read back to decide whether a step counts.
type lossScaler struct {
	cfg   LossScaling
	scale *graphs.Value // the loss_scale input
	found *graphs.Value // bool scalar: the gradients hold Inf or NaN (set by check)
	inv   *graphs.Value // 1/scale, once built
}

func newLossScaler(g *graphs.Graph, c LossScaling) *lossScaler {
	return &lossScaler{cfg: c, scale: g.Input(InputLossScale, graphs.Float, graphs.Shape{})}
}

// inverse is the loss scale's reciprocal (one node, however often asked for).
func (s *lossScaler) inverse() *graphs.Value {
	if s.inv == nil {
		s.inv = graphs.Reciprocal(s.scale)
	}
	return s.inv
}

// unscale divides float32 gradients by the loss scale.
func (s *lossScaler) unscale(grad *graphs.Value) *graphs.Value {
	return graphs.Mul(grad, s.inverse())
}

// check flags non-finite gradients from the sum of squares of all unscaled gradients (an Inf
// or NaN anywhere makes it Inf or NaN) and returns the flag as float32 0/1. The sum reaches
// Inf without an Inf gradient only for gradients near 1e16, themselves a broken step.
func (s *lossScaler) check(sumSq *graphs.Value) *graphs.Value {
	s.found = graphs.Or(graphs.IsInf(sumSq), graphs.IsNaN(sumSq))
	return graphs.Cast(s.found, graphs.Float)
}

// keepIfSkipped is the new value of a state tensor: old when the step is skipped.
func (s *lossScaler) keepIfSkipped(old, updated *graphs.Value) *graphs.Value {
	return graphs.Where(s.found, old, updated)
}

// outputs adds step.next, loss_scale.next and loss_scale.good.next. GradScaler.update: a
// skipped step multiplies the scale by backoff and resets the good-step count; otherwise the
// count grows by one, and when it reaches the interval the scale is multiplied by growth
// (unless that overflows float32) and the count starts again from 0.
func (s *lossScaler) outputs(g *graphs.Graph, stepN *graphs.Value) {
	good := g.Input(InputLossScaleGood, graphs.Float, graphs.Shape{})
	f := func(x float32) *graphs.Value { return graphs.Scalar(g, x) }
	g.Output(Next(InputStep), s.keepIfSkipped(stepN, graphs.Add(stepN, f(1))))
	good1 := graphs.Add(good, f(1))
	// The count holds whole numbers: comparing with interval − ½ is ≥ interval.
	full := graphs.Greater(good1, f(float32(s.cfg.Interval)-0.5))
	grown := graphs.Mul(s.scale, f(s.cfg.Growth))
	grow := graphs.And(full, graphs.Not(graphs.IsInf(grown)))
	kept := graphs.Where(grow, grown, s.scale)
	g.Output(Next(InputLossScale), graphs.Where(s.found, graphs.Mul(s.scale, f(s.cfg.Backoff)), kept))
	g.Output(Next(InputLossScaleGood), graphs.Where(graphs.Or(s.found, full), f(0), good1))
}

// StatePairs lists the train step's state as (input, output) name pairs: every network tensor
// (trainable parameters and batch-norm buffers, in Arch.Params() order), adam.m and adam.v,
// and for an FP16 step also step, loss_scale and loss_scale.good. Feeding each output back as
// its input runs the next step; lr, step (FP32), image, target and param_mask are fed by the
// host.
func StatePairs(c Config) [][2]string {
	var names []string
	for _, p := range c.Arch.Params() {
		names = append(names, p.Name)
	}
	names = append(names, InputMomentM, InputMomentV)
	if c.FP16 {
		names = append(names, InputStep, InputLossScale, InputLossScaleGood)
	}
	pairs := make([][2]string, len(names))
	for i, n := range names {
		pairs[i] = [2]string{n, Next(n)}
	}
	return pairs
}
