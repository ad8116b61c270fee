package augment

import (
	"image"
	"math"

	"github.com/anthonynsimon/bild/perlin"
)

// Homography is a 3×3 projective transform in row-major order, acting on column vectors
// (x, y, 1).
type Homography [9]float64

// IdentityHomography maps every point to itself.
var IdentityHomography = Homography{1, 0, 0, 0, 1, 0, 0, 0, 1}

// Mul returns h·g (g applied first).
func (h Homography) Mul(g Homography) Homography {
	var r Homography
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			r[3*i+j] = h[3*i]*g[j] + h[3*i+1]*g[3+j] + h[3*i+2]*g[6+j]
		}
	}
	return r
}

// Apply maps the point (x, y).
func (h Homography) Apply(x, y float64) (float64, float64) {
	z := h[6]*x + h[7]*y + h[8]
	return (h[0]*x + h[1]*y + h[2]) / z, (h[3]*x + h[4]*y + h[5]) / z
}

// Inverse returns the inverse transform; ok is false when h is singular.
func (h Homography) Inverse() (inv Homography, ok bool) {
	a, b, c, d, e, f, g, k, l := h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
	co := [9]float64{e*l - f*k, c*k - b*l, b*f - c*e, f*g - d*l, a*l - c*g, c*d - a*f, d*k - e*g, b*g - a*k, a*e - b*d}
	det := a*co[0] + b*co[3] + c*co[6]
	if det == 0 || math.IsNaN(det) || math.IsInf(det, 0) {
		return inv, false
	}
	for i := range co {
		inv[i] = co[i] / det
	}
	return inv, true
}

// HomographyFromQuads returns the transform mapping the four points from[i] onto to[i]; ok is
// false when three of them are collinear.
func HomographyFromQuads(from, to [4][2]float64) (Homography, bool) {
	// Solve the 8×8 system for h0..h7 with h8 = 1 by Gaussian elimination with partial pivoting.
	var m [8][9]float64
	for i := 0; i < 4; i++ {
		x, y, u, v := from[i][0], from[i][1], to[i][0], to[i][1]
		m[2*i] = [9]float64{x, y, 1, 0, 0, 0, -u * x, -u * y, u}
		m[2*i+1] = [9]float64{0, 0, 0, x, y, 1, -v * x, -v * y, v}
	}
	for col := 0; col < 8; col++ {
		pivot := col
		for r := col + 1; r < 8; r++ {
			if math.Abs(m[r][col]) > math.Abs(m[pivot][col]) {
				pivot = r
			}
		}
		if math.Abs(m[pivot][col]) < 1e-12 {
			return Homography{}, false
		}
		m[col], m[pivot] = m[pivot], m[col]
		for r := 0; r < 8; r++ {
			if r == col {
				continue
			}
			f := m[r][col] / m[col][col]
			for c := col; c < 9; c++ {
				m[r][c] -= f * m[col][c]
			}
		}
	}
	var h Homography
	for i := 0; i < 8; i++ {
		h[i] = m[i][8] / m[i][i]
	}
	h[8] = 1
	return h, true
}

// sourceMapping composes the geometric Params into the map from output continuous coordinates
// (pixel (x, y) has its centre at x+0.5, y+0.5) to source continuous coordinates, for a w×h
// output drawn from an sw×sh source. The drawn values describe the forward transform; the map
// is its inverse, so a positive Rotate turns the content counter-clockwise as displayed.
func sourceMapping(p Params, w, h int, sw, sh float64) Homography {
	fw, fh := float64(w), float64(h)
	m := IdentityHomography
	if p.Perspective != ([4][2]float64{}) {
		corners := [4][2]float64{{0, 0}, {fw, 0}, {fw, fh}, {0, fh}}
		var moved [4][2]float64
		for i, c := range corners {
			moved[i] = [2]float64{c[0] + p.Perspective[i][0]*fw, c[1] + p.Perspective[i][1]*fh}
		}
		if persp, ok := HomographyFromQuads(moved, corners); ok {
			m = persp
		}
	}
	// Around the centre: undo flip, zoom and rotation.
	cx, cy := fw/2, fh/2
	scale := p.Scale
	if scale <= 0 {
		scale = 1
	}
	sin, cos := math.Sincos(p.Rotate * math.Pi / 180)
	flip := 1.0
	if p.Flip {
		flip = -1
	}
	// in = c + R(-θ)·(1/z)·F·(out - c), with R(-θ) = [[cos, -sin], [sin, cos]] in y-down coordinates.
	a, b := cos*flip/scale, -sin/scale
	c, d := sin*flip/scale, cos/scale
	affine := Homography{a, b, cx - a*cx - b*cy, c, d, cy - c*cx - d*cy, 0, 0, 1}
	toSource := Homography{sw / fw, 0, 0, 0, sh / fh, 0, 0, 0, 1}
	return toSource.Mul(affine).Mul(m)
}

// elasticStep is the spacing of the elastic field's grid, in output pixels; warp cuts rows into
// spans of the same length, along which the field is linear.
const elasticStep = 16

// elasticField is a smooth random displacement field sampled on a coarse grid of output pixels.
type elasticField struct {
	step   int       // grid spacing in pixels: elasticStep
	cols   int       // grid nodes per row
	dx, dy []float32 // displacement at each node, pixels
}

// make fills f with Perlin-noise displacements whose largest magnitude is
// alpha·min(w, h) and whose wavelength is min(w, h)/freq.
func (f *elasticField) make(p Params, w, h int) {
	f.step = elasticStep
	f.cols = w/f.step + 2
	rows := h/f.step + 2
	n := f.cols * rows
	f.dx, f.dy = growF32(f.dx, n), growF32(f.dy, n)
	short := float64(min(w, h))
	freq := p.ElasticFreq / short
	var largest float64
	// bild's Perlin normalises random gradients, and a zero gradient (about one generator in a
	// thousand) yields NaN near its lattice point; such a field is drawn again from a seed
	// derived from the first, so the result stays a function of the Params.
	seed := p.ElasticSeed
	for attempt := 0; ; attempt++ {
		px := perlin.NewPerlin(2, 2, 2, seed)
		py := perlin.NewPerlin(2, 2, 2, seed^0x5bd1e995)
		largest = 0
		bad := false
		for j := 0; j < rows; j++ {
			for i := 0; i < f.cols; i++ {
				x, y := float64(i*f.step)*freq, float64(j*f.step)*freq
				vx, vy := px.Noise2D(x, y), py.Noise2D(x+17.3, y+5.1)
				if math.IsNaN(vx) || math.IsNaN(vy) || math.IsInf(vx, 0) || math.IsInf(vy, 0) {
					bad = true
					vx, vy = 0, 0
				}
				f.dx[j*f.cols+i], f.dy[j*f.cols+i] = float32(vx), float32(vy)
				largest = max(largest, math.Hypot(vx, vy))
			}
		}
		if !bad || attempt == 8 {
			break
		}
		seed = int64(uint64(seed)*0x9e3779b97f4a7c15 + 1)
	}
	if largest == 0 {
		clear(f.dx)
		clear(f.dy)
		return
	}
	k := float32(p.Elastic * short / largest)
	for i := range f.dx {
		f.dx[i] *= k
		f.dy[i] *= k
	}
}

// row interpolates the field vertically at output row y into rx, ry (one value per node column).
func (f *elasticField) row(y int, rx, ry []float32) {
	j := y / f.step
	t := float32(y-j*f.step) / float32(f.step)
	a, b := j*f.cols, (j+1)*f.cols
	for i := 0; i < f.cols; i++ {
		rx[i] = f.dx[a+i] + t*(f.dx[b+i]-f.dx[a+i])
		ry[i] = f.dy[a+i] + t*(f.dy[b+i]-f.dy[a+i])
	}
}

func growF32(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// reflect folds a continuous coordinate into [0, n] by mirroring at the borders, so image and
// mask see the same reflected content.
func reflect(u, n float64) float64 {
	if u >= 0 && u <= n {
		return u
	}
	if math.IsNaN(u) || math.IsInf(u, 0) { // a degenerate mapping: sample the corner, never index with NaN
		return 0
	}
	u = math.Mod(math.Abs(u), 2*n)
	if u > n {
		u = 2*n - u
	}
	return u
}

// warp resamples src and srcMask (equal sizes) into dst and dstMask (equal sizes) through the
// geometric part of p. The image is sampled bilinearly from a box-prefiltered copy when the
// source is at least twice the output size; the mask takes the nearest source label, never a
// blend, from the full-resolution mask over the same domain. Each row first gets its source
// coordinates (one float pair per pixel), then is sampled.
func (a *Augmenter) warp(p Params, src *image.RGBA, srcMask *Mask, dst *image.RGBA, dstMask *Mask) {
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	k := max(1, min(sw/w, sh/h)) // integer prefilter factor
	// The sampled domain is the part of the source the prefilter covers, the same for the mask.
	dw, dh := sw/k*k, sh/k*k
	img := src
	if k > 1 {
		a.small = boxDownsample(a.small, src, k)
		img = a.small
	}
	m := sourceMapping(p, w, h, float64(dw), float64(dh))
	if p.Elastic == 0 && sw == w && sh == h {
		switch m {
		case IdentityHomography: // a copy
			for y := 0; y < h; y++ {
				copy(dst.Pix[y*dst.Stride:y*dst.Stride+4*w], src.Pix[y*src.Stride:])
			}
			copy(dstMask.Pix, srcMask.Pix)
			return
		case Homography{-1, 0, float64(w), 0, 1, 0, 0, 0, 1}: // a mirror: the flip alone
			for y := 0; y < h; y++ {
				in, out := words(src.Pix[y*src.Stride:y*src.Stride+4*w]), words(dst.Pix[y*dst.Stride:y*dst.Stride+4*w])
				mrow, mout := srcMask.Pix[y*w:(y+1)*w], dstMask.Pix[y*w:(y+1)*w]
				for x := range out {
					out[x], mout[x] = in[w-1-x], mrow[w-1-x]
				}
			}
			return
		}
	}
	elastic := p.Elastic > 0
	if elastic {
		a.field.make(p, w, h)
		a.rowX, a.rowY = growF32(a.rowX, a.field.cols), growF32(a.rowY, a.field.cols)
	}
	a.rowU, a.rowV = growF32(a.rowU, w), growF32(a.rowV, w)
	affine := m[6] == 0 && m[7] == 0 && m[8] == 1
	s := sampler{
		src: words(img.Pix), stride: img.Stride / 4, iw: img.Rect.Dx(), ih: img.Rect.Dy(),
		mask: srcMask.Pix, mstride: sw, dw: dw, dh: dh, scale: 256 / float32(k),
	}
	// Other rows are cut into spans of spanStep pixels (the elastic grid's spacing), the source
	// coordinates computed exactly at the span ends and stepped linearly in between: exact for
	// affine maps and for the elastic field (linear along a row within a grid cell), and within
	// a hundredth of a pixel for the mild perspective of the augmentations.
	const spanStep = elasticStep
	var rx, ry []float32
	coord := func(x int, oy float64) (float64, float64) {
		ox := float64(x) + 0.5
		if elastic {
			i := min(x/spanStep, len(rx)-2)
			t := float32(x-i*spanStep) / spanStep
			ox += float64(rx[i] + t*(rx[i+1]-rx[i]))
			oy += float64(ry[i] + t*(ry[i+1]-ry[i]))
		}
		z := m[6]*ox + m[7]*oy + m[8]
		return (m[0]*ox + m[1]*oy + m[2]) / z, (m[3]*ox + m[4]*oy + m[5]) / z
	}
	for y := 0; y < h; y++ {
		out := words(dst.Pix[y*dst.Stride : y*dst.Stride+4*w])
		mout := dstMask.Pix[y*w : (y+1)*w]
		oy := float64(y) + 0.5
		if affine && !elastic {
			u, v := coord(0, oy)
			a.linearRun(&s, u, v, m[0], m[3], out, mout)
			continue
		}
		if elastic {
			rx, ry = a.rowX, a.rowY
			a.field.row(y, rx, ry)
		}
		u0, v0 := coord(0, oy)
		for x0 := 0; x0 < w; x0 += spanStep {
			x1 := min(x0+spanStep, w)
			u1, v1 := coord(x1, oy)
			n := float64(x1 - x0)
			a.linearRun(&s, u0, v0, (u1-u0)/n, (v1-v0)/n, out[x0:x1], mout[x0:x1])
			u0, v0 = u1, v1
		}
	}
}

// sampler reads a prefiltered source image and a full-resolution mask at continuous source
// coordinates.
type sampler struct {
	src     []uint32 // prefiltered image, one word per pixel
	stride  int      // words per row
	iw, ih  int      // prefiltered size
	mask    []uint8  // full-resolution labels
	mstride int
	dw, dh  int     // sampled domain, full-resolution pixels
	scale   float32 // 256 / prefilter factor: full-resolution coordinate to 1/256 prefiltered pixels
}

// linearRun samples pixels whose source coordinates are (u + du·x, v + dv·x): the part inside
// the domain by the fixed-point path, mirrored pixels at either end by the general one.
func (a *Augmenter) linearRun(s *sampler, u, v, du, dv float64, out []uint32, mout []uint8) {
	n := len(mout)
	lo, hi := insideRun(u, du, float64(s.dw), n)
	lo2, hi2 := insideRun(v, dv, float64(s.dh), n)
	lo, hi = max(lo, lo2), min(hi, hi2)
	if lo < hi && s.affineRow(u+du*float64(lo), v+dv*float64(lo), du, dv, out[lo:hi], mout[lo:hi]) {
		if lo == 0 && hi == n {
			return
		}
	} else {
		lo, hi = 0, 0
	}
	ru, rv := a.rowU[:n], a.rowV[:n]
	for x := 0; x < n; x++ {
		if x == lo && lo < hi {
			x = hi - 1 // the fixed-point path did these
			continue
		}
		ru[x], rv[x] = float32(u+du*float64(x)), float32(v+dv*float64(x))
	}
	s.row(ru[:lo], rv[:lo], out[:lo], mout[:lo])
	s.row(ru[hi:], rv[hi:], out[hi:], mout[hi:])
}

// insideRun returns the pixels [a, b) of an n-pixel row whose coordinate start + step·x lies
// safely inside (0, size), shrunk by one pixel at each end against rounding.
func insideRun(start, step, size float64, n int) (a, b int) {
	const margin = 1e-3
	lo, hi := margin, size-margin
	if step == 0 {
		if start >= lo && start <= hi {
			return 0, n
		}
		return 0, 0
	}
	t0, t1 := (lo-start)/step, (hi-start)/step
	if t0 > t1 {
		t0, t1 = t1, t0
	}
	a = max(0, int(math.Ceil(t0))+1)
	b = min(n, int(math.Floor(t1)))
	if b < a {
		return 0, 0
	}
	return a, b
}

// affineRow samples a row whose source coordinates start at (u, v) and advance by (du, dv) per
// pixel, in fixed point, when the whole row lies inside the sampled domain (along a line, both
// ends inside means every pixel is). It reports false, writing nothing, otherwise; the general
// path then mirrors the outside pixels. It gives the same labels as row and the same colours up
// to rounding.
func (s *sampler) affineRow(u, v, du, dv float64, out []uint32, mout []uint8) bool {
	n := len(mout)
	endU, endV := u+du*float64(n-1), v+dv*float64(n-1)
	// A margin keeps fixed-point truncation from stepping outside the domain at either end.
	lim := func(a float64, size int) bool { return a >= 1e-6 && a < float64(size)-1e-6 }
	if !lim(u, s.dw) || !lim(v, s.dh) || !lim(endU, s.dw) || !lim(endV, s.dh) {
		return false
	}
	const one = 1 << 32         // 32.32 fixed point: no drift over any row length
	k := float64(s.scale) / 256 // prefiltered pixels per source pixel
	mu, mv := int64(u*one), int64(v*one)
	mdu, mdv := int64(du*one), int64(dv*one)
	// Image coordinates in prefiltered pixels, shifted by half a pixel to the sample centres.
	iu, iv := int64((u*k-0.5)*one), int64((v*k-0.5)*one)
	idu, idv := int64(du*k*one), int64(dv*k*one)
	// Locals, not fields: the compiler cannot keep s's fields in registers across the stores.
	src, mask := s.src, s.mask
	stride, mstride := s.stride, s.mstride
	iw1, ih1 := s.iw-1, s.ih-1
	out = out[:n]
	if k == 1 {
		// No prefilter: the image sample sits half a pixel before the mask coordinate, so one
		// pair of accumulators serves both.
		bilinearNearest(src, mask, stride, mstride, iw1, ih1, mu, mv, mdu, mdv, out, mout)
		return true
	}
	for x := range mout {
		mx, my := int(mu>>32), int(mv>>32)
		mout[x] = mask[my*mstride+mx]
		x0, y0 := int(iu>>32), int(iv>>32) // arithmetic shift: floor, also for -0.5
		fx, fy := uint32(iu>>24)&255, uint32(iv>>24)&255
		x1, y1 := min(x0+1, iw1), min(y0+1, ih1)
		x0, y0 = max(x0, 0), max(y0, 0)
		r0, r1 := y0*stride, y1*stride
		p00, p01, p10, p11 := src[r0+x0], src[r0+x1], src[r1+x0], src[r1+x1]
		out[x] = bilerp(p00, p01, p10, p11, fx, fy)
		mu, mv, iu, iv = mu+mdu, mv+mdv, iu+idu, iv+idv
	}
	return true
}

// bilinearNearest is affineRow's loop without prefiltering, in a function of its own so that
// its few live values stay in registers.
func bilinearNearest(src []uint32, mask []uint8, stride, mstride, iw1, ih1 int, mu, mv, mdu, mdv int64, out []uint32, mout []uint8) {
	const lanes = 0x00ff00ff
	const half = 1 << 31
	out = out[:len(mout)]
	for x := range mout {
		mout[x] = mask[int(mv>>32)*mstride+int(mu>>32)]
		su, sv := mu-half, mv-half
		x0, y0 := int(su>>32), int(sv>>32)
		fx, fy := uint32(su>>24)&255, uint32(sv>>24)&255
		x1, y1 := min(x0+1, iw1), min(y0+1, ih1)
		x0, y0 = max(x0, 0), max(y0, 0)
		r0, r1 := y0*stride, y1*stride
		p00, p01, p10, p11 := src[r0+x0], src[r0+x1], src[r1+x0], src[r1+x1]
		// bilerp, written out: the compiler does not inline it.
		w11 := (fx*fy + 128) >> 8
		w01, w10 := fx-w11, fy-w11
		w00 := 256 - fx - fy + w11
		rb := (p00&lanes)*w00 + (p01&lanes)*w01 + (p10&lanes)*w10 + (p11&lanes)*w11 + 0x00800080
		ga := (p00>>8&lanes)*w00 + (p01>>8&lanes)*w01 + (p10>>8&lanes)*w10 + (p11>>8&lanes)*w11 + 0x00800080
		out[x] = rb>>8&lanes | ga&0xff00ff00
		mu, mv = mu+mdu, mv+mdv
	}
}

// bilerp blends four RGBA words with bilinear weights from the fractions fx, fy (in 1/256): the
// four weights, summing to exactly 256, multiply two channel lanes per word at once.
func bilerp(p00, p01, p10, p11, fx, fy uint32) uint32 {
	const lanes = 0x00ff00ff
	w11 := (fx*fy + 128) >> 8
	w01, w10 := fx-w11, fy-w11
	w00 := 256 - fx - fy + w11
	rb := (p00&lanes)*w00 + (p01&lanes)*w01 + (p10&lanes)*w10 + (p11&lanes)*w11 + 0x00800080
	ga := (p00>>8&lanes)*w00 + (p01>>8&lanes)*w01 + (p10>>8&lanes)*w10 + (p11>>8&lanes)*w11 + 0x00800080
	return rb>>8&lanes | ga&0xff00ff00
}

// row samples one output row: the image bilinearly with 8-bit weights on two channel lanes at
// a time, the mask at the nearest source pixel. Coordinates outside the domain are mirrored.
func (s *sampler) row(ru, rv []float32, out []uint32, mout []uint8) {
	fdw, fdh := float32(s.dw), float32(s.dh)
	rv = rv[:len(ru)]
	out = out[:len(ru)]
	mout = mout[:len(ru)]
	for x, u := range ru {
		v := rv[x]
		if !(u >= 0 && u < fdw) {
			u = float32(reflect(float64(u), float64(fdw)))
		}
		if !(v >= 0 && v < fdh) {
			v = float32(reflect(float64(v), float64(fdh)))
		}
		mx, my := min(int(u), s.dw-1), min(int(v), s.dh-1)
		mout[x] = s.mask[my*s.mstride+mx]

		// Pixel centres sit at +0.5: shift by half a prefiltered pixel (128/256).
		us, vs := int(u*s.scale)-128, int(v*s.scale)-128
		x0, y0 := us>>8, vs>>8
		fx, fy := uint32(us&255), uint32(vs&255)
		x1, y1 := x0+1, y0+1
		x0, x1 = min(max(x0, 0), s.iw-1), min(x1, s.iw-1)
		y0, y1 = min(max(y0, 0), s.ih-1), min(y1, s.ih-1)
		r0, r1 := y0*s.stride, y1*s.stride
		p00, p01, p10, p11 := s.src[r0+x0], s.src[r0+x1], s.src[r1+x0], s.src[r1+x1]
		out[x] = bilerp(p00, p01, p10, p11, fx, fy)
	}
}

// boxDownsample averages k×k blocks of src into dst (reused when large enough); the last
// partial row and column of blocks are dropped.
func boxDownsample(dst *image.RGBA, src *image.RGBA, k int) *image.RGBA {
	w, h := src.Rect.Dx()/k, src.Rect.Dy()/k
	dst = resizeRGBA(dst, w, h)
	area := k * k
	sums := make([]int, 3*w)
	for y := 0; y < h; y++ {
		clear(sums)
		for dy := 0; dy < k; dy++ {
			row := src.Pix[(y*k+dy)*src.Stride:]
			for x := 0; x < w; x++ {
				s := row[4*x*k : 4*(x+1)*k]
				var r, g, b int
				for i := 0; i < k; i++ {
					r += int(s[4*i])
					g += int(s[4*i+1])
					b += int(s[4*i+2])
				}
				sums[3*x] += r
				sums[3*x+1] += g
				sums[3*x+2] += b
			}
		}
		o := dst.Pix[y*dst.Stride:]
		for x := 0; x < w; x++ {
			o[4*x] = uint8((sums[3*x] + area/2) / area)
			o[4*x+1] = uint8((sums[3*x+1] + area/2) / area)
			o[4*x+2] = uint8((sums[3*x+2] + area/2) / area)
			o[4*x+3] = 255
		}
	}
	return dst
}
