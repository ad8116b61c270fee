package graphs_test

import (
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
)

type V = *graphs.Value

func one(f func(V) V) func([]V) V    { return func(x []V) V { return f(x[0]) } }
func two(f func(V, V) V) func([]V) V { return func(x []V) V { return f(x[0], x[1]) } }

const D, F = graphs.Double, graphs.Float

func TestGradientRules(t *testing.T) {
	s := func(d ...int64) graphs.Shape { return graphs.Shape(d) }
	pos := gradcheck.Uniform(0.5, 3)
	mk := func(name string, dt graphs.DType, ins []gradcheck.In, f func([]V) V) gradcheck.Case {
		return gradcheck.Case{Name: name, DType: dt, Ins: ins, F: f}
	}
	cases := []gradcheck.Case{
		mk("add broadcast", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}, {Shape: s(3, 1), Diff: true}}, two(graphs.Add)),
		mk("sub broadcast", D, []gradcheck.In{{Shape: s(3, 1), Diff: true}, {Shape: s(2, 3, 4), Diff: true}}, two(graphs.Sub)),
		mk("mul broadcast", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}, {Shape: s(4), Diff: true}}, two(graphs.Mul)),
		mk("div", D, []gradcheck.In{{Shape: s(2, 3), Diff: true}, {Shape: s(2, 1), Gen: pos, Diff: true}}, two(graphs.Div)),
		mk("neg", D, []gradcheck.In{{Shape: s(5), Diff: true}}, one(graphs.Neg)),
		mk("exp", D, []gradcheck.In{{Shape: s(5), Diff: true}}, one(graphs.Exp)),
		mk("log", D, []gradcheck.In{{Shape: s(5), Gen: pos, Diff: true}}, one(graphs.Log)),
		mk("sqrt", D, []gradcheck.In{{Shape: s(5), Gen: pos, Diff: true}}, one(graphs.Sqrt)),
		mk("reciprocal", D, []gradcheck.In{{Shape: s(5), Gen: pos, Diff: true}}, one(graphs.Reciprocal)),
		mk("pow", D, []gradcheck.In{{Shape: s(5), Gen: pos, Diff: true}}, one(func(x V) V { return graphs.Pow(x, 2.5) })),
		mk("relu", D, []gradcheck.In{{Shape: s(3, 4), Gen: gradcheck.AwayFrom(2, 0.05, 0), Diff: true}}, one(graphs.Relu)),
		mk("sigmoid", D, []gradcheck.In{{Shape: s(3, 4), Diff: true}}, one(graphs.Sigmoid)),
		mk("hardsigmoid", F, []gradcheck.In{{Shape: s(4, 5), Gen: gradcheck.AwayFrom(5, 0.1, -3, 3), Diff: true}}, one(graphs.HardSigmoid)),
		mk("hardswish", F, []gradcheck.In{{Shape: s(4, 5), Gen: gradcheck.AwayFrom(5, 0.1, -3, 3), Diff: true}}, one(graphs.HardSwish)),
		mk("cast float to double", F, []gradcheck.In{{Shape: s(6), Diff: true}}, one(func(x V) V { return graphs.Cast(graphs.Mul(graphs.Cast(x, D), graphs.Cast(x, D)), F) })),
		mk("identity", D, []gradcheck.In{{Shape: s(3), Diff: true}}, one(graphs.Identity)),
		mk("where", D, []gradcheck.In{{Shape: s(2, 3), Diff: true}, {Shape: s(3), Diff: true}}, func(x []V) V {
			return graphs.Where(graphs.Greater(x[0], graphs.ScalarLike(x[0], 0)), x[0], x[1])
		}),
		mk("reducesum axes", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.ReduceSum(x, false, 0, 2) })),
		mk("reducesum keep", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.ReduceSum(x, true, 1) })),
		mk("reducemean", D, []gradcheck.In{{Shape: s(2, 3, 4, 5), Diff: true}}, one(func(x V) V { return graphs.ReduceMean(x, true, 2, 3) })),
		// x reaches the loss through reductions (their gradients broadcast back) and
		// elementwise, and the fan-out sums them.
		mk("reduction fan-out", D, []gradcheck.In{{Shape: s(2, 3, 4, 5), Diff: true}}, one(func(x V) V {
			m := graphs.ReduceMean(x, true, 2, 3)
			return graphs.Add(graphs.Mul(x, graphs.Mul(m, m)), graphs.Div(x, graphs.Add(graphs.ReduceSum(x, true, 0), graphs.ScalarLike(x, 9))))
		})),
		mk("reducesumsquare", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.ReduceSumSquare(x, true, 0, 2) })),
		mk("channelsumsquare", D, []gradcheck.In{{Shape: s(2, 3, 4, 5), Diff: true}}, one(func(x V) V { return graphs.ChannelSumSquare(x, false) })),
		mk("channelmean", D, []gradcheck.In{{Shape: s(2, 3, 4, 5), Diff: true}}, one(func(x V) V { return graphs.ChannelMean(graphs.Mul(x, x), true) })),
		mk("reshape", D, []gradcheck.In{{Shape: s(2, 6), Diff: true}}, one(func(x V) V { return graphs.Mul(graphs.Reshape(x, s(3, 4)), graphs.Reshape(x, s(3, 4))) })),
		mk("transpose", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.Transpose(x, 2, 0, 1) })),
		mk("slice", D, []gradcheck.In{{Shape: s(2, 5, 3), Diff: true}}, one(func(x V) V { return graphs.Slice(x, 1, 1, 4) })),
		mk("pad", D, []gradcheck.In{{Shape: s(2, 3), Diff: true}}, one(func(x V) V { return graphs.Pad(x, []int64{1, 0, 2, 3}) })),
		// One padded axis that is not among the last two, and a vector: both padded as a 2-D view.
		mk("pad channel", D, []gradcheck.In{{Shape: s(2, 1, 3, 2), Diff: true}}, one(func(x V) V { return graphs.Pad(x, []int64{0, 1, 0, 0, 0, 2, 0, 0}) })),
		mk("pad vector", D, []gradcheck.In{{Shape: s(5), Diff: true}}, one(func(x V) V { return graphs.Pad(x, []int64{0, 3}) })),
		mk("expand", D, []gradcheck.In{{Shape: s(3, 1), Diff: true}}, one(func(x V) V { return graphs.Expand(x, s(2, 3, 4)) })),
		mk("concat", D, []gradcheck.In{{Shape: s(2, 3), Diff: true}, {Shape: s(2, 2), Diff: true}}, func(x []V) V { return graphs.Concat(1, x[0], x[1]) }),
		mk("matmul", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}, {Shape: s(4, 5), Diff: true}}, two(graphs.MatMul)),
		mk("matmul batch broadcast", D, []gradcheck.In{{Shape: s(3, 4), Diff: true}, {Shape: s(2, 1, 4, 2), Diff: true}}, two(graphs.MatMul)),
		mk("softmax", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.Softmax(x, 1) })),
		mk("logsoftmax", D, []gradcheck.In{{Shape: s(2, 3, 4), Diff: true}}, one(func(x V) V { return graphs.LogSoftmax(x, -1) })),
		mk("logsoftmax inner axis", D, []gradcheck.In{{Shape: s(2, 3, 4), Gen: gradcheck.Uniform(-30, 30), Diff: true}}, one(func(x V) V { return graphs.LogSoftmax(x, 1) })),
	}
	convs := []struct {
		name string
		x, w graphs.Shape
		bias bool
		opts graphs.ConvOpts
	}{
		{"conv 3x3 pad 1", s(2, 3, 6, 5), s(4, 3, 3, 3), true, graphs.ConvOpts{Pads: [4]int64{1, 1, 1, 1}}},
		{"conv 3x3 stride 2 odd size", s(2, 3, 7, 6), s(4, 3, 3, 3), false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{1, 1, 1, 1}}},
		{"conv depthwise 5x5 stride 2", s(2, 4, 9, 8), s(4, 1, 5, 5), false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{2, 2, 2, 2}, Group: 4}},
		{"conv depthwise 5x5 dilation 2", s(2, 3, 9, 9), s(3, 1, 5, 5), false, graphs.ConvOpts{Dilations: [2]int64{2, 2}, Pads: [4]int64{4, 4, 4, 4}, Group: 3}},
		{"conv depthwise 3x3 stride 2 no pad", s(1, 2, 8, 7), s(2, 1, 3, 3), true, graphs.ConvOpts{Strides: [2]int64{2, 2}, Group: 2}},
		{"conv depthwise 3x3 stride 2 odd", s(2, 3, 7, 9), s(3, 1, 3, 3), false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{1, 1, 1, 1}, Group: 3}},
		{"conv grouped", s(2, 4, 5, 5), s(6, 2, 3, 3), true, graphs.ConvOpts{Pads: [4]int64{1, 1, 1, 1}, Group: 2}},
		{"conv pointwise", s(2, 5, 4, 3), s(3, 5, 1, 1), true, graphs.ConvOpts{}},
		{"conv pointwise on 1x1", s(2, 6, 1, 1), s(4, 6, 1, 1), true, graphs.ConvOpts{}},
		{"conv asymmetric pads", s(1, 2, 6, 7), s(3, 2, 3, 2), false, graphs.ConvOpts{Strides: [2]int64{2, 1}, Pads: [4]int64{0, 1, 1, 0}}},
	}
	for _, c := range convs {
		c := c
		ins := []gradcheck.In{{Shape: c.x, Diff: true}, {Shape: c.w, Diff: true}}
		if c.bias {
			ins = append(ins, gradcheck.In{Shape: graphs.Shape{c.w[0]}, Diff: true})
		}
		cases = append(cases, mk(c.name, F, ins, func(x []V) V {
			var b V
			if c.bias {
				b = x[2]
			}
			return graphs.Conv(x[0], x[1], b, c.opts)
		}))
	}
	// The tap-by-tap depthwise weight gradient, on the depthwise cases above.
	for _, c := range convs {
		c := c
		if c.opts.Group == 0 || c.opts.Group != c.x[1] || c.w[1] != 1 {
			continue
		}
		cases = append(cases, mk(c.name+" taps", F, []gradcheck.In{{Shape: c.x, Diff: true}, {Shape: c.w, Diff: true}}, func(x []V) V {
			x[0].Graph().Grad.DepthwiseWeightGrad = "taps"
			return graphs.Conv(x[0], x[1], nil, c.opts)
		}))
	}
	// The im2col weight gradient (patches unfolded by a Conv or a Gather), on every
	// non-pointwise case above.
	for _, c := range convs {
		c := c
		if c.w[2] == 1 && c.w[3] == 1 {
			continue
		}
		for _, form := range []string{"im2col", "gather"} {
			cases = append(cases, mk(c.name+" "+form, F, []gradcheck.In{{Shape: c.x, Diff: true}, {Shape: c.w, Diff: true}}, func(x []V) V {
				x[0].Graph().Grad.DepthwiseWeightGrad = form
				return graphs.Conv(x[0], x[1], nil, c.opts)
			}))
		}
	}
	// The weight gradient as one product of the whole batch (its diagonal blocks summed): the
	// pointwise cases, and the dense ones with more than one image through the Gather unfold.
	for _, c := range convs {
		c := c
		pointwise := c.w[2] == 1 && c.w[3] == 1
		if !pointwise && (c.opts.Group > 1 || c.x[0] < 2) {
			continue
		}
		cases = append(cases, mk(c.name+" blockdiag", F, []gradcheck.In{{Shape: c.x, Diff: true}, {Shape: c.w, Diff: true}}, func(x []V) V {
			x[0].Graph().Grad.WeightGradProduct = "blockdiag-all"
			x[0].Graph().Grad.DepthwiseWeightGrad = "gather"
			return graphs.Conv(x[0], x[1], nil, c.opts)
		}))
	}
	cases = append(cases, blockedCases(t)...)
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) { gradcheck.Check(t, tc, dir) })
	}
	gradcheck.CheckModels(t, dir)
}

// TestEveryRuleHasAFiniteDifferenceCase keeps the table above complete.
func TestEveryRuleHasAFiniteDifferenceCase(t *testing.T) {
	covered := map[string]bool{"Add": true, "Sub": true, "Mul": true, "Div": true, "Neg": true, "Exp": true, "Log": true,
		"Sqrt": true, "Reciprocal": true, "Pow": true, "Relu": true, "Sigmoid": true, "HardSigmoid": true, "HardSwish": true,
		"Cast": true, "Identity": true, "Where": true, "ReduceSum": true, "ReduceMean": true, "ReduceSumSquare": true, "Reshape": true, "Transpose": true,
		"Slice": true, "Pad": true, "Expand": true, "Concat": true, "MatMul": true, "Softmax": true, "LogSoftmax": true, "Conv": true,
		// blockedCases (run where the CPU has ORT's NCHWc kernels)
		graphs.NCHWcDomain + ":Conv": true, graphs.NCHWcDomain + ":ReorderInput": true, graphs.NCHWcDomain + ":ReorderOutput": true,
		// graphs/model's TestFusedDepthwiseConvFiniteDifferences (our operators need a session
		// with runtime.DeviceOptions.CustomOps)
		graphs.CardsegDomain + ":DepthwiseConv16": true}
	for _, op := range graphs.GradRuleOps() {
		if !covered[op] {
			t.Errorf("gradient rule for %s has no finite-difference case", op)
		}
	}
}

func TestMissingRuleNamesNode(t *testing.T) {
	g := graphs.New("missing")
	x := g.Input("x", graphs.Float, graphs.Shape{2, 3})
	y := graphs.Max(x, graphs.ScalarLike(x, 0))
	_, err := graphs.Grad(graphs.ReduceSum(y, false), []*graphs.Value{x})
	if err == nil {
		t.Fatal("no error for an op without a gradient rule")
	}
	for _, want := range []string{"Max", "x float32[2,3]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestUnpackRowsCarriesNoGradient: Grad takes gradients with respect to UnpackRows's outputs
// (the FP16 step's weights) but reports a loss that reaches them from a value it differentiates
// for, rather than a silent zero; an unused output does not count.
func TestUnpackRowsCarriesNoGradient(t *testing.T) {
	g := graphs.New("unpack")
	a := g.Input("a", graphs.Float, graphs.Shape{2, 3})
	b := g.Input("b", graphs.Float, graphs.Shape{5})
	m := graphs.PackRows(2, a, b)
	ua := graphs.UnpackRows(m, graphs.Float16, []graphs.Shape{{2, 3}, {5}})[0]
	loss := graphs.Add(graphs.ReduceSum(graphs.Cast(ua, graphs.Float), false), graphs.ReduceSum(graphs.Mul(b, b), false))
	grads, err := graphs.Grad(loss, []*graphs.Value{ua, b})
	if err != nil {
		t.Fatal(err)
	}
	if grads[0].DType() != graphs.Float16 || !grads[0].Shape().Equal(graphs.Shape{2, 3}) || !grads[1].Shape().Equal(graphs.Shape{5}) {
		t.Errorf("gradients %v, %v", grads[0], grads[1])
	}
	if _, err := graphs.Grad(loss, []*graphs.Value{a, b}); err == nil || !strings.Contains(err.Error(), "carries no gradient") {
		t.Errorf("a loss through UnpackRows differentiated for its packed input: error %v", err)
	}
}

func TestShapeErrorsPanicInsideBuild(t *testing.T) {
	err := graphs.Build(func() error {
		g := graphs.New("bad")
		graphs.Add(g.Input("a", graphs.Float, graphs.Shape{2, 3}), g.Input("b", graphs.Float, graphs.Shape{4}))
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "do not broadcast") {
		t.Fatalf("got %v", err)
	}
}

func TestCompositeInternalOnLossPathIsAnError(t *testing.T) {
	g := graphs.New("composite")
	x := g.Input("x", graphs.Float, graphs.Shape{3})
	var inner *graphs.Value
	y := g.Composite("double", []*graphs.Value{x}, func() []*graphs.Value {
		inner = graphs.Mul(x, x)
		return []*graphs.Value{graphs.Add(inner, x)}
	}, func(dy []*graphs.Value, want []bool) []*graphs.Value {
		return []*graphs.Value{graphs.Mul(dy[0], graphs.Add(graphs.Mul(x, graphs.ScalarLike(x, 2)), graphs.ScalarLike(x, 1)))}
	})[0]
	loss := graphs.ReduceSum(graphs.Add(y, inner), false) // inner escapes onto the loss path
	if _, err := graphs.Grad(loss, []*graphs.Value{x}); err == nil || !strings.Contains(err.Error(), "internal value") {
		t.Fatalf("got %v", err)
	}
}

// blockedCases are the depthwise convolutions on ONNX Runtime's NCHWc kernels (forward and
// gradient rules of ReorderInput, ReorderOutput and the blocked Conv), with channel counts of one
// and two blocks; none where this CPU or ORT build has no such kernels.
func blockedCases(t *testing.T) []gradcheck.Case {
	b := int64(0)
	t.Run("nchwc block", func(t *testing.T) { b = gradcheck.NCHWcBlock(t) })
	if b == 0 {
		return nil
	}
	s := func(d ...int64) graphs.Shape { return graphs.Shape(d) }
	cases := []gradcheck.Case{{Name: "nchwc reorder", DType: F, Ins: []gradcheck.In{{Shape: s(2, 2*b, 3, 2), Diff: true}},
		F: one(func(x V) V {
			x.Graph().NCHWcBlock = b
			xb := graphs.ReorderInput(x)
			return graphs.ReorderOutput(graphs.Mul(xb, xb))
		})}}
	convs := []struct {
		name string
		x    graphs.Shape
		k    int64
		bias bool
		opts graphs.ConvOpts
	}{
		{"3x3 pad 1 bias", s(2, b, 6, 5), 3, true, graphs.ConvOpts{Pads: [4]int64{1, 1, 1, 1}}},
		{"5x5 stride 2", s(2, b, 9, 8), 5, false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{2, 2, 2, 2}}},
		{"5x5 dilation 2", s(1, 2*b, 9, 9), 5, false, graphs.ConvOpts{Dilations: [2]int64{2, 2}, Pads: [4]int64{4, 4, 4, 4}}},
		{"3x3 stride 2 no pad", s(1, b, 8, 7), 3, true, graphs.ConvOpts{Strides: [2]int64{2, 2}}},
		{"3x3 stride 2 odd", s(2, 2*b, 7, 9), 3, false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{1, 1, 1, 1}}},
		{"3x3 stride 2x1 asymmetric pads", s(1, b, 7, 6), 3, false, graphs.ConvOpts{Strides: [2]int64{2, 1}, Pads: [4]int64{0, 1, 2, 1}}},
		// Not a multiple of the block: the layer stays standard, but its weight gradient
		// (the batch folded into 2·(b+4) groups, a multiple) runs blocked.
		{"channels off the block", s(2, b+4, 6, 7), 3, false, graphs.ConvOpts{Strides: [2]int64{2, 2}, Pads: [4]int64{1, 1, 1, 1}}},
	}
	for _, c := range convs {
		c := c
		C := c.x[1]
		c.opts.Group = C
		ins := []gradcheck.In{{Shape: c.x, Diff: true}, {Shape: s(C, 1, c.k, c.k), Diff: true}}
		if c.bias {
			ins = append(ins, gradcheck.In{Shape: s(C), Diff: true})
		}
		cases = append(cases, gradcheck.Case{Name: "nchwc depthwise " + c.name, DType: F, Ins: ins, F: func(x []V) V {
			x[0].Graph().NCHWcBlock = b
			var bias V
			if c.bias {
				bias = x[2]
			}
			y := graphs.Conv(x[0], x[1], bias, c.opts)
			if blocked := y.Producer().Op == "ReorderOutput"; blocked != (C%b == 0) {
				t.Errorf("%s: Conv built %s for %d channels and block %d", c.name, y.Producer().Op, C, b)
			}
			return y
		}})
	}
	return cases
}
