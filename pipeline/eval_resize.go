package pipeline

// Resizing of model outputs back to the mask's resolution. Images are resized by augment (the
// one place that resamples pictures); these resample the model's per-pixel outputs, which are
// floats (logits, probabilities) or labels, the way PyTorch's F.interpolate does, so that a
// model scored here and in PyTorch gets the same predictions.

// bilinearTaps precomputes, for each of n output positions over an input of m samples, the
// two input indices and the weight of the second, with half-pixel centres and the source
// coordinate clamped at 0 (F.interpolate(mode="bilinear", align_corners=False)).
func bilinearTaps(n, m int) (i0, i1 []int, w1 []float32) {
	i0, i1, w1 = make([]int, n), make([]int, n), make([]float32, n)
	scale := float64(m) / float64(n)
	for x := 0; x < n; x++ {
		src := (float64(x)+0.5)*scale - 0.5
		if src < 0 {
			src = 0
		}
		a := int(src)
		if a > m-1 {
			a = m - 1
		}
		b := a
		if a < m-1 {
			b = a + 1
		}
		i0[x], i1[x], w1[x] = a, b, float32(src-float64(a))
	}
	return i0, i1, w1
}

// resizeBilinear resamples the sw×sh map src to dw×dh into dst (len dw·dh).
func resizeBilinear(dst []float32, dw, dh int, src []float32, sw, sh int) {
	if dw == sw && dh == sh {
		copy(dst, src)
		return
	}
	x0, x1, wx := bilinearTaps(dw, sw)
	y0, y1, wy := bilinearTaps(dh, sh)
	// Rows of src interpolated horizontally, cached because consecutive output rows share them.
	rowA, rowB := make([]float32, dw), make([]float32, dw)
	haveA, haveB := -1, -1
	hrow := func(dst []float32, y int) {
		r := src[y*sw : (y+1)*sw]
		for x := range dst {
			a := r[x0[x]]
			dst[x] = a + wx[x]*(r[x1[x]]-a)
		}
	}
	for y := 0; y < dh; y++ {
		ya, yb := y0[y], y1[y]
		if haveA != ya {
			if haveB == ya {
				rowA, rowB = rowB, rowA
				haveA, haveB = haveB, haveA
			} else {
				hrow(rowA, ya)
				haveA = ya
			}
		}
		if haveB != yb {
			hrow(rowB, yb)
			haveB = yb
		}
		out := dst[y*dw : (y+1)*dw]
		w := wy[y]
		for x := range out {
			a := rowA[x]
			out[x] = a + w*(rowB[x]-a)
		}
	}
}

// nearestTaps gives, for each of n output positions over m input samples, the input index
// PyTorch's F.interpolate(mode="nearest") takes: floor(x·m/n).
func nearestTaps(n, m int) []int {
	idx := make([]int, n)
	scale := float64(m) / float64(n)
	for x := range idx {
		idx[x] = min(int(float64(x)*scale), m-1)
	}
	return idx
}

// resizeNearest resamples the sw×sh map src to dw×dh into dst without blending values.
func resizeNearest[T any](dst []T, dw, dh int, src []T, sw, sh int) {
	if dw == sw && dh == sh {
		copy(dst, src)
		return
	}
	xs, ys := nearestTaps(dw, sw), nearestTaps(dh, sh)
	for y, sy := range ys {
		r := src[sy*sw : (sy+1)*sw]
		out := dst[y*dw : (y+1)*dw]
		for x, sx := range xs {
			out[x] = r[sx]
		}
	}
}
