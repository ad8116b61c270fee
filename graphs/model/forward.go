package model

import (
	"fmt"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// Mode selects how batch norm is computed.
type Mode int

const (
	Train  Mode = iota // batch statistics; running-statistics updates returned
	Eval               // running statistics (ONNX BatchNormalization)
	Folded             // batch norm folded into conv weights and biases (FoldBN)
)

// ParamSource hands the forward builder a value for each named tensor: a graph input in the
// train step, an initializer in the inference model.
type ParamSource interface {
	Param(g *graphs.Graph, spec ParamSpec) *graphs.Value
}

// BNUpdate carries one batch-norm layer's batch statistics in training mode.
type BNUpdate struct {
	Mean, Var       ParamSpec     // the running-statistics buffers
	RunMean, RunVar *graphs.Value // their current values
	BatchMean       *graphs.Value // the batch mean, [C]
	BatchVar        *graphs.Value // the biased batch variance (the one that normalised the batch), [C]
	// Unbias is count/(count−1) (1 for a count of 1): BatchVar·Unbias is the unbiased
	// variance that the running variance tracks, as in PyTorch. The train step folds it into
	// its update's constants rather than spend a kernel per layer on it.
	Unbias   float32
	Momentum float32
}

// BatchV is the unbiased batch variance, BatchVar·Unbias (a node of its own).
func (u BNUpdate) BatchV() *graphs.Value {
	if u.Unbias == 1 {
		return u.BatchVar
	}
	return graphs.Mul(u.BatchVar, graphs.ScalarLike(u.BatchVar, u.Unbias))
}

// recordBN notes a training-mode batch-norm layer's statistics for x [N, C, H, W].
func (n *net) recordBN(x *graphs.Value, meanSpec, varSpec ParamSpec, rm, rv, mean, variance *graphs.Value, mom float32) {
	unbias := float32(1)
	if count := x.Dim(0) * x.Dim(2) * x.Dim(3); count > 1 {
		unbias = float32(float64(count) / float64(count-1))
	}
	n.out.BN = append(n.out.BN, BNUpdate{Mean: meanSpec, Var: varSpec, RunMean: rm, RunVar: rv, BatchMean: mean, BatchVar: variance,
		Unbias: unbias, Momentum: mom})
}

// Output is what Forward builds.
type Output struct {
	Logits    *graphs.Value // [N, classes, H, W]
	Low, High *graphs.Value // the backbone taps
	BN        []BNUpdate    // training mode only
}

type net struct {
	g    *graphs.Graph
	src  ParamSource
	mode Mode
	opts Options
	out  *Output
}

// Options tune how Forward builds the network.
type Options struct {
	// FusedBN builds float16 batch norm in Train mode as one graphs.BatchNormTrain16 node,
	// differentiated by one BatchNormTrain16Grad node, instead of ONNX operators (about
	// fifteen full-tensor passes per layer, float32 casts included): graphs.CardsegDomain
	// operators, which only sessions opened with runtime.DeviceOptions.CustomOps can run.
	FusedBN bool
	// FusedActivation (with FusedBN) applies the ReLU or HardSwish after batch norm inside
	// those operators, saving the activation's own four or more passes.
	FusedActivation bool
	// FusedDepthwise builds the float16 depthwise convolutions of Train mode (3×3 and 5×5,
	// strides 1 or 2) as graphs.DepthwiseConv16 nodes, whose gradients are our operators too
	// (CardsegDomain, as FusedBN).
	FusedDepthwise bool
	// FusedSE scales the float16 squeeze-and-excitation blocks of Train mode with
	// graphs.ScaleChannels (our ChannelScale16 and ChannelDot16, CardsegDomain): their
	// backward in two full-size passes instead of a product, a sum over the planes, another
	// product and a broadcast sum.
	FusedSE bool
}

// Backbone batch norm: eps 1e-3, momentum 0.01 (torchvision MobileNetV3); head: 1e-5, 0.1.
const (
	backboneEps, backboneMomentum = 1e-3, 0.01
	headEps, headMomentum         = 1e-5, 0.1
)

type act int

const (
	actNone act = iota
	actReLU
	actHardSwish
)

// Forward builds the network on image x [N,3,H,W] (normalised) and computes in x's element
// type. For float16 (mixed precision) the source may hand out float32 tensors: conv weights
// and biases are cast to float16 where they are used (the cast's gradient returns float32
// gradients to them), and batch norm keeps its statistics and per-channel arithmetic in
// float32 (see batchNormHalf).
func Forward(g *graphs.Graph, x *graphs.Value, a Arch, src ParamSource, mode Mode) *Output {
	return ForwardWith(g, x, a, src, mode, Options{})
}

// ForwardWith is Forward with options.
func ForwardWith(g *graphs.Graph, x *graphs.Value, a Arch, src ParamSource, mode Mode, o Options) *Output {
	if err := a.Validate(); err != nil {
		panic(err)
	}
	if x.Rank() != 4 || x.Dim(1) != 3 {
		panic(fmt.Sprintf("model: input %v, want [N,3,H,W]", x))
	}
	n := &net{g: g, src: src, mode: mode, opts: o, out: &Output{}}
	h := n.convBN("backbone.0", x, 3, a.Stem, 3, 2, 1, 1, actHardSwish, backboneEps, backboneMomentum)
	for i, b := range a.Blocks {
		h = n.invertedResidual(fmt.Sprintf("backbone.%d", i+1), h, b)
		if i+1 == a.LowTap {
			n.out.Low = h
		}
	}
	last := len(a.Blocks) + 1
	h = n.convBN(fmt.Sprintf("backbone.%d", last), h, a.Blocks[len(a.Blocks)-1].Out, a.LastConv, 1, 1, 1, 1, actHardSwish, backboneEps, backboneMomentum)
	n.out.High = h
	logits := n.lrasppHead(n.out.Low, n.out.High, a)
	n.out.Logits = ResizeBilinear(logits, x.Dim(2), x.Dim(3))
	check(n.out.Logits, x.Dim(0), int64(a.Classes), x.Dim(2), x.Dim(3))
	return n.out
}

// castTo casts v to dt unless it has that type already.
func castTo(v *graphs.Value, dt graphs.DType) *graphs.Value {
	if v.DType() == dt {
		return v
	}
	return graphs.Cast(v, dt)
}

func check(v *graphs.Value, dims ...int64) {
	if !v.Shape().Equal(graphs.Shape(dims)) {
		panic(fmt.Sprintf("model: %s has shape %v, want %v", v.Name(), v.Shape(), graphs.Shape(dims)))
	}
}

// invertedResidual: optional 1×1 expansion, depthwise k×k, optional squeeze-and-excite, 1×1
// projection; the input is added back when shapes allow (torchvision InvertedResidual).
func (n *net) invertedResidual(name string, x *graphs.Value, b Block) *graphs.Value {
	defer n.g.Scope(name)()
	a := actReLU
	if b.HardSwish {
		a = actHardSwish
	}
	h := x
	j := 0
	layer := func() string { s := fmt.Sprintf("%s.block.%d", name, j); j++; return s }
	if b.Expanded != b.In {
		h = n.convBN(layer(), h, b.In, b.Expanded, 1, 1, 1, 1, a, backboneEps, backboneMomentum)
	}
	h = n.convBNGroups(layer(), h, b.Expanded, b.Expanded, b.Kernel, b.DepthwiseStride(), b.Dilation, b.Expanded, a, backboneEps, backboneMomentum)
	if b.SE {
		h = n.squeezeExcite(layer(), h, b.Expanded, b.Squeeze)
	}
	h = n.convBN(layer(), h, b.Expanded, b.Out, 1, 1, 1, 1, actNone, backboneEps, backboneMomentum)
	if b.Residual() {
		h = graphs.Add(h, x)
	}
	stride := int64(b.DepthwiseStride())
	check(h, x.Dim(0), int64(b.Out), (x.Dim(2)-1)/stride+1, (x.Dim(3)-1)/stride+1)
	return h
}

// squeezeExcite scales channels by hardsigmoid(fc2(relu(fc1(avgpool(x))))).
func (n *net) squeezeExcite(name string, x *graphs.Value, ch, squeeze int) *graphs.Value {
	s := graphs.ReduceMean(x, true, 2, 3)
	s = graphs.Relu(n.conv(name+".fc1", s, ch, squeeze, 1, 1, 1, 1, true, ConvWeight, ConvBias))
	s = graphs.HardSigmoid(n.conv(name+".fc2", s, squeeze, ch, 1, 1, 1, 1, true, ConvWeight, ConvBias))
	if n.mode == Train && n.opts.FusedSE && x.DType() == graphs.Float16 && s.DType() == graphs.Float16 {
		return graphs.ScaleChannels(x, s)
	}
	return graphs.Mul(x, s)
}

// lrasppHead: cbr(high) · sigmoid(conv(avgpool(high))), upsampled to the low tap, through the
// high classifier, plus the low classifier on the low tap (torchvision LRASPPHead).
func (n *net) lrasppHead(low, high *graphs.Value, a Arch) *graphs.Value {
	defer n.g.Scope("classifier")()
	hc := int(high.Dim(1))
	x := n.convBNInit("classifier.cbr", high, hc, a.Inter, 1, 1, 1, 1, actReLU, headEps, headMomentum, ConvWeightPT)
	s := graphs.ReduceMean(high, true, 2, 3)
	s = graphs.Sigmoid(n.conv("classifier.scale.1", s, hc, a.Inter, 1, 1, 1, 1, false, ConvWeightPT, ConvBiasPT))
	x = graphs.Mul(x, s)
	x = ResizeBilinear(x, low.Dim(2), low.Dim(3))
	lowOut := n.conv("classifier.low_classifier", low, int(low.Dim(1)), a.Classes, 1, 1, 1, 1, true, ConvWeightPT, ConvBiasPT)
	highOut := n.conv("classifier.high_classifier", x, a.Inter, a.Classes, 1, 1, 1, 1, true, ConvWeightPT, ConvBiasPT)
	return graphs.Add(lowOut, highOut)
}

// conv is a plain Conv2d named prefix (prefix.weight, prefix.bias).
func (n *net) conv(prefix string, x *graphs.Value, in, out, k, stride, dil, groups int, bias bool, wk, bk Kind) *graphs.Value {
	fanIn := in / groups * k * k
	w := n.src.Param(n.g, ParamSpec{Name: prefix + ".weight", Shape: graphs.Shape{int64(out), int64(in / groups), int64(k), int64(k)},
		Kind: wk, FanIn: fanIn, FanOut: out * k * k})
	w = castTo(w, x.DType())
	var b *graphs.Value
	if bias {
		b = n.src.Param(n.g, ParamSpec{Name: prefix + ".bias", Shape: graphs.Shape{int64(out)}, Kind: bk, FanIn: fanIn, FanOut: out * k * k})
		b = castTo(b, x.DType())
	}
	p := int64((k - 1) / 2 * dil)
	o := graphs.ConvOpts{
		Strides:   [2]int64{int64(stride), int64(stride)},
		Pads:      [4]int64{p, p, p, p},
		Dilations: [2]int64{int64(dil), int64(dil)},
		Group:     int64(groups),
	}
	if n.mode == Train && n.opts.FusedDepthwise && b == nil && graphs.FusedDepthwiseConv(x, w, o) {
		return graphs.DepthwiseConv16(x, w, o)
	}
	return graphs.Conv(x, w, b, o)
}

func (n *net) convBN(prefix string, x *graphs.Value, in, out, k, stride, dil, groups int, a act, eps, mom float32) *graphs.Value {
	return n.convBNInit(prefix, x, in, out, k, stride, dil, groups, a, eps, mom, ConvWeight)
}

func (n *net) convBNGroups(prefix string, x *graphs.Value, in, out, k, stride, dil, groups int, a act, eps, mom float32) *graphs.Value {
	return n.convBNInit(prefix, x, in, out, k, stride, dil, groups, a, eps, mom, ConvWeight)
}

// convBNInit is torchvision's Conv2dNormActivation: prefix.0 conv (no bias), prefix.1 batch norm,
// then the activation. In Folded mode the conv carries the folded bias and there is no BN.
func (n *net) convBNInit(prefix string, x *graphs.Value, in, out, k, stride, dil, groups int, a act, eps, mom float32, wk Kind) *graphs.Value {
	convName := prefix + ".0"
	if n.mode == Folded {
		return activate(n.conv(convName, x, in, out, k, stride, dil, groups, true, wk, FoldedBias), a)
	}
	h := n.conv(convName, x, in, out, k, stride, dil, groups, false, wk, ConvBias)
	return n.batchNorm(prefix+".1", convName+".weight", h, out, eps, mom, a)
}

func activate(h *graphs.Value, a act) *graphs.Value {
	switch a {
	case actReLU:
		return graphs.Relu(h)
	case actHardSwish:
		return graphs.HardSwish(h)
	}
	return h
}

// batchNorm is batch norm (running statistics in Eval mode, batch statistics in Train mode)
// followed by activation a.
func (n *net) batchNorm(prefix, conv string, x *graphs.Value, ch int, eps, mom float32, a act) *graphs.Value {
	spec := func(suffix string, k Kind) ParamSpec {
		return ParamSpec{Name: prefix + "." + suffix, Shape: graphs.Shape{int64(ch)}, Kind: k, Eps: eps, Momentum: mom, Conv: conv}
	}
	gamma := n.src.Param(n.g, spec("weight", BNWeight))
	beta := n.src.Param(n.g, spec("bias", BNBias))
	meanSpec, varSpec := spec("running_mean", BNMean), spec("running_var", BNVar)
	rm := n.src.Param(n.g, meanSpec)
	rv := n.src.Param(n.g, varSpec)
	if x.DType() != graphs.Float {
		if n.mode == Train && n.opts.FusedBN {
			if !n.opts.FusedActivation {
				return activate(n.batchNormFused(prefix, x, gamma, beta, rm, rv, meanSpec, varSpec, eps, mom, actNone), a)
			}
			return n.batchNormFused(prefix, x, gamma, beta, rm, rv, meanSpec, varSpec, eps, mom, a)
		}
		return activate(n.batchNormHalf(prefix, x, gamma, beta, rm, rv, meanSpec, varSpec, eps, mom), a)
	}
	if n.mode == Eval {
		return activate(graphs.BatchNormInference(x, gamma, beta, rm, rv, eps), a)
	}
	// Training mode, as PyTorch: normalise with the biased batch variance; the running
	// variance is updated with the unbiased one. The normalisation is one composite with the
	// fused batch-norm gradient, written for few full-size passes (ORT runs each node as one):
	//   forward  μ = mean(x), xc = x−μ, σ² = Σxc²/M (ReduceSumSquare, no squared copy),
	//            y = BatchNormalization(x; γ, β, μ, σ²) (inference form: one affine pass);
	//   backward dβ = Σdy, dγ = Σdy·xc/σ, dx = γ/σ·(dy − mean(dy)) − xc·γ·Σdy·xc/(M·σ³),
	//            the first term one BatchNormalization pass with scale γ/σ, mean mean(dy),
	//            variance 0 and epsilon 1 (an exact per-channel affine).
	// Two full-size passes forward and three backward (plus the reductions), against five and
	// five when x̂ = (x−μ)/σ is materialised and differentiated as written.
	c := int64(ch)
	bc := graphs.Shape{1, c, 1, 1}
	cs := graphs.Shape{c}
	m := 1 / float32(x.Dim(0)*x.Dim(2)*x.Dim(3))
	var mean, variance, xc, inv *graphs.Value
	y := n.g.Composite(prefix, []*graphs.Value{x, gamma, beta}, func() []*graphs.Value {
		mean = graphs.ChannelMean(x, false)
		xc = graphs.Sub(x, graphs.Reshape(mean, bc))
		variance = graphs.Mul(graphs.ChannelSumSquare(xc, false), graphs.ScalarLike(x, m))
		inv = graphs.Reciprocal(graphs.Sqrt(graphs.Add(variance, graphs.ScalarLike(variance, eps))))
		return []*graphs.Value{graphs.BatchNormInference(x, gamma, beta, mean, variance, eps)}
	}, func(dys []*graphs.Value, want []bool) []*graphs.Value {
		dy := dys[0]
		sumDy := graphs.ChannelSum(dy, false)
		sumDyXc := graphs.ChannelSum(graphs.Mul(dy, xc), false)
		out := make([]*graphs.Value, 3)
		if want[0] {
			k := graphs.Mul(inv, gamma)                                                                         // γ/σ
			b := graphs.Mul(graphs.Mul(k, graphs.Mul(inv, inv)), graphs.Mul(sumDyXc, graphs.ScalarLike(dy, m))) // γ·Σdy·xc/(M·σ³)
			meanDy := graphs.Mul(sumDy, graphs.ScalarLike(dy, m))
			zero := graphs.ConstLike(dy, cs, make([]float32, c)...)
			out[0] = graphs.Sub(graphs.BatchNormInference(dy, k, zero, meanDy, zero, 1), graphs.Mul(xc, graphs.Reshape(b, bc)))
		}
		if want[1] {
			out[1] = graphs.Mul(sumDyXc, inv)
		}
		if want[2] {
			out[2] = sumDy
		}
		return out
	})[0]
	n.recordBN(x, meanSpec, varSpec, rm, rv, mean, variance, mom)
	return activate(y, a)
}

// batchNormHalf is batch norm on a float16 activation with float32 statistics, as mixed
// precision training does it: float16 keeps 11 significant bits, too few for sums over a
// whole batch, so the reductions run on the activation cast to float32, and the per-channel
// scale γ/σ and shift β−μ·γ/σ are computed in float32 and applied in float16 (one multiply and
// one add over the full tensor). In Eval mode μ and σ are the running statistics. In Train
// mode the fused gradient likewise reduces Σdy and Σdy·(x−μ) in float32 and applies
// dx = a·dy + b·x + c with per-channel a = γ/σ, b = −a·Σdy·(x−μ)/(M·σ²), c = −a·Σdy/M − b·μ
// (the same expression as the float32 rule, with x̂ = (x−μ)/σ expanded).
func (n *net) batchNormHalf(prefix string, x, gamma, beta, rm, rv *graphs.Value, meanSpec, varSpec ParamSpec, eps, mom float32) *graphs.Value {
	c := x.Dim(1)
	bc := graphs.Shape{1, c, 1, 1}
	half := x.DType()
	apply := func(x, scale, shift *graphs.Value) *graphs.Value { // x·scale + shift, scale and shift float32 [C]
		s := graphs.Cast(graphs.Reshape(scale, bc), half)
		t := graphs.Cast(graphs.Reshape(shift, bc), half)
		return graphs.Add(graphs.Mul(x, s), t)
	}
	affine := func(mean, variance *graphs.Value) (scale, shift, inv *graphs.Value) { // [C] float32
		inv = graphs.Reciprocal(graphs.Sqrt(graphs.Add(variance, graphs.ScalarLike(variance, eps))))
		scale = graphs.Mul(gamma, inv)
		shift = graphs.Sub(beta, graphs.Mul(mean, scale))
		return scale, shift, inv
	}
	if n.mode == Eval {
		scale, shift, _ := affine(rm, rv)
		return apply(x, scale, shift)
	}
	var mean, variance, inv *graphs.Value // [C] float32
	count := x.Dim(0) * x.Dim(2) * x.Dim(3)
	y := n.g.Composite(prefix, []*graphs.Value{x, gamma, beta}, func() []*graphs.Value {
		xf := graphs.Cast(x, graphs.Float)
		m := graphs.ChannelMean(xf, true)
		xc := graphs.Sub(xf, m)
		mean = graphs.Reshape(m, graphs.Shape{c})
		variance = graphs.ChannelMean(graphs.Mul(xc, xc), false)
		var scale, shift *graphs.Value
		scale, shift, inv = affine(mean, variance)
		return []*graphs.Value{apply(x, scale, shift)}
	}, func(dys []*graphs.Value, want []bool) []*graphs.Value {
		dyf := graphs.Cast(dys[0], graphs.Float)
		// x−μ is formed again from the float16 x rather than kept from the forward pass: a
		// float32 copy of every activation would live from the forward to the backward pass.
		xc := graphs.Sub(graphs.Cast(x, graphs.Float), graphs.Reshape(mean, bc))
		sumDy := graphs.ChannelSum(dyf, false)
		sumDyXc := graphs.ChannelSum(graphs.Mul(dyf, xc), false)
		out := make([]*graphs.Value, 3)
		if want[0] {
			m := graphs.ScalarLike(sumDy, 1/float32(count))
			a := graphs.Mul(gamma, inv)
			b := graphs.Neg(graphs.Mul(graphs.Mul(a, graphs.Mul(inv, inv)), graphs.Mul(sumDyXc, m)))
			cc := graphs.Sub(graphs.Neg(graphs.Mul(a, graphs.Mul(sumDy, m))), graphs.Mul(b, mean))
			out[0] = graphs.Add(graphs.Mul(dys[0], graphs.Cast(graphs.Reshape(a, bc), half)), apply(x, b, cc))
		}
		if want[1] {
			out[1] = graphs.Mul(sumDyXc, inv) // Σdy·x̂
		}
		if want[2] {
			out[2] = sumDy
		}
		return out
	})[0]
	n.recordBN(x, meanSpec, varSpec, rm, rv, mean, variance, mom)
	return y
}

// batchNormFused is batchNormHalf's Train mode and the activation after it as two fused
// operators (Options.FusedBN): the same arithmetic (float32 statistics and sums, float16
// activations and gradients) in five full-tensor passes instead of about fifteen, plus the
// activation's four or more.
func (n *net) batchNormFused(prefix string, x, gamma, beta, rm, rv *graphs.Value, meanSpec, varSpec ParamSpec, eps, mom float32, a act) *graphs.Value {
	fa := map[act]graphs.BNActivation{actNone: graphs.BNNoActivation, actReLU: graphs.BNReLU, actHardSwish: graphs.BNHardSwish}[a]
	var mean, variance *graphs.Value
	y := n.g.Composite(prefix, []*graphs.Value{x, gamma, beta}, func() []*graphs.Value {
		var y *graphs.Value
		y, mean, variance = graphs.BatchNormTrain16(x, gamma, beta, eps, fa)
		return []*graphs.Value{y}
	}, func(dys []*graphs.Value, want []bool) []*graphs.Value {
		dx, dgamma, dbeta := graphs.BatchNormTrain16Grad(dys[0], x, gamma, beta, mean, variance, eps, fa)
		out := []*graphs.Value{dx, dgamma, dbeta}
		for i, w := range want {
			if !w {
				out[i] = nil
			}
		}
		return out
	})[0]
	n.recordBN(x, meanSpec, varSpec, rm, rv, mean, variance, mom)
	return y
}
