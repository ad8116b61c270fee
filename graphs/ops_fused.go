package graphs

import "fmt"

// CardsegDomain is our own operator set: fused kernels for the FP16 train step on the GPU,
// registered by runtime's device sessions with DeviceOptions.CustomOps (CPU and CUDA kernels:
// runtime/customops.c, runtime/kernels/bn.cu). Like NCHWcDomain it is never written into a
// model for others: the train step alone uses it, the eval and inference graphs stay standard.
const CardsegDomain = "ai.cardseg"

// BNSplits is the number of blocks per channel the GPU kernels of BatchNormTrain16 and its
// gradient use for their partial sums over an [N, C, H·W] activation: enough blocks to fill a
// large GPU (about 2048 in all) but at least 4096 elements each. It fixes the size of their
// scratch output, so the graph states it.
func BNSplits(n, c, hw int64) int64 {
	s := (2048 + c - 1) / c
	if most := n * hw / 4096; s > most {
		s = most
	}
	if s > hw {
		s = hw
	}
	if s < 1 {
		s = 1
	}
	return s
}

func checkBN16(op string, x *Value, rest ...*Value) (c int64) {
	if x.dtype != Float16 || x.Rank() != 4 {
		panic(fmt.Sprintf("graphs: %s(%v): want a float16 [N,C,H,W] activation", op, x))
	}
	c = x.shape[1]
	for _, v := range rest {
		if v.dtype != Float || !v.shape.Equal(Shape{c}) {
			panic(fmt.Sprintf("graphs: %s: %v must be float32 [%d]", op, v, c))
		}
	}
	if x.shape[0]*c > 65535 {
		panic(fmt.Sprintf("graphs: %s(%v): N·C above 65535", op, x))
	}
	return c
}

// BNActivation is the activation BatchNormTrain16 applies after batch norm.
type BNActivation int64

const (
	BNNoActivation BNActivation = iota
	BNReLU
	BNHardSwish // ONNX HardSwish: z·clamp(z/6 + 1/2, 0, 1)
)

// BatchNormTrain16 is batch norm in training mode on a float16 activation x [N,C,H,W] with
// float32 γ, β [C], followed by an activation: y = act((x−μ)·γ/√(σ²+ε) + β) in float16, with
// the batch mean μ and biased variance σ² (float32 [C], accumulated in float32) as further
// outputs. One CardsegDomain node; BatchNormTrain16Grad is its gradient.
func BatchNormTrain16(x, gamma, beta *Value, eps float32, act BNActivation) (y, mean, variance *Value) {
	c := checkBN16("BatchNormTrain16", x, gamma, beta)
	s := BNSplits(x.shape[0], c, x.shape[2]*x.shape[3])
	outs := x.g.addNode("BatchNormTrain16", []*Value{x, gamma, beta}, []Attr{{"epsilon", eps}, {"activation", int64(act)}, {"splits", s}},
		[]outSpec{{Float16, x.shape}, {Float, Shape{c}}, {Float, Shape{c}}, {Float, Shape{2 * c * s}}})
	outs[0].node.Domain = CardsegDomain
	return outs[0], outs[1], outs[2]
}

// BatchNormTrain16Grad is BatchNormTrain16's vector-Jacobian product for output gradient dy
// (float16), given the forward's input x, parameters and statistics: with the pre-activation z
// recomputed from x and dz = dy·act'(z), dβ = Σdz, dγ = Σdz·(x−μ)/σ and
// dx = γ/σ·(dz − Σdz/M − (x−μ)·Σdz·(x−μ)/(M·σ²)), σ = √(σ²+ε), M = N·H·W; the sums in float32,
// dx in float16.
func BatchNormTrain16Grad(dy, x, gamma, beta, mean, variance *Value, eps float32, act BNActivation) (dx, dgamma, dbeta *Value) {
	c := checkBN16("BatchNormTrain16Grad", x, gamma, beta, mean, variance)
	if dy.dtype != Float16 || !dy.shape.Equal(x.shape) {
		panic(fmt.Sprintf("graphs: BatchNormTrain16Grad: dy %v for x %v", dy, x))
	}
	s := BNSplits(x.shape[0], c, x.shape[2]*x.shape[3])
	outs := x.g.addNode("BatchNormTrain16Grad", []*Value{dy, x, gamma, beta, mean, variance},
		[]Attr{{"epsilon", eps}, {"activation", int64(act)}, {"splits", s}},
		[]outSpec{{Float16, x.shape}, {Float, Shape{c}}, {Float, Shape{c}}, {Float, Shape{2 * c * s}}})
	outs[0].node.Domain = CardsegDomain
	return outs[0], outs[1], outs[2]
}

// DepthwiseWeightGrad16 is the weight gradient of a depthwise convolution (group = channels,
// one filter per channel) on float16 tensors: dW[c,0,a,b] = Σ_{n,y,x} dy[n,c,y,x] ·
// x[n,c, y·s+a·d−p, x·s+b·d−p] (zero outside x), summed in float32, one CardsegDomain node
// (3×3 and 5×5 kernels). GradOptions.DepthwiseWeightGrad "fused" picks it.
func DepthwiseWeightGrad16(x, dy *Value, wShape Shape, o ConvOpts) *Value {
	if x.dtype != Float16 || dy.dtype != Float16 || x.Rank() != 4 || dy.Rank() != 4 || x.shape[1] != dy.shape[1] ||
		x.shape[0] != dy.shape[0] || !wShape.Equal(Shape{x.shape[1], 1, wShape[2], wShape[3]}) {
		panic(fmt.Sprintf("graphs: DepthwiseWeightGrad16(%v, %v) for weights %v: want float16 depthwise", x, dy, wShape))
	}
	if !fusedDepthwise(wShape) {
		panic(fmt.Sprintf("graphs: DepthwiseWeightGrad16: kernel %v (3×3 and 5×5 only)", wShape))
	}
	c, ho, wo := x.shape[1], dy.shape[2], dy.shape[3]
	s := BNSplits(x.shape[0], c, ho*wo)
	attrs := []Attr{{"kh", wShape[2]}, {"kw", wShape[3]}, {"stride_h", o.Strides[0]}, {"stride_w", o.Strides[1]},
		{"dilation_h", o.Dilations[0]}, {"dilation_w", o.Dilations[1]}, {"pad_top", o.Pads[0]}, {"pad_left", o.Pads[1]}, {"splits", s}}
	outs := x.g.addNode("DepthwiseWeightGrad16", []*Value{x, dy}, attrs,
		[]outSpec{{Float16, wShape}, {Float, Shape{c * s * wShape[2] * wShape[3]}}})
	outs[0].node.Domain = CardsegDomain
	return outs[0]
}

// fusedDepthwise reports whether DepthwiseWeightGrad16 has kernels for this filter size.
func fusedDepthwise(wShape Shape) bool {
	return (wShape[2] == 3 && wShape[3] == 3) || (wShape[2] == 5 && wShape[3] == 5)
}

// FusedDepthwiseConv reports whether DepthwiseConv16 can run Conv(x, w, nil, o): float16, one
// filter per channel, 3×3 or 5×5, strides 1 or 2.
func FusedDepthwiseConv(x, w *Value, o ConvOpts) bool {
	o = o.norm()
	c := x.shape[1]
	return x.dtype == Float16 && w.dtype == Float16 && x.Rank() == 4 && o.Group == c && w.shape[0] == c && w.shape[1] == 1 &&
		fusedDepthwise(w.shape) && o.Strides[0] >= 1 && o.Strides[0] <= 2 && o.Strides[1] >= 1 && o.Strides[1] <= 2
}

func dwConvAttrs(w Shape, o ConvOpts, h, wd int64, fwd bool) []Attr {
	hn, wn := "in_h", "in_w"
	if fwd {
		hn, wn = "out_h", "out_w"
	}
	return []Attr{{"kh", w[2]}, {"kw", w[3]}, {"stride_h", o.Strides[0]}, {"stride_w", o.Strides[1]},
		{"dilation_h", o.Dilations[0]}, {"dilation_w", o.Dilations[1]}, {"pad_top", o.Pads[0]}, {"pad_left", o.Pads[1]}, {hn, h}, {wn, wd}}
}

// DepthwiseConv16 is Conv(x, w, nil, o) for a float16 depthwise layer (FusedDepthwiseConv):
// one CardsegDomain node, float32 sums; its gradient rule uses DepthwiseConvGrad16 for x and
// DepthwiseWeightGrad16 for w.
func DepthwiseConv16(x, w *Value, o ConvOpts) *Value {
	o = o.norm()
	if !FusedDepthwiseConv(x, w, o) {
		panic(fmt.Sprintf("graphs: DepthwiseConv16(%v, %v, %+v): not a float16 3×3/5×5 depthwise convolution with strides 1 or 2", x, w, o))
	}
	kh, kw := w.shape[2], w.shape[3]
	ho := convOutDim(x.shape[2], kh, o.Strides[0], o.Pads[0], o.Pads[2], o.Dilations[0])
	wo := convOutDim(x.shape[3], kw, o.Strides[1], o.Pads[1], o.Pads[3], o.Dilations[1])
	y := x.g.addNode("DepthwiseConv16", []*Value{x, w}, dwConvAttrs(w.shape, o, ho, wo, true),
		[]outSpec{{Float16, Shape{x.shape[0], x.shape[1], ho, wo}}})[0]
	y.node.Domain = CardsegDomain
	return y
}

// DepthwiseConvGrad16 is DepthwiseConv16's gradient for its input, of shape xShape, given the
// output gradient dy: dx[n,c,i,j] = Σ w[c,0,a,b]·dy[n,c,y,x] over the outputs (y, x) whose
// tap (a, b) reads input (i, j).
func DepthwiseConvGrad16(dy, w *Value, xShape Shape, o ConvOpts) *Value {
	o = o.norm()
	dx := dy.g.addNode("DepthwiseConvGrad16", []*Value{dy, w}, dwConvAttrs(w.shape, o, xShape[2], xShape[3], false),
		[]outSpec{{Float16, xShape}})[0]
	dx.node.Domain = CardsegDomain
	return dx
}

func gradDepthwiseConv16(n *Node, dy []*Value, want []bool) []*Value {
	x, w := n.Inputs[0], n.Inputs[1]
	o := ConvOpts{Strides: [2]int64{n.Int("stride_h", 1), n.Int("stride_w", 1)}, Dilations: [2]int64{n.Int("dilation_h", 1), n.Int("dilation_w", 1)},
		Group: x.shape[1]}
	// The end pads do not matter to either gradient: the output's size is what it is.
	o.Pads = [4]int64{n.Int("pad_top", 0), n.Int("pad_left", 0), 0, 0}
	out := make([]*Value, 2)
	if want[0] {
		out[0] = DepthwiseConvGrad16(dy[0], w, x.shape, o)
	}
	if want[1] {
		out[1] = DepthwiseWeightGrad16(x, dy[0], w.shape, o)
	}
	return out
}

// PackRowsWidth is the width of PackRows's matrix.
const PackRowsWidth = 8

// PackRows lays vs (float32 or float16, any shapes) end to end, in float32, as the rows of a
// [rows, PackRowsWidth] matrix, zeros after them: one CardsegDomain node (one kernel launch per
// 96 tensors on the GPU) instead of a Cast per float16 tensor, Reshapes, a Concat, and ONNX
// Runtime's per-row index table for it. rows·PackRowsWidth must hold them all.
func PackRows(rows int64, vs ...*Value) *Value {
	if len(vs) == 0 {
		panic("graphs: PackRows of no tensors")
	}
	var n int64
	for _, v := range vs {
		if v.dtype != Float && v.dtype != Float16 {
			panic(fmt.Sprintf("graphs: PackRows(%v): float32 and float16 tensors only", v))
		}
		n += v.shape.Size()
	}
	if n > rows*PackRowsWidth {
		panic(fmt.Sprintf("graphs: PackRows: %d elements do not fit %d rows of %d", n, rows, PackRowsWidth))
	}
	out := vs[0].g.addNode("PackRows", vs, []Attr{{"rows", rows}}, []outSpec{{Float, Shape{rows, PackRowsWidth}}})
	out[0].node.Domain = CardsegDomain
	return out[0]
}

// UnpackRows is PackRows's inverse: tensors of the given shapes taken one after another from
// the float32 [rows, PackRowsWidth] matrix m, as dt (Float, or Float16 rounded to nearest even:
// the cast of each tensor, in the same node). It has no gradient rule, and Grad does not
// differentiate through it: differentiate with respect to its outputs (the FP16 step's
// weights), whose gradients PackRows lays out again. Grad reports a loss that depends through
// it on a value differentiated for.
func UnpackRows(m *Value, dt DType, shapes []Shape) []*Value {
	if m.dtype != Float || m.Rank() != 2 || m.shape[1] != PackRowsWidth {
		panic(fmt.Sprintf("graphs: UnpackRows(%v): want a float32 [rows, %d] matrix", m, PackRowsWidth))
	}
	op := "UnpackRows"
	switch dt {
	case Float:
	case Float16:
		op = "UnpackRows16"
	default:
		panic(fmt.Sprintf("graphs: UnpackRows to %v: float32 and float16 only", dt))
	}
	if len(shapes) == 0 {
		panic("graphs: UnpackRows to no tensors")
	}
	var n int64
	ranks := make([]int64, len(shapes))
	var dims []int64
	outs := make([]outSpec, len(shapes))
	for i, s := range shapes {
		n += s.Size()
		ranks[i] = int64(len(s))
		dims = append(dims, s...)
		outs[i] = outSpec{dt, s}
	}
	if n > m.shape.Size() {
		panic(fmt.Sprintf("graphs: UnpackRows: %d elements from a matrix of %d", n, m.shape.Size()))
	}
	vs := m.g.addNode(op, []*Value{m}, []Attr{{"ranks", ranks}, {"dims", dims}}, outs)
	vs[0].node.Domain = CardsegDomain
	vs[0].node.noGrad = true
	return vs
}

// AdamW is torch.optim.AdamW's step on the packed parameters p and gradients g ([rows,
// PackRowsWidth] float32; g is multiplied by the scalar gscale first) with the flat moments m
// and v (float32 [P], P ≤ p's size: the rest of p is padding), given the step's scalars
// decay = 1 − lr·wd, stepSize = lr/(1 − β1^t) and invSqBC2 = 1/√(1 − β2^t): m' = β1·m + (1−β1)·g,
// v' = β2·v + (1−β2)·g², p' = p·decay − m'/(√v'·invSqBC2 + ε)·stepSize, each operation rounded
// once, in this order. Where the bool scalar skip holds, p, m and v come back unchanged. One
// CardsegDomain node, one pass over the tensors, instead of about twenty element-wise nodes.
func AdamW(p, g, m, v, decay, stepSize, invSqBC2, gscale, skip *Value, beta1, beta2, eps float32) (p2, m2, v2 *Value) {
	if p.dtype != Float || g.dtype != Float || !g.shape.Equal(p.shape) || m.dtype != Float || v.dtype != Float || m.Rank() != 1 ||
		!v.shape.Equal(m.shape) || m.shape[0] > p.shape.Size() {
		panic(fmt.Sprintf("graphs: AdamW(%v, %v, %v, %v): want float32 p and g alike, flat m and v alike and no larger", p, g, m, v))
	}
	for _, s := range []*Value{decay, stepSize, invSqBC2, gscale} {
		if s.dtype != Float || s.shape.Size() != 1 {
			panic(fmt.Sprintf("graphs: AdamW: %v must be a float32 scalar", s))
		}
	}
	if skip.dtype != Bool || skip.shape.Size() != 1 {
		panic(fmt.Sprintf("graphs: AdamW: skip %v must be a bool scalar", skip))
	}
	outs := p.g.addNode("AdamW", []*Value{p, g, m, v, decay, stepSize, invSqBC2, gscale, skip},
		[]Attr{{"beta1", beta1}, {"beta2", beta2}, {"epsilon", eps}}, []outSpec{{Float, p.shape}, {Float, m.shape}, {Float, v.shape}})
	outs[0].node.Domain = CardsegDomain
	return outs[0], outs[1], outs[2]
}

// SegLossSplits is the number of blocks per image SegLoss16's GPU kernels take partial sums in.
func SegLossSplits(n, hw int64) int64 { return BNSplits(1, n, hw) }

func checkSeg(op string, z, y *Value) {
	if z.dtype != Float16 || z.Rank() != 4 || z.shape[1] < 2 || y.dtype != Int64 || !y.shape.Equal(Shape{z.shape[0], z.shape[2], z.shape[3]}) {
		panic(fmt.Sprintf("graphs: %s(%v, %v): want float16 logits [N,K,H,W] (K ≥ 2) and int64 labels [N,H,W]", op, z, y))
	}
}

// SegLoss16 computes, per image of float16 logits z [N,K,H,W] and int64 labels y [N,H,W], the
// sums the segmentation loss is built from (float32 [N] each): ce = Σ −log softmax(z) at the
// label, inter = Σ p·t, p = Σ p and t = Σ t for p the softmax probability of class 1 and
// t = [y = 1], and pixels, the pixels whose label is a class (a label outside 0…K−1 counts in
// no sum but t's zeros). Softmax in float32; one CardsegDomain node (two kernels on the GPU)
// instead of about fifteen full-size float32 passes. SegLoss16Grad is its gradient.
func SegLoss16(z, y *Value) (ce, inter, p, t, pixels *Value) {
	checkSeg("SegLoss16", z, y)
	n := z.shape[0]
	s := SegLossSplits(n, z.shape[2]*z.shape[3])
	sum := outSpec{Float, Shape{n}}
	outs := z.g.addNode("SegLoss16", []*Value{z, y}, []Attr{{"splits", s}}, []outSpec{sum, sum, sum, sum, sum, {Float, Shape{n * s * 5}}})
	outs[0].node.Domain = CardsegDomain
	return outs[0], outs[1], outs[2], outs[3], outs[4]
}

// SegLoss16Grad is the gradient of SegLoss16's ce, inter and p sums with respect to z, given
// theirs (dce, dinter, dp, float32 [N]): dz_k = dce·(s_k − [y = k]) (0 where y is no class) +
// (dinter·t + dp)·p·([k = 1] − s_k), s = softmax(z), in float32, rounded to float16 once.
func SegLoss16Grad(z, y, dce, dinter, dp *Value) *Value {
	checkSeg("SegLoss16Grad", z, y)
	for _, d := range []*Value{dce, dinter, dp} {
		if d.dtype != Float || !d.shape.Equal(Shape{z.shape[0]}) {
			panic(fmt.Sprintf("graphs: SegLoss16Grad: %v must be float32 [N]", d))
		}
	}
	outs := z.g.addNode("SegLoss16Grad", []*Value{z, y, dce, dinter, dp}, nil, []outSpec{{Float16, z.shape}})
	outs[0].node.Domain = CardsegDomain
	return outs[0]
}

// ChannelScale16 is x·s + t for float16 x [N,C,H,W] and s, t [N,C,1,1] (one value per plane),
// in float32 with the product and the sum each rounded once, rounded to float16: one
// CardsegDomain node. The squeeze-and-excitation block's scale (t zero) and its input
// gradient dy·s, to which autodiff adds the mean pool's gradient as t (see accumulate).
func ChannelScale16(x, s, t *Value) *Value {
	if x.dtype != Float16 || x.Rank() != 4 {
		panic(fmt.Sprintf("graphs: ChannelScale16(%v): want float16 [N,C,H,W]", x))
	}
	per := Shape{x.shape[0], x.shape[1], 1, 1}
	for _, v := range []*Value{s, t} {
		if v.dtype != Float16 || !v.shape.Equal(per) {
			panic(fmt.Sprintf("graphs: ChannelScale16: %v must be float16 %v", v, per))
		}
	}
	outs := x.g.addNode("ChannelScale16", []*Value{x, s, t}, nil, []outSpec{{Float16, x.shape}})
	outs[0].node.Domain = CardsegDomain
	return outs[0]
}

// ChannelDot16 is Σ_{h,w} a·b for float16 a, b [N,C,H,W], summed in float32 and rounded to
// float16: [N,C,1,1], one CardsegDomain node (the gradient of ChannelScale16's s).
func ChannelDot16(a, b *Value) *Value {
	if a.dtype != Float16 || b.dtype != Float16 || a.Rank() != 4 || !a.shape.Equal(b.shape) {
		panic(fmt.Sprintf("graphs: ChannelDot16(%v, %v): want two float16 [N,C,H,W] of one shape", a, b))
	}
	outs := a.g.addNode("ChannelDot16", []*Value{a, b}, nil, []outSpec{{Float16, Shape{a.shape[0], a.shape[1], 1, 1}}})
	outs[0].node.Domain = CardsegDomain
	return outs[0]
}

// ScaleChannels is x ⊙ s (s [N,C,1,1] broadcast over each plane) for the float16 squeeze-and-
// excitation block: ChannelScale16 forward, and as its gradient ChannelScale16(dy, s, 0) for x
// (autodiff folds the block's mean-pool gradient into its t) and ChannelDot16(dy, x) for s.
// One composite: a product, a sum over the planes and a broadcast sum fewer on the
// backward's full-size tensors than Mul's rule.
func ScaleChannels(x, s *Value) *Value {
	g := x.g
	zero := g.ConstFloat16(s.shape, make([]float32, s.shape.Size())...)
	outs := g.Composite("scale_channels", []*Value{x, s}, func() []*Value {
		return []*Value{ChannelScale16(x, s, zero)}
	}, func(dy []*Value, want []bool) []*Value {
		out := make([]*Value, 2)
		if want[0] {
			out[0] = ChannelScale16(dy[0], s, zero)
			if g.shiftable == nil {
				g.shiftable = map[*Value]bool{}
			}
			g.shiftable[out[0]] = true
		}
		if want[1] {
			out[1] = ChannelDot16(dy[0], x)
		}
		return out
	})
	return outs[0]
}
