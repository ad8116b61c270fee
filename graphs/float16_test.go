package graphs_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestFloat16Bits checks the rounding of float16 constants by hand-computed cases and against
// the runtime's conversion (the one that feeds float16 tensors) on random bit patterns.
func TestFloat16Bits(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"largest", 65504, 0x7bff},
		{"rounds up to Inf", 65520, 0x7c00},
		{"tie to even stays", 1 + 1.0/2048, 0x3c00},
		{"tie to even rounds up", 1 + 3.0/2048, 0x3c02},
		{"smallest subnormal", float32(math.Ldexp(1, -24)), 0x0001},
		{"underflow to zero", 1e-8, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"Inf", float32(math.Inf(-1)), 0xfc00},
		{"NaN stays NaN", float32(math.NaN()), 0x7e00},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := graphs.Float16Bits(tc.in); got != tc.want {
				t.Errorf("Float16Bits(%g) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
	r := rand.New(rand.NewPCG(1, 16))
	for i := 0; i < 200000; i++ {
		f := math.Float32frombits(r.Uint32())
		if got, want := graphs.Float16Bits(f), uint16(runtime.HalfFromFloat32(f)); got != want && !math.IsNaN(float64(f)) {
			t.Fatalf("Float16Bits(%g) = %#04x, runtime %#04x", f, got, want)
		}
	}
}

// TestFloat16Constants runs float16 constants (a scalar from ScalarLike, a matrix from
// ConstLike) through ONNX Runtime.
func TestFloat16Constants(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	g := graphs.New("half_constants")
	x := g.Input("x", graphs.Float, graphs.Shape{1, 2})
	h := graphs.Cast(x, graphs.Float16)
	if s := graphs.ScalarLike(h, 3); s.DType() != graphs.Float16 || !s.IsConstant() {
		t.Fatalf("ScalarLike on float16 gives %v", s)
	}
	m := graphs.ConstLike(h, graphs.Shape{2, 2}, 1, 2, 3, 4)
	y := graphs.Add(graphs.MatMul(h, m), graphs.ScalarLike(h, 0.5))
	g.Output("y", graphs.Cast(y, graphs.Float))
	s := gradcheck.Session(t, g)
	out, err := s.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{1, 2}, []float32{1, -1})})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.Data[float32](out["y"]); got[0] != -1.5 || got[1] != -1.5 {
		t.Errorf("y = %v, want [-1.5 -1.5]", got)
	}
}
