package graphs_test

import (
	"math"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestBlockDiagIgnoresOffDiagonalOverflow: the block-diagonal weight gradient in float16
// (rounded after every node, as on the GPU) stays finite when a product of two different
// images overflows float16 but every image's own product does not: the off-diagonal blocks
// are dropped, not multiplied by zero (Inf·0 would make the sum NaN and skip the step).
func TestBlockDiagIgnoresOffDiagonalOverflow(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	const m = 64 // positions per image
	g := graphs.New("blockdiag")
	g.Grad.WeightGradProduct = "blockdiag-all"
	x := g.Input("x", graphs.Float, graphs.Shape{2, 1, 8, 8})
	dy := g.Input("dy", graphs.Float, graphs.Shape{2, 1, 8, 8})
	w := g.Input("w", graphs.Float, graphs.Shape{1, 1, 1, 1})
	xh, dyh, wh := graphs.Cast(x, graphs.Float16), graphs.Cast(dy, graphs.Float16), graphs.Cast(w, graphs.Float16)
	loss := graphs.ReduceSum(graphs.Cast(graphs.Mul(graphs.Conv(xh, wh, nil, graphs.ConvOpts{}), dyh), graphs.Float), false)
	grads, err := graphs.Grad(loss, []*graphs.Value{w})
	if err != nil {
		t.Fatal(err)
	}
	g.Output("dw", grads[0])
	b, err := g.MarshalEmulatingHalf(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.NewSession("blockdiag", b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Image 0: small input, large gradient; image 1 the other way round. Each image's own
	// sum is 64·100·0.01 = 64; image 0's gradient against image 1's input, 64·100·100, is
	// past float16's 65504.
	xs, ds := make([]float32, 2*m), make([]float32, 2*m)
	for i := 0; i < m; i++ {
		xs[i], ds[i] = 0.01, 100
		xs[m+i], ds[m+i] = 100, 0.01
	}
	out, err := s.Run(map[string]*runtime.Tensor{
		"x":  runtime.MustNew([]int64{2, 1, 8, 8}, xs),
		"dy": runtime.MustNew([]int64{2, 1, 8, 8}, ds),
		"w":  runtime.MustNew([]int64{1, 1, 1, 1}, []float32{1}),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := runtime.Data[float32](out["dw"])[0]
	if math.IsNaN(float64(got)) || math.Abs(float64(got)-128) > 0.5 {
		t.Fatalf("dw = %v, want 128 (two images of 64·100·0.01)", got)
	}
}
