package graphs_test

import (
	"math"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// The emulated float16 graph gives float16's results: every computed value rounded to
// nearest float16, overflowing to Inf and underflowing through the subnormals, where the plain
// graph on the CPU provider keeps float32 precision and range throughout.
func TestMarshalEmulatingHalf(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	const n = 4096
	xs, ws := make([]float32, n), make([]float32, n)
	for i := range xs {
		xs[i] = 1 + float32(i)/997     // values of several binades
		ws[i] = 0.3 + float32(i%17)/13 // not float16-exact
		switch {
		case i >= n-256: // products and sums past float16's largest finite value, 65504
			xs[i] = 40000 + float32(i%256)*97
		case i >= n-512: // inputs and products below float16's smallest normal, 2^-14
			xs[i] = float32(i%256+1) * 2.3e-7
		}
	}
	g := graphs.New("emulate")
	x := g.Input("x", graphs.Float, graphs.Shape{n})
	h := graphs.Cast(x, graphs.Float16)
	w := graphs.ConstLike(h, graphs.Shape{n}, ws...)
	y := graphs.Add(graphs.Mul(h, w), h)
	g.Output("y", graphs.Cast(y, graphs.Float))
	b, err := g.MarshalEmulatingHalf(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.NewSession("emulate", b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{n}, xs)})
	if err != nil {
		t.Fatal(err)
	}
	got := runtime.Data[float32](out["y"])
	r := func(v float32) float32 { return f16.ToFloat32(f16.FromFloat32(v)) }
	var exact, inf, sub int
	for i := range xs {
		hx, hw := r(xs[i]), r(ws[i])
		want := r(r(hx*hw) + hx)
		if got[i] != want {
			t.Fatalf("element %d: %v, want float16's %v", i, got[i], want)
		}
		if float64(want) == float64(xs[i])*float64(ws[i])+float64(xs[i]) {
			exact++
		}
		if math.IsInf(float64(want), 0) {
			inf++
		}
		if p := hx * hw; p != 0 && math.Abs(float64(p)) < 1.0/(1<<14) && r(p) != p {
			sub++
		}
	}
	if exact > n/2 || inf < 100 || sub < 100 {
		t.Fatalf("%d of %d results exact in float32, %d overflow, %d products rounded as subnormals: the data does not exercise float16", exact, n, inf, sub)
	}
}
