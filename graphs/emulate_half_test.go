package graphs_test

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// The emulated float16 graph gives float16's results: every computed value rounded to
// nearest float16 (within float16's normal range), where the plain graph on the CPU provider
// keeps float32 precision throughout.
func TestMarshalEmulatingHalf(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	const n = 4096
	xs, ws := make([]float32, n), make([]float32, n)
	for i := range xs {
		xs[i] = 1 + float32(i)/997     // values of several binades
		ws[i] = 0.3 + float32(i%17)/13 // not float16-exact
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
	var exact int
	for i := range xs {
		hx, hw := r(xs[i]), r(ws[i])
		want := r(r(hx*hw) + hx)
		if got[i] != want {
			t.Fatalf("element %d: %v, want float16's %v", i, got[i], want)
		}
		if float64(want) == float64(xs[i])*float64(ws[i])+float64(xs[i]) {
			exact++
		}
	}
	if exact > n/2 {
		t.Fatalf("%d of %d results are exact in float32: the data does not exercise the rounding", exact, n)
	}
}
