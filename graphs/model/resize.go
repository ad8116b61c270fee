package model

import (
	"math"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// BilinearMatrix is the [out, in] interpolation matrix of PyTorch's
// F.interpolate(mode="bilinear", align_corners=False) along one axis: source coordinate
// (o+0.5)·in/out − 0.5, clamped at 0, blending the two nearest inputs.
func BilinearMatrix(out, in int64) []float32 {
	m := make([]float32, out*in)
	scale := float64(in) / float64(out)
	for o := int64(0); o < out; o++ {
		src := math.Max((float64(o)+0.5)*scale-0.5, 0)
		i0 := int64(math.Floor(src))
		if i0 > in-1 {
			i0 = in - 1
		}
		i1 := i0 + 1
		if i1 > in-1 {
			i1 = in - 1
		}
		l := float32(src - float64(i0))
		m[o*in+i0] += 1 - l
		m[o*in+i1] += l
	}
	return m
}

// ResizeBilinear resizes x [N,C,H,W] to [N,C,h,w] as two MatMuls with constant interpolation
// matrices: exact PyTorch semantics, a gradient for free (MatMul's), and it runs on every
// execution provider. The matrices have x's element type (float16 constants for a float16 x).
func ResizeBilinear(x *graphs.Value, h, w int64) *graphs.Value {
	H, W := x.Dim(2), x.Dim(3)
	if H == h && W == w {
		return x
	}
	y := x
	if H != h {
		y = graphs.MatMul(graphs.ConstLike(x, graphs.Shape{h, H}, BilinearMatrix(h, H)...), y)
	}
	if W != w {
		wt := BilinearMatrix(w, W) // [w, W]; we need its transpose [W, w]
		t := make([]float32, len(wt))
		for i := int64(0); i < w; i++ {
			for j := int64(0); j < W; j++ {
				t[j*w+i] = wt[i*W+j]
			}
		}
		y = graphs.MatMul(y, graphs.ConstLike(x, graphs.Shape{W, w}, t...))
	}
	return y
}
