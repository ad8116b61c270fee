package augment

import (
	"image"
	"math"
)

// The blurs below work on whole RGBA pixels as uint32 words, two 8-bit channels per 16-bit lane
// (R,B and G,A): with integer weights summing to 256 a lane never exceeds 0xff00+0x80, so one
// multiply handles two channels. That keeps a σ = 1.5 Gaussian at 640×480 near 3 ms per core.

// kernel8 returns integer weights summing to exactly 256.
func kernel8(weights []float64) []uint32 {
	var sum float64
	for _, w := range weights {
		sum += w
	}
	k := make([]uint32, len(weights))
	total := 0
	for i, w := range weights {
		k[i] = uint32(math.Round(w / sum * 256))
		total += int(k[i])
	}
	// Put the rounding residue on the largest weight (the centre for symmetric kernels).
	big := 0
	for i := range k {
		if k[i] > k[big] {
			big = i
		}
	}
	k[big] = uint32(int(k[big]) + 256 - total)
	return k
}

func gaussianKernel(sigma float64) []uint32 {
	r := int(math.Ceil(3 * sigma))
	w := make([]float64, 2*r+1)
	for i := range w {
		d := float64(i - r)
		w[i] = math.Exp(-d * d / (2 * sigma * sigma))
	}
	return kernel8(w)
}

// finish packs two accumulated lanes back into one RGBA word.
func finish(rb, ga uint32) uint32 { return (rb>>8)&0x00ff00ff | ga&0xff00ff00 }

// accumulate adds weight·row to the lane accumulators rb and ga.
func accumulate(rb, ga, row []uint32, weight uint32) {
	ga = ga[:len(rb)]
	row = row[:len(rb)]
	for x, v := range row {
		rb[x] += (v & 0x00ff00ff) * weight
		ga[x] += (v >> 8 & 0x00ff00ff) * weight
	}
}

// startLanes sets the accumulators to the rounding offset.
func startLanes(rb, ga []uint32) {
	for x := range rb {
		rb[x], ga[x] = 0x00800080, 0x00800080
	}
}

func finishRow(out, rb, ga []uint32) {
	ga = ga[:len(rb)]
	out = out[:len(rb)]
	for x := range rb {
		out[x] = finish(rb[x], ga[x])
	}
}

// trim drops the zero weights at both ends of a kernel, returning it and its new centre.
func trim(k []uint32, centre int) ([]uint32, int) {
	for len(k) > 1 && k[0] == 0 && k[len(k)-1] == 0 {
		k = k[1 : len(k)-1]
		centre--
	}
	return k, centre
}

// gaussianBlur blurs img in place with a separable Gaussian of standard deviation sigma pixels,
// edges clamped. tmp and acc are scratch space, returned for reuse.
func gaussianBlur(img *image.RGBA, sigma float64, tmp []uint8, acc []uint32) ([]uint8, []uint32) {
	k, r := trim(gaussianKernel(sigma), int(math.Ceil(3*sigma)))
	if len(k) == 1 {
		return tmp, acc
	}
	w, h := img.Rect.Dx(), img.Rect.Dy()
	tmp, acc = grow8(tmp, 4*w*h), grow32(acc, 2*max(w, h))
	pix, t := words(img.Pix), words(tmp)
	rb, ga := acc[:w], acc[w:2*w]
	stride := img.Stride / 4
	// Horizontal: img → tmp. Each tap adds a shifted copy of the row; the borders repeat the
	// edge pixel.
	for y := 0; y < h; y++ {
		row := pix[y*stride : y*stride+w]
		startLanes(rb, ga)
		for i, kw := range k {
			d := i - r                                        // source offset
			lo, hi := min(max(0, -d), w), max(min(w, w-d), 0) // x range whose source x+d is inside
			if lo < hi {
				accumulate(rb[lo:hi], ga[lo:hi], row[lo+d:hi+d], kw)
			}
			for x := 0; x < lo; x++ {
				accumulate(rb[x:x+1], ga[x:x+1], row[0:1], kw)
			}
			for x := max(hi, lo); x < w; x++ {
				accumulate(rb[x:x+1], ga[x:x+1], row[w-1:w], kw)
			}
		}
		finishRow(t[y*w:(y+1)*w], rb, ga)
	}
	// Vertical: tmp → img, each output row the weighted sum of whole source rows.
	for y := 0; y < h; y++ {
		startLanes(rb, ga)
		for i, kw := range k {
			yy := min(max(y+i-r, 0), h-1)
			accumulate(rb, ga, t[yy*w:(yy+1)*w], kw)
		}
		finishRow(pix[y*stride:y*stride+w], rb, ga)
	}
	return tmp, acc
}

// motionBlur averages length samples along a line at angle radians through each pixel, edges
// clamped: the smear of a camera moving during the exposure. tmp and acc are scratch space,
// returned for reuse.
func motionBlur(img *image.RGBA, length int, angle float64, tmp []uint8, acc []uint32) ([]uint8, []uint32) {
	if length < 2 {
		return tmp, acc
	}
	w, h := img.Rect.Dx(), img.Rect.Dy()
	tmp, acc = grow8(tmp, 4*w*h), grow32(acc, 2*max(w, h))
	pix, t := words(img.Pix), words(tmp)
	stride := img.Stride / 4
	for y := 0; y < h; y++ {
		copy(t[y*w:(y+1)*w], pix[y*stride:])
	}
	ones := make([]float64, length)
	for i := range ones {
		ones[i] = 1
	}
	k := kernel8(ones)
	sin, cos := math.Sincos(angle)
	rb, ga := acc[:w], acc[w:2*w]
	for y := 0; y < h; y++ {
		startLanes(rb, ga)
		for i, kw := range k {
			off := float64(i) - float64(length-1)/2
			dx, dy := int(math.Round(off*cos)), int(math.Round(off*sin))
			row := t[min(max(y+dy, 0), h-1)*w:][:w]
			lo, hi := min(max(0, -dx), w), max(min(w, w-dx), 0)
			if lo < hi {
				accumulate(rb[lo:hi], ga[lo:hi], row[lo+dx:hi+dx], kw)
			}
			for x := 0; x < min(lo, w); x++ {
				accumulate(rb[x:x+1], ga[x:x+1], row[0:1], kw)
			}
			for x := max(hi, lo); x < w; x++ {
				accumulate(rb[x:x+1], ga[x:x+1], row[w-1:w], kw)
			}
		}
		finishRow(pix[y*stride:y*stride+w], rb, ga)
	}
	return tmp, acc
}

func grow8(s []uint8, n int) []uint8 {
	if cap(s) < n {
		return make([]uint8, n)
	}
	return s[:n]
}

func grow32(s []uint32, n int) []uint32 {
	if cap(s) < n {
		return make([]uint32, n)
	}
	return s[:n]
}
