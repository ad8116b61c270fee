package graphs_test

import (
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

type V = *graphs.Value

func one(f func(V) V) func([]V) V    { return func(x []V) V { return f(x[0]) } }
func two(f func(V, V) V) func([]V) V { return func(x []V) V { return f(x[0], x[1]) } }

const D, F = graphs.Double, graphs.Float

func TestGradientRules(t *testing.T) {
	s := func(d ...int64) graphs.Shape { return graphs.Shape(d) }
	pos := uniform(0.5, 3)
	cases := []gradCase{
		{"add broadcast", D, []in{{shape: s(2, 3, 4), diff: true}, {shape: s(3, 1), diff: true}}, two(graphs.Add)},
		{"sub broadcast", D, []in{{shape: s(3, 1), diff: true}, {shape: s(2, 3, 4), diff: true}}, two(graphs.Sub)},
		{"mul broadcast", D, []in{{shape: s(2, 3, 4), diff: true}, {shape: s(4), diff: true}}, two(graphs.Mul)},
		{"div", D, []in{{shape: s(2, 3), diff: true}, {shape: s(2, 1), gen: pos, diff: true}}, two(graphs.Div)},
		{"neg", D, []in{{shape: s(5), diff: true}}, one(graphs.Neg)},
		{"exp", D, []in{{shape: s(5), diff: true}}, one(graphs.Exp)},
		{"log", D, []in{{shape: s(5), gen: pos, diff: true}}, one(graphs.Log)},
		{"sqrt", D, []in{{shape: s(5), gen: pos, diff: true}}, one(graphs.Sqrt)},
		{"reciprocal", D, []in{{shape: s(5), gen: pos, diff: true}}, one(graphs.Reciprocal)},
		{"pow", D, []in{{shape: s(5), gen: pos, diff: true}}, one(func(x V) V { return graphs.Pow(x, 2.5) })},
		{"relu", D, []in{{shape: s(3, 4), gen: awayFrom(2, 0.05, 0), diff: true}}, one(graphs.Relu)},
		{"sigmoid", D, []in{{shape: s(3, 4), diff: true}}, one(graphs.Sigmoid)},
		{"hardsigmoid", F, []in{{shape: s(4, 5), gen: awayFrom(5, 0.1, -3, 3), diff: true}}, one(graphs.HardSigmoid)},
		{"hardswish", F, []in{{shape: s(4, 5), gen: awayFrom(5, 0.1, -3, 3), diff: true}}, one(graphs.HardSwish)},
		{"cast float to double", F, []in{{shape: s(6), diff: true}}, one(func(x V) V { return graphs.Cast(graphs.Mul(graphs.Cast(x, D), graphs.Cast(x, D)), F) })},
		{"identity", D, []in{{shape: s(3), diff: true}}, one(graphs.Identity)},
		{"where", D, []in{{shape: s(2, 3), diff: true}, {shape: s(3), diff: true}}, func(x []V) V {
			return graphs.Where(graphs.Greater(x[0], graphs.ScalarLike(x[0], 0)), x[0], x[1])
		}},
		{"reducesum axes", D, []in{{shape: s(2, 3, 4), diff: true}}, one(func(x V) V { return graphs.ReduceSum(x, false, 0, 2) })},
		{"reducesum keep", D, []in{{shape: s(2, 3, 4), diff: true}}, one(func(x V) V { return graphs.ReduceSum(x, true, 1) })},
		{"reducemean", D, []in{{shape: s(2, 3, 4, 5), diff: true}}, one(func(x V) V { return graphs.ReduceMean(x, true, 2, 3) })},
		{"reshape", D, []in{{shape: s(2, 6), diff: true}}, one(func(x V) V { return graphs.Mul(graphs.Reshape(x, s(3, 4)), graphs.Reshape(x, s(3, 4))) })},
		{"transpose", D, []in{{shape: s(2, 3, 4), diff: true}}, one(func(x V) V { return graphs.Transpose(x, 2, 0, 1) })},
		{"slice", D, []in{{shape: s(2, 5, 3), diff: true}}, one(func(x V) V { return graphs.Slice(x, 1, 1, 4) })},
		{"pad", D, []in{{shape: s(2, 3), diff: true}}, one(func(x V) V { return graphs.Pad(x, []int64{1, 0, 2, 3}) })},
		{"expand", D, []in{{shape: s(3, 1), diff: true}}, one(func(x V) V { return graphs.Expand(x, s(2, 3, 4)) })},
		{"concat", D, []in{{shape: s(2, 3), diff: true}, {shape: s(2, 2), diff: true}}, func(x []V) V { return graphs.Concat(1, x[0], x[1]) }},
		{"matmul", D, []in{{shape: s(2, 3, 4), diff: true}, {shape: s(4, 5), diff: true}}, two(graphs.MatMul)},
		{"matmul batch broadcast", D, []in{{shape: s(3, 4), diff: true}, {shape: s(2, 1, 4, 2), diff: true}}, two(graphs.MatMul)},
		{"softmax", D, []in{{shape: s(2, 3, 4), diff: true}}, one(func(x V) V { return graphs.Softmax(x, 1) })},
		{"logsoftmax", D, []in{{shape: s(2, 3, 4), diff: true}}, one(func(x V) V { return graphs.LogSoftmax(x, 1) })},
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
		{"conv grouped", s(2, 4, 5, 5), s(6, 2, 3, 3), true, graphs.ConvOpts{Pads: [4]int64{1, 1, 1, 1}, Group: 2}},
		{"conv pointwise", s(2, 5, 4, 3), s(3, 5, 1, 1), true, graphs.ConvOpts{}},
		{"conv pointwise on 1x1", s(2, 6, 1, 1), s(4, 6, 1, 1), true, graphs.ConvOpts{}},
		{"conv asymmetric pads", s(1, 2, 6, 7), s(3, 2, 3, 2), false, graphs.ConvOpts{Strides: [2]int64{2, 1}, Pads: [4]int64{0, 1, 1, 0}}},
	}
	for _, c := range convs {
		c := c
		ins := []in{{shape: c.x, diff: true}, {shape: c.w, diff: true}}
		if c.bias {
			ins = append(ins, in{shape: graphs.Shape{c.w[0]}, diff: true})
		}
		cases = append(cases, gradCase{c.name, F, ins, func(x []V) V {
			var b V
			if c.bias {
				b = x[2]
			}
			return graphs.Conv(x[0], x[1], b, c.opts)
		}})
	}
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkGrad(t, tc, dir) })
	}
	checkModels(t, dir)
}

// TestEveryRuleHasAFiniteDifferenceCase keeps the table above complete.
func TestEveryRuleHasAFiniteDifferenceCase(t *testing.T) {
	covered := map[string]bool{"Add": true, "Sub": true, "Mul": true, "Div": true, "Neg": true, "Exp": true, "Log": true,
		"Sqrt": true, "Reciprocal": true, "Pow": true, "Relu": true, "Sigmoid": true, "HardSigmoid": true, "HardSwish": true,
		"Cast": true, "Identity": true, "Where": true, "ReduceSum": true, "ReduceMean": true, "Reshape": true, "Transpose": true,
		"Slice": true, "Pad": true, "Expand": true, "Concat": true, "MatMul": true, "Softmax": true, "LogSoftmax": true, "Conv": true}
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
