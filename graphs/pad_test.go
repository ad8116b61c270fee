package graphs_test

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Pad of one leading axis goes through a 2-D view; its values are the plain pad's.
func TestPadOneAxisValues(t *testing.T) {
	cases := []struct {
		shape graphs.Shape
		pads  []int64
	}{
		{graphs.Shape{2, 1, 3, 2}, []int64{0, 1, 0, 0, 0, 2, 0, 0}}, // channels of NCHW
		{graphs.Shape{3, 2, 2}, []int64{2, 0, 0, 1, 0, 0}},          // first of three
		{graphs.Shape{5}, []int64{1, 3}},                            // a vector
		{graphs.Shape{2, 3}, []int64{0, 1, 0, 2}},                   // last axis: unchanged
	}
	for _, c := range cases {
		n := c.shape.Size()
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(i + 1)
		}
		g := graphs.New("pad")
		x := g.Input("x", graphs.Float, c.shape)
		y := graphs.Pad(x, c.pads)
		g.Output("y", y)
		out, err := gradcheck.Session(t, g).Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64(c.shape), xs)})
		if err != nil {
			t.Fatal(err)
		}
		got := runtime.Data[float32](out["y"])
		// Reference: walk the output's indices; in-range ones read x, the rest are zero.
		r := len(c.shape)
		oshape := y.Shape()
		idx := make([]int64, r)
		for k := range got {
			rem := int64(k)
			for a := r - 1; a >= 0; a-- {
				idx[a] = rem % oshape[a]
				rem /= oshape[a]
			}
			var want float32
			src, in := int64(0), true
			for a := 0; a < r; a++ {
				i := idx[a] - c.pads[a]
				if i < 0 || i >= c.shape[a] {
					in = false
					break
				}
				src = src*c.shape[a] + i
			}
			if in {
				want = xs[src]
			}
			if got[k] != want {
				t.Fatalf("Pad %v of %v: element %d is %v, want %v", c.pads, c.shape, k, got[k], want)
			}
		}
	}
}
