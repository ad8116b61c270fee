package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestBatchNormHalfMatchesFloat builds batch norm on a float16 activation (float32 statistics,
// its own fused gradient) next to the float32 layer on the same data, and compares outputs,
// batch statistics and the gradients for x, γ and β, in training and eval mode. The data has
// a mean far from zero, which the float16 rule's a·dy + b·x + c form must cancel.
func TestBatchNormHalfMatchesFloat(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 3, 4, 5}
	c := shape[1]
	r := rand.New(rand.NewPCG(1, 2))
	gen := func(n int64, lo, hi float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(lo + (hi-lo)*r.Float64())
		}
		return d
	}
	xd, gd, bd := gen(shape.Size(), 1, 5), gen(c, 0.5, 1.5), gen(c, -1, 1)
	md, vd := gen(c, 2, 4), gen(c, 0.5, 2)
	weights := gen(shape.Size(), -1, 1)
	for _, mode := range []Mode{Train, Eval} {
		g := graphs.New("bn_half")
		x := g.Input("x", graphs.Float, shape)
		gamma := g.Input("gamma", graphs.Float, graphs.Shape{c})
		beta := g.Input("beta", graphs.Float, graphs.Shape{c})
		src := fixedSource{"bn.weight": gamma, "bn.bias": beta,
			"bn.running_mean": g.InitFloat("rm", graphs.Shape{c}, md), "bn.running_var": g.InitFloat("rv", graphs.Shape{c}, vd)}
		wts := g.InitFloat("w", shape, weights)
		for _, half := range []bool{false, true} {
			suffix := map[bool]string{false: "32", true: "16"}[half]
			n := &net{g: g, src: src, mode: mode, out: &Output{}}
			in := x
			if half {
				in = graphs.Cast(x, graphs.Float16)
			}
			y := n.batchNorm("bn", "conv.weight", in, int(c), 1e-3, 0.1, actNone)
			if half {
				if y.DType() != graphs.Float16 {
					t.Fatalf("float16 batch norm returns %v", y)
				}
				y = graphs.Cast(y, graphs.Float)
			}
			g.Output("y"+suffix, y)
			if mode == Train {
				loss := graphs.ReduceSum(graphs.Mul(graphs.Mul(y, y), wts), false)
				grads, err := graphs.Grad(loss, []*graphs.Value{x, gamma, beta})
				if err != nil {
					t.Fatal(err)
				}
				for i, name := range []string{"dx", "dgamma", "dbeta"} {
					g.Output(name+suffix, grads[i])
				}
				g.Output("mean"+suffix, n.out.BN[0].BatchMean)
				g.Output("var"+suffix, n.out.BN[0].BatchV())
			}
		}
		b, err := g.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		s, err := runtime.NewSession("bn_half", b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Run(map[string]*runtime.Tensor{
			"x": runtime.MustNew([]int64(shape), xd), "gamma": runtime.MustNew([]int64{c}, gd), "beta": runtime.MustNew([]int64{c}, bd),
		})
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		names := []string{"y"}
		if mode == Train {
			names = append(names, "dx", "dgamma", "dbeta", "mean", "var")
		}
		for _, k := range names {
			got, want := runtime.Data[float32](out[k+"16"]), runtime.Data[float32](out[k+"32"])
			var d, m float64
			for i := range want {
				d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
				m = math.Max(m, math.Abs(float64(want[i])))
			}
			if d > 1e-2*m {
				t.Errorf("mode %d: %s differs by %.3g (magnitude %.3g)", mode, k, d, m)
			} else {
				t.Logf("mode %d: %s within %.2e of its magnitude", mode, k, d/m)
			}
		}
	}
}
