package step

import (
	"fmt"
	"math"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// AdamW hyper-parameters, torch.optim.AdamW's defaults.
type AdamW struct {
	Beta1       float32 `json:"beta1"`
	Beta2       float32 `json:"beta2"`
	Eps         float32 `json:"eps"`
	WeightDecay float32 `json:"weight_decay"`
}

// DefaultAdamW matches torch.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01).
var DefaultAdamW = AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}

// Config describes a train or eval step.
type Config struct {
	Arch          model.Arch
	Batch         int // static batch size (train step); eval and inference take any batch
	Height, Width int
	Loss          LossWeights
	Adam          AdamW
	ClipNorm      float32 // clip the global gradient norm to this (0: off), as torch's clip_grad_norm_
	// Masked adds the input param_mask (float32 [P], flat like the moments): gradients and
	// updated parameters are multiplied by it, so pruned weights (mask 0) stay exactly zero
	// while the rest trains (unstructured pruning's fine-tuning).
	Masked bool
	// DepthwiseWeightGrad picks the depthwise weight-gradient formulation (graphs.GradOptions):
	// "" or "conv", "taps", "im2col", "gather" (im2col with the patches unfolded by a Gather) or
	// "fused" (FP16 only: our operator for depthwise layers, which needs a session with
	// runtime.DeviceOptions.CustomOps; gather for the rest).
	DepthwiseWeightGrad string
	// WeightGradProduct picks the 1×1 convolutions' weight-gradient formulation
	// (graphs.GradOptions): "" or "batched", "blockdiag" (one product of the whole batch where
	// the batched one is thin and long) or "blockdiag-all".
	WeightGradProduct string
	// FP16 builds mixed-precision graphs (for the GPU): float16 convolutions, activations and
	// resizes; float32 master weights, batch-norm statistics, loss and optimizer. Inputs and
	// outputs keep their names, types and shapes, so state moves freely between FP32 and FP16
	// steps; the FP16 train step adds dynamic loss scaling and makes the step counter state.
	FP16 bool
	// LossScale tunes the FP16 train step's dynamic loss scaling (zero fields: defaults).
	LossScale LossScaling
	// FusedBN (FP16 only) builds the train step's batch norm from fused operators
	// (model.Options.FusedBN): the step then needs a session with runtime.DeviceOptions.CustomOps.
	FusedBN bool
	// FusedActivation (with FusedBN) fuses the ReLU or HardSwish after batch norm into its
	// operators (model.Options.FusedActivation).
	FusedActivation bool
	// FusedDepthwise (FP16 only) builds the train step's depthwise convolutions from our
	// operators (model.Options.FusedDepthwise); like FusedBN it needs CustomOps sessions.
	FusedDepthwise bool
	// FusedSE (FP16 only) scales the squeeze-and-excitation blocks with our operators
	// (model.Options.FusedSE); it needs CustomOps sessions.
	FusedSE bool
	// FusedPack (FP16 only) lays the parameters and gradients out for the optimizer with our
	// PackRows and UnpackRows operators instead of Concat, Split and a Cast per tensor, and hands
	// the forward its float16 weights straight from the packed parameters (packedSource); like
	// FusedBN it needs CustomOps sessions. The results are the same bit for bit.
	FusedPack bool
	// FusedAdam (FP16 only) runs AdamW as our operator (graphs.AdamW): one pass over
	// parameters, gradients and moments instead of about twenty element-wise nodes, with the
	// loss scale's reciprocal, the clipping factor and the skip on overflow folded in. The
	// results are the same bit for bit while the loss scale is a power of two (as dynamic loss
	// scaling keeps it from its default start). Not with Masked, whose steps keep ONNX
	// operators. Needs CustomOps sessions.
	FusedAdam bool
	// FusedLoss (FP16 only) computes the loss's per-image sums and their gradient with our
	// operators on the float16 logits (graphs.SegLoss16): two nodes instead of about forty
	// full-resolution float32 passes. Needs CustomOps sessions.
	FusedLoss bool
	// NCHWcBlock > 0 builds the float32 depthwise convolutions of the train and eval steps on
	// ONNX Runtime's blocked CPU kernels with that block size (graphs.Graph.NCHWcBlock), for
	// in-process CPU sessions only: such graphs are not standard ONNX. 0 leaves the choice to
	// whoever opens the session (the pipeline probes the CPU); -1 keeps the graphs standard.
	NCHWcBlock int64
}

// LossScaling is dynamic loss scaling with torch.cuda.amp.GradScaler's semantics: the loss is
// multiplied by the scale before differentiation so that small float16 gradients do not flush
// to zero; a step whose gradients hold Inf or NaN is skipped and the scale multiplied by
// Backoff; after Interval consecutive good steps it is multiplied by Growth.
type LossScaling struct {
	Init     float32 `json:"init"`     // the first step's scale (the host's initial loss_scale)
	Growth   float32 `json:"growth"`   // factor after Interval good steps
	Backoff  float32 `json:"backoff"`  // factor after a step with non-finite gradients
	Interval int     `json:"interval"` // good steps between growths
}

// DefaultLossScaling is GradScaler's: init 2^16, growth 2, backoff 0.5, interval 2000.
var DefaultLossScaling = LossScaling{Init: 65536, Growth: 2, Backoff: 0.5, Interval: 2000}

// WithDefaults fills the zero fields from DefaultLossScaling.
func (l LossScaling) WithDefaults() LossScaling {
	d := DefaultLossScaling
	if l.Init == 0 {
		l.Init = d.Init
	}
	if l.Growth == 0 {
		l.Growth = d.Growth
	}
	if l.Backoff == 0 {
		l.Backoff = d.Backoff
	}
	if l.Interval == 0 {
		l.Interval = d.Interval
	}
	return l
}

// Names of the step graphs' inputs and outputs besides the parameters.
const (
	InputImage  = "image"  // float32 [N,3,H,W], normalised
	InputTarget = "target" // int64 [N,H,W], class per pixel
	InputLR     = "lr"     // float32 scalar
	InputStep   = "step"   // float32 scalar: this update's 1-based index (bias correction)
	OutLoss     = "loss"
	OutCE       = "loss_ce"
	OutDice     = "loss_dice"
	OutGradNorm = "grad_norm"
	OutLogits   = "logits"
)

// Next names the output that carries the updated value of a state tensor.
func Next(name string) string { return name + ".next" }

// AdamW's first and second moments of all trainable parameters, flattened in the order of
// Arch.Params() (float32 [P]).
const (
	InputMomentM   = "adam.m"
	InputMomentV   = "adam.v"
	InputParamMask = "param_mask"
)

// inputSource declares every network tensor as a graph input.
type inputSource struct{ vals map[string]*graphs.Value }

func (s *inputSource) Param(g *graphs.Graph, spec model.ParamSpec) *graphs.Value {
	v := g.Input(spec.Name, graphs.Float, spec.Shape)
	s.vals[spec.Name] = v
	return v
}

// CustomOps reports whether the step's graphs use our operators (CardsegDomain), so that
// sessions for them need runtime.DeviceOptions.CustomOps.
func (c Config) CustomOps() bool {
	return c.FusedBN || c.FusedDepthwise || c.FusedSE || c.FusedPack || c.FusedAdam || c.FusedLoss || c.DepthwiseWeightGrad == "fused"
}

func (c Config) validate() error {
	if d := c.DepthwiseWeightGrad; d != "" && d != "conv" && d != "taps" && d != "im2col" && d != "gather" && d != "fused" {
		return fmt.Errorf("step: depthwise weight gradient %q: want conv, taps, im2col, gather or fused", d)
	}
	if p := c.WeightGradProduct; p != "" && p != "batched" && p != "blockdiag" && p != "blockdiag-all" {
		return fmt.Errorf("step: pointwise weight gradient %q: want batched, blockdiag or blockdiag-all", p)
	}
	if c.DepthwiseWeightGrad == "fused" && !c.FP16 {
		return fmt.Errorf("step: the fused depthwise weight gradient is for the FP16 step only (its operator takes float16)")
	}
	if b := c.NCHWcBlock; b > 0 && (b < 4 || b&(b-1) != 0) {
		return fmt.Errorf("step: NCHWc block %d: want a power of two, at least 4", b)
	}
	if c.Batch < 1 || c.Height < 32 || c.Width < 32 {
		return fmt.Errorf("step: batch %d and size %dx%d: want batch >= 1 and sides >= 32", c.Batch, c.Height, c.Width)
	}
	if c.Height%16 != 0 || c.Width%16 != 0 {
		return fmt.Errorf("step: size %dx%d: height and width must be multiples of 16 (the backbone's output stride)", c.Height, c.Width)
	}
	if c.FusedActivation && !c.FusedBN {
		return fmt.Errorf("step: the fused activation is part of the fused batch norm (FusedActivation needs FusedBN)")
	}
	if (c.FusedBN || c.FusedDepthwise) && !c.FP16 {
		return fmt.Errorf("step: fused batch norm and depthwise convolutions are for the FP16 step only (the operators take float16)")
	}
	if (c.FusedPack || c.FusedAdam || c.FusedLoss || c.FusedSE) && !c.FP16 {
		return fmt.Errorf("step: the packing, AdamW, loss and squeeze-and-excitation operators are for the FP16 step only")
	}
	if l := c.LossScale.WithDefaults(); c.FP16 && !(l.Init > 0 && l.Growth >= 1 && l.Backoff > 0 && l.Backoff < 1 && l.Interval >= 1) {
		return fmt.Errorf("step: loss scaling %+v: want init > 0, growth >= 1, 0 < backoff < 1, interval >= 1", l)
	}
	return c.Arch.Validate()
}

// TrainStep builds the training step: training-mode forward, loss, gradients, optional
// clipping, AdamW, batch-norm running statistics. Inputs: image, target, lr, step, every
// parameter and BN buffer (by torchvision name), and the flat moments adam.m / adam.v. Outputs:
// loss, loss_ce, loss_dice, grad_norm, then <name>.next for each state tensor. With c.FP16
// it is the mixed-precision step with dynamic loss scaling: extra inputs loss_scale and
// loss_scale.good, extra outputs found_inf, step.next, loss_scale.next and
// loss_scale.good.next (the package doc lists them all; StatePairs pairs them up).
func TrainStep(c Config) (*graphs.Graph, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	g := graphs.New("train_step")
	err := graphs.Build(func() error {
		fb, err := forwardBackward(g, c)
		if err != nil {
			return err
		}
		lr := g.Input(InputLR, graphs.Float, graphs.Shape{})
		stepN := g.Input(InputStep, graphs.Float, graphs.Shape{})
		out, loss, params, grads, trainable := fb.out, fb.loss, fb.params, fb.grads, fb.trainable
		g.Output(OutLoss, loss.Total)
		g.Output(OutCE, loss.CE)
		g.Output(OutDice, loss.Dice)
		defer g.Scope("optimizer")()
		// AdamW runs on all parameters at once: gradients and parameters are laid end to end
		// (the moments live flat, in the same order), so the update is a dozen large
		// elementwise ops instead of a dozen per tensor. The layout is a [P/8, 8] matrix
		// rather than a [P] vector for the CUDA provider's sake (rowLayout).
		layout := fb.layout
		// The fused AdamW multiplies the gradients by the loss scale's reciprocal (and the
		// clipping factor) itself; their sum of squares is then taken before it, times the
		// reciprocal squared: the same, bit for bit, for a power-of-two scale.
		fusedAdam := c.FusedAdam && !c.Masked && fb.scaler != nil
		flatGrad := layout.pack(grads)
		if fb.scaler != nil && !fusedAdam {
			flatGrad = fb.scaler.unscale(flatGrad)
		}
		flatParam := fb.packedParams
		if flatParam == nil {
			flatParam = layout.pack(params)
		}
		total := layout.total
		var mask *graphs.Value
		if c.Masked {
			mask = layout.fromFlat(g.Input(InputParamMask, graphs.Float, graphs.Shape{total}))
			flatGrad = graphs.Mul(flatGrad, mask)
		}
		sumSq := graphs.ReduceSum(graphs.Mul(flatGrad, flatGrad), false)
		var gscale *graphs.Value // the fused AdamW's gradient factor
		if fusedAdam {
			gscale = fb.scaler.inverse()
			sumSq = graphs.Mul(sumSq, graphs.Mul(gscale, gscale))
		}
		norm := graphs.Sqrt(sumSq)
		g.Output(OutGradNorm, norm)
		keep := func(old, updated *graphs.Value) *graphs.Value { return updated }
		if fb.scaler != nil {
			g.Output(OutFoundInf, fb.scaler.check(sumSq))
			keep = fb.scaler.keepIfSkipped
		}
		if c.ClipNorm > 0 {
			// torch: coef = max_norm / (norm + 1e-6), applied only when below 1.
			coef := graphs.Div(graphs.Scalar(g, c.ClipNorm), graphs.Add(norm, graphs.Scalar(g, 1e-6)))
			coef = graphs.Where(graphs.Less(coef, graphs.Scalar(g, 1)), coef, graphs.Scalar(g, 1))
			if fusedAdam {
				gscale = graphs.Mul(gscale, coef)
			} else {
				flatGrad = graphs.Mul(flatGrad, coef)
			}
		}
		opt := newAdamW(g, c.Adam, lr, stepN)
		mFlat := g.Input(InputMomentM, graphs.Float, graphs.Shape{total})
		vFlat := g.Input(InputMomentV, graphs.Float, graphs.Shape{total})
		var p2 *graphs.Value
		if fusedAdam {
			var m2, v2 *graphs.Value
			p2, m2, v2 = graphs.AdamW(flatParam, flatGrad, mFlat, vFlat, opt.decay, opt.stepSize, opt.invSqBC2, gscale, fb.scaler.found,
				c.Adam.Beta1, c.Adam.Beta2, c.Adam.Eps)
			g.Output(Next(InputMomentM), m2)
			g.Output(Next(InputMomentV), v2)
		} else {
			m, v := layout.fromFlat(mFlat), layout.fromFlat(vFlat)
			var m2, v2 *graphs.Value
			p2, m2, v2 = opt.update(flatParam, flatGrad, m, v)
			if mask != nil {
				p2 = graphs.Mul(p2, mask)
			}
			p2, m2, v2 = keep(flatParam, p2), keep(m, m2), keep(v, v2)
			g.Output(Next(InputMomentM), layout.toFlat(m2))
			g.Output(Next(InputMomentV), layout.toFlat(v2))
		}
		for i, piece := range layout.unpack(p2) {
			g.Output(Next(trainable[i].Name), piece)
		}
		// The running statistics are updated all at once too, laid out like the parameters:
		// a few ops over every buffer instead of four tiny kernels per buffer (~380 launches
		// of a few microseconds each on CUDA). PyTorch's update: (1−m)·running + m·batch.
		// The variance's count/(count−1) goes into the batch side's constants (m·count/(count−1)),
		// so the biased variances are packed as they are.
		var bnShapes []graphs.Shape
		var running, batch []*graphs.Value
		var keepFrac, batchFrac []float32
		for _, u := range out.BN {
			for k, pair := range [][2]*graphs.Value{{u.RunMean, u.BatchMean}, {u.RunVar, u.BatchVar}} {
				bnShapes = append(bnShapes, pair[0].Shape())
				running, batch = append(running, pair[0]), append(batch, pair[1])
				scale := float32(1)
				if k == 1 {
					scale = u.Unbias
				}
				for range pair[0].Shape().Size() {
					keepFrac = append(keepFrac, 1-u.Momentum)
					batchFrac = append(batchFrac, u.Momentum*scale)
				}
			}
		}
		if len(running) > 0 {
			bn := newRowLayout(bnShapes, c.FusedPack)
			keepFrac = append(keepFrac, make([]float32, bn.pad())...)
			batchFrac = append(batchFrac, make([]float32, bn.pad())...)
			old := bn.pack(running)
			shape := graphs.Shape{bn.rows, rowWidth}
			updated := graphs.Add(graphs.Mul(old, g.ConstFloat(shape, keepFrac...)), graphs.Mul(bn.pack(batch), g.ConstFloat(shape, batchFrac...)))
			for i, v := range bn.unpack(keep(old, updated)) {
				name := out.BN[i/2].Mean.Name
				if i%2 == 1 {
					name = out.BN[i/2].Var.Name
				}
				g.Output(Next(name), v)
			}
		}
		if fb.scaler != nil {
			fb.scaler.outputs(g, stepN)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

type adamW struct {
	cfg                       AdamW
	decay, stepSize, invSqBC2 *graphs.Value
}

// newAdamW computes the per-step scalars once: 1 − lr·wd, lr/(1−β1^t), 1/√(1−β2^t).
func newAdamW(g *graphs.Graph, c AdamW, lr, t *graphs.Value) *adamW {
	pow := func(beta float32) *graphs.Value { // β^t = exp(t·ln β)
		return graphs.Exp(graphs.Mul(t, graphs.Scalar(g, float32(math.Log(float64(beta))))))
	}
	one := graphs.Scalar(g, 1)
	bc1 := graphs.Sub(one, pow(c.Beta1))
	bc2 := graphs.Sub(one, pow(c.Beta2))
	return &adamW{
		cfg:      c,
		decay:    graphs.Sub(one, graphs.Mul(lr, graphs.Scalar(g, c.WeightDecay))),
		stepSize: graphs.Div(lr, bc1),
		invSqBC2: graphs.Reciprocal(graphs.Sqrt(bc2)),
	}
}

// update is torch.optim.AdamW's step for one tensor (decoupled weight decay first).
func (a *adamW) update(p, grad, m, v *graphs.Value) (p2, m2, v2 *graphs.Value) {
	g := p.Graph()
	c := a.cfg
	m2 = graphs.Add(graphs.Mul(m, graphs.Scalar(g, c.Beta1)), graphs.Mul(grad, graphs.Scalar(g, 1-c.Beta1)))
	v2 = graphs.Add(graphs.Mul(v, graphs.Scalar(g, c.Beta2)), graphs.Mul(graphs.Mul(grad, grad), graphs.Scalar(g, 1-c.Beta2)))
	denom := graphs.Add(graphs.Mul(graphs.Sqrt(v2), a.invSqBC2), graphs.Scalar(g, c.Eps))
	p2 = graphs.Sub(graphs.Mul(p, a.decay), graphs.Mul(graphs.Div(m2, denom), a.stepSize))
	return p2, m2, v2
}

// GradGraph builds a training-mode forward, loss and gradients only: outputs loss and
// grad.<name> for every trainable parameter (what `graphs check-grad` runs). With c.FP16 it
// takes loss_scale too and outputs the unscaled gradients.
func GradGraph(c Config) (*graphs.Graph, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	g := graphs.New("grad_check")
	err := graphs.Build(func() error {
		fb, err := forwardBackward(g, c)
		if err != nil {
			return err
		}
		loss, grads := fb.loss, fb.grads
		g.Output(OutLoss, loss.Total)
		g.Output(OutCE, loss.CE)
		g.Output(OutDice, loss.Dice)
		for i, d := range grads {
			if d.DType() != graphs.Float { // the float16 weights of a FusedPack step
				d = graphs.Cast(d, graphs.Float)
			}
			if fb.scaler != nil {
				d = fb.scaler.unscale(d)
			}
			g.Output("grad."+fb.trainable[i].Name, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// fwdBwd is the part the train step and the gradient check share.
type fwdBwd struct {
	out       *model.Output
	loss      Loss
	trainable []model.ParamSpec
	// params are what the forward took for the trainable tensors, in trainable's order: their
	// graph inputs, or with FusedPack the float16 weights unpacked from packedParams.
	params       []*graphs.Value
	grads        []*graphs.Value // with respect to params; multiplied by the loss scale when scaler is set
	scaler       *lossScaler     // FP16 only
	layout       rowLayout       // the trainable tensors' optimizer layout
	packedParams *graphs.Value   // FusedPack: the trainable inputs already in layout
}

// packedSource is the FusedPack step's ParamSource: every network tensor is declared as a
// graph input up front, the trainable ones are packed into the optimizer's matrix at once
// (PackRows), and the forward gets the convolutions' weights and biases as float16 straight
// from that matrix (UnpackRows16): two nodes instead of a Cast per tensor. Gradients are then
// taken with respect to those float16 values, which PackRows turns into the float32 matrix
// the optimizer wants, again instead of a Cast per tensor and a Concat.
type packedSource struct {
	vals   map[string]*graphs.Value // what Param hands out
	matrix *graphs.Value
}

// halfInForward reports whether the FP16 forward takes tensors of kind k in float16.
func halfInForward(k model.Kind) bool {
	return k == model.ConvWeight || k == model.ConvWeightPT || k == model.ConvBias || k == model.ConvBiasPT
}

// specs are the architecture's trainable tensors, in the order layout packs them.
func newPackedSource(g *graphs.Graph, arch model.Arch, specs []model.ParamSpec, layout rowLayout) *packedSource {
	ps := &packedSource{vals: map[string]*graphs.Value{}}
	for _, s := range arch.Params() {
		ps.vals[s.Name] = g.Input(s.Name, graphs.Float, s.Shape)
	}
	trainable := make([]*graphs.Value, len(specs))
	for i, s := range specs {
		trainable[i] = ps.vals[s.Name]
	}
	ps.matrix = layout.pack(trainable)
	// UnpackRows16 takes tensors from the matrix's start one after another, so it unpacks them
	// all; the batch-norm parameters' float16 copies (a few thousand values) go unused.
	for i, h := range graphs.UnpackRows(ps.matrix, graphs.Float16, layout.shapes) {
		if halfInForward(specs[i].Kind) {
			ps.vals[specs[i].Name] = h
		}
	}
	return ps
}

func (ps *packedSource) Param(g *graphs.Graph, spec model.ParamSpec) *graphs.Value {
	v, ok := ps.vals[spec.Name]
	if !ok {
		panic(fmt.Sprintf("step: the forward asks for %s, which is not among the architecture's parameters", spec.Name))
	}
	return v
}

// forwardBackward declares image, target and every network tensor as inputs, builds the
// training-mode forward and the loss, and differentiates it with respect to the trainable
// parameters.
func forwardBackward(g *graphs.Graph, c Config) (fwdBwd, error) {
	var fb fwdBwd
	g.Grad.DepthwiseWeightGrad = c.DepthwiseWeightGrad
	g.Grad.WeightGradProduct = c.WeightGradProduct
	g.NCHWcBlock = max(c.NCHWcBlock, 0)
	image := g.Input(InputImage, graphs.Float, graphs.Shape{int64(c.Batch), 3, int64(c.Height), int64(c.Width)})
	target := g.Input(InputTarget, graphs.Int64, graphs.Shape{int64(c.Batch), int64(c.Height), int64(c.Width)})
	var shapes []graphs.Shape
	for _, s := range c.Arch.Params() {
		if s.Kind.Trainable() {
			fb.trainable = append(fb.trainable, s)
			shapes = append(shapes, s.Shape)
		}
	}
	fb.layout = newRowLayout(shapes, c.FusedPack)
	src := &inputSource{vals: map[string]*graphs.Value{}}
	var params model.ParamSource = src
	if c.FusedPack {
		ps := newPackedSource(g, c.Arch, fb.trainable, fb.layout)
		src.vals, params, fb.packedParams = ps.vals, ps, ps.matrix
	}
	fb.out = model.ForwardWith(g, computeInput(image, c), c.Arch, params, model.Train, model.Options{FusedBN: c.FusedBN, FusedActivation: c.FusedActivation, FusedDepthwise: c.FusedDepthwise, FusedSE: c.FusedSE})
	if c.FusedLoss && fb.out.Logits.DType() == graphs.Float16 {
		fb.loss = segLossFused(fb.out.Logits, target, c.Loss)
	} else {
		fb.loss = SegLoss(lossInput(fb.out.Logits), target, c.Loss)
	}
	for _, s := range fb.trainable {
		fb.params = append(fb.params, src.vals[s.Name])
	}
	seed := fb.loss.Total
	if c.FP16 {
		fb.scaler = newLossScaler(g, c.LossScale.WithDefaults())
		seed = graphs.Mul(seed, fb.scaler.scale)
	}
	var err error
	fb.grads, err = graphs.Grad(seed, fb.params)
	return fb, err
}

// computeInput is the image in the forward's compute type: float16 for FP16 graphs, whose
// image input stays float32 (one contract for every graph and the host's loader).
func computeInput(image *graphs.Value, c Config) *graphs.Value {
	if c.FP16 {
		return graphs.Cast(image, graphs.Float16)
	}
	return image
}

// lossInput is the logits in float32: the loss and its sums over all pixels need float32's
// range and precision whatever the forward computed in.
func lossInput(logits *graphs.Value) *graphs.Value {
	if logits.DType() != graphs.Float {
		return graphs.Cast(logits, graphs.Float)
	}
	return logits
}
