package step

import (
	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// LossWeights weigh the two loss terms (0.5 / 0.5 by default).
type LossWeights struct {
	Dice float32 `json:"dice"`
	CE   float32 `json:"ce"`
}

// DefaultLoss is the seed's 0.5·Dice + 0.5·CE.
var DefaultLoss = LossWeights{Dice: 0.5, CE: 0.5}

// LossParts are per-image sums from which the batch loss follows exactly, so several batches
// (of any size) combine into the loss of their union: CE = Σ CESum / pixels, Dice = 1 − (2·Σ
// Inter + 1)/(Σ P + Σ T + 1).
type LossParts struct {
	CESum, Inter, P, T *graphs.Value // [N]
	Pixels             *graphs.Value // scalar: N·H·W
}

// Loss holds the loss and its terms.
type Loss struct {
	Total, CE, Dice *graphs.Value // scalars
	Parts           LossParts
}

// OneHot turns int64 labels [N,H,W] into float [N,K,H,W].
func OneHot(target *graphs.Value, classes int64, dt graphs.DType) *graphs.Value {
	g := target.Graph()
	n, h, w := target.Dim(0), target.Dim(1), target.Dim(2)
	t := graphs.Reshape(target, graphs.Shape{n, 1, h, w})
	ks := make([]int64, classes)
	for i := range ks {
		ks[i] = int64(i)
	}
	k := g.ConstInt64(graphs.Shape{1, classes, 1, 1}, ks...)
	return graphs.Cast(graphs.Equal(t, k), dt)
}

// SegLoss is w_ce·CE + w_dice·Dice for logits [N,K,H,W] and labels [N,H,W] (int64):
// CE = mean over all pixels of −log softmax at the true class; Dice = 1 − (2·Σp·t + 1)/(Σp +
// Σt + 1) over the whole batch, p = softmax probability of class 1 (card), t = (label == 1).
func SegLoss(logits, target *graphs.Value, w LossWeights) Loss {
	g := logits.Graph()
	defer g.Scope("loss")()
	k := logits.Dim(1)
	onehot := OneHot(target, k, logits.DType())
	lsm := graphs.LogSoftmax(logits, 1)
	var parts LossParts
	parts.CESum = graphs.Neg(perImageSum(graphs.Mul(onehot, lsm)))
	p := graphs.Exp(graphs.Slice(lsm, 1, 1, 2))
	t := graphs.Slice(onehot, 1, 1, 2)
	parts.Inter = perImageSum(graphs.Mul(p, t))
	parts.P = perImageSum(p)
	parts.T = perImageSum(t)
	// Every pixel's one-hot row sums to 1 (labels are 0..K-1), so this counts pixels even when
	// the batch dimension is symbolic.
	parts.Pixels = graphs.ReduceSum(perImageSum(onehot), false)
	return lossFromParts(parts, w)
}

// segLossFused is SegLoss for float16 logits with our SegLoss16 operator and its gradient
// (Config.FusedLoss): the per-image sums in one node, the same arithmetic on them after.
func segLossFused(logits, target *graphs.Value, w LossWeights) Loss {
	g := logits.Graph()
	defer g.Scope("loss")()
	sums := g.Composite("seg_loss", []*graphs.Value{logits}, func() []*graphs.Value {
		ce, inter, p, t, pixels := graphs.SegLoss16(logits, target)
		return []*graphs.Value{ce, inter, p, t, pixels}
	}, func(dys []*graphs.Value, want []bool) []*graphs.Value {
		// t and the pixel count do not depend on the logits
		return []*graphs.Value{graphs.SegLoss16Grad(logits, target, dys[0], dys[1], dys[2])}
	})
	parts := LossParts{CESum: sums[0], Inter: sums[1], P: sums[2], T: sums[3], Pixels: graphs.ReduceSum(sums[4], false)}
	return lossFromParts(parts, w)
}

// lossFromParts is the loss from its per-image sums (LossParts).
func lossFromParts(parts LossParts, w LossWeights) Loss {
	p := parts.P
	ce := graphs.Div(graphs.ReduceSum(parts.CESum, false), parts.Pixels)
	one := graphs.ScalarLike(p, 1)
	inter := graphs.ReduceSum(parts.Inter, false)
	den := graphs.Add(graphs.ReduceSum(parts.P, false), graphs.ReduceSum(parts.T, false))
	dice := graphs.Sub(one, graphs.Div(graphs.Add(graphs.Mul(inter, graphs.ScalarLike(p, 2)), one), graphs.Add(den, one)))
	total := graphs.Add(graphs.Mul(ce, graphs.ScalarLike(ce, w.CE)), graphs.Mul(dice, graphs.ScalarLike(dice, w.Dice)))
	return Loss{Total: total, CE: ce, Dice: dice, Parts: parts}
}

// perImageSum sums x [N,...] over all but the first axis, [N]: one sum over the last axis of an
// [N, rest] view, which ONNX Runtime's CUDA provider runs as a fast row reduction (a sum over
// axes 1, 2, 3 goes through cuDNN's general reduction, ~85 µs each for the loss's terms at
// batch 8, 480×640 on an H100). A symbolic batch dimension is kept (Reshape copies it).
func perImageSum(x *graphs.Value) *graphs.Value {
	rest := int64(1)
	for _, d := range x.Shape()[1:] {
		rest *= d
	}
	return graphs.ReduceSum(graphs.Reshape(x, graphs.Shape{x.Dim(0), rest}), false, 1)
}

// Confusion counts pixels by (truth, prediction) per image, [N,K,K] int64, where the
// prediction is the arg-max class.
func Confusion(logits, target *graphs.Value) *graphs.Value {
	g := logits.Graph()
	defer g.Scope("confusion")()
	n, k, h, w := logits.Dim(0), logits.Dim(1), logits.Dim(2), logits.Dim(3)
	pred := ArgMax(logits, 1) // [N,1,H,W] int64
	predOne := OneHot(graphs.Reshape(pred, graphs.Shape{n, h, w}), k, graphs.Float)
	trueOne := OneHot(target, k, graphs.Float)
	tm := graphs.Reshape(trueOne, graphs.Shape{n, k, h * w})
	pm := graphs.Transpose(graphs.Reshape(predOne, graphs.Shape{n, k, h * w}), 0, 2, 1)
	// Per-image counts reach at most H·W, exact in float32 below 2^24 pixels.
	return graphs.Cast(graphs.MatMul(tm, pm), graphs.Int64)
}
