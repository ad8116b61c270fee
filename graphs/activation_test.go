package graphs_test

import (
	"math"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// activationSlopes runs d/dx Σ f(x) for every x through ONNX Runtime.
func activationSlopes(t *testing.T, f func(V) V, xs []float32) []float32 {
	t.Helper()
	g := graphs.New("slopes")
	x := g.Input("x", graphs.Float, graphs.Shape{int64(len(xs))})
	gs, err := graphs.Grad(graphs.ReduceSum(f(x), false), []V{x})
	if err != nil {
		t.Fatal(err)
	}
	g.Output("dx", gs[0])
	s := gradcheck.Session(t, g)
	out, err := s.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{int64(len(xs))}, xs)})
	if err != nil {
		t.Fatal(err)
	}
	return runtime.Data[float32](out["dx"])
}

// denseInputs covers [-8, 8] in steps of 1/1024 (every bend and branch point is a grid
// value) plus the float32 neighbours of the bends and a few extremes.
func denseInputs() []float32 {
	var xs []float32
	for i := -8 * 1024; i <= 8*1024; i++ {
		xs = append(xs, float32(i)/1024)
	}
	for _, b := range []float32{-3, 0, 1.5, 3} {
		xs = append(xs, math.Nextafter32(b, -10), math.Nextafter32(b, 10))
	}
	return append(xs, 1e-30, 1e-37, -1e-37, 1e30, -1e30, float32(math.Inf(1)), float32(math.Inf(-1)))
}

// The slope rules are built from unary activations (HardSigmoid, Shrink, ThresholdedRelu)
// whose composition gives the piecewise slope only if every constant is right; check them
// against the definitions at every grid point, bends included. Two documented departures
// are skipped: relu's mask is a fraction for subnormal outputs (below 2⁻¹²⁶), and
// hardswish decides its branch on a rounded clip(1/2 − x/6), so within one float32 step of
// x = −3 it takes the left branch.
func TestActivationSlopesExact(t *testing.T) {
	xs := denseInputs()
	for _, tc := range []struct {
		name string
		f    func(V) V
		want func(x float64) float64
		skip func(x float32) bool
	}{
		{"relu", graphs.Relu, func(x float64) float64 {
			if x > 0 {
				return 1
			}
			return 0
		}, func(x float32) bool { return x > 0 && x < 0x1p-126 }},
		{"hardswish", graphs.HardSwish, func(x float64) float64 {
			switch {
			case x <= -3: // PyTorch gives -1/2 at exactly -3; the rule takes the left branch
				return 0
			case x < 3:
				return x/3 + 0.5
			}
			return 1
		}, func(x float32) bool { return x > -3 && x <= math.Nextafter32(-3, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := activationSlopes(t, tc.f, xs)
			bad := 0
			for i, x := range xs {
				if tc.skip(x) {
					continue
				}
				want := tc.want(float64(x))
				if d := math.Abs(float64(got[i]) - want); d > 1e-6*math.Max(1, math.Abs(want)) || math.IsNaN(float64(got[i])) {
					if bad++; bad <= 5 {
						t.Errorf("%s'(%g) = %g, want %g", tc.name, x, got[i], want)
					}
				}
			}
			if bad > 5 {
				t.Errorf("%d of %d slopes wrong", bad, len(xs))
			}
		})
	}
}
