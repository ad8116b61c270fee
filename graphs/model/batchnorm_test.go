package model

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
)

// fixedSource hands out prepared values by name (gradient-check inputs for γ and β) and
// constants for the running statistics.
type fixedSource map[string]*graphs.Value

func (s fixedSource) Param(g *graphs.Graph, spec ParamSpec) *graphs.Value {
	if v, ok := s[spec.Name]; ok {
		return v
	}
	d := make([]float32, spec.Size())
	return g.InitFloat(spec.Name, spec.Shape, d)
}

// TestBatchNormTrainingGradient checks the fused batch-norm gradient (a composite with its own
// rule) against finite differences, for x, γ and β, with a following nonlinearity so that the
// gradient reaching it is not uniform.
func TestBatchNormTrainingGradient(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		shape graphs.Shape
	}{
		{"batch 2", graphs.Shape{2, 3, 4, 5}},
		{"batch 1 spatial 2x2", graphs.Shape{1, 4, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.shape[1]
			gradcheck.Check(t, gradcheck.Case{
				Name:  "bn " + tc.name,
				DType: graphs.Float,
				Ins: []gradcheck.In{
					{Shape: tc.shape, Diff: true},
					{Shape: graphs.Shape{c}, Gen: gradcheck.Uniform(0.5, 1.5), Diff: true},
					{Shape: graphs.Shape{c}, Diff: true},
				},
				F: func(xs []*graphs.Value) *graphs.Value {
					g := xs[0].Graph()
					n := &net{g: g, src: fixedSource{"bn.weight": xs[1], "bn.bias": xs[2]}, mode: Train, out: &Output{}}
					y := n.batchNorm("bn", "conv.weight", xs[0], int(c), 1e-3, 0.1, actNone)
					return graphs.Mul(y, y) // a non-uniform upstream gradient
				},
			}, dir)
		})
	}
	gradcheck.CheckModels(t, dir)
}
