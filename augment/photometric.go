package augment

import (
	"image"
	"math"
	"sync"
)

// colorAffine is v' = M·v + t on RGB values in 0..255.
type colorAffine struct {
	m [3][3]float64
	t [3]float64
}

var identityColor = colorAffine{m: [3][3]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}}

// then returns the affine transform that applies a, then b.
func (a colorAffine) then(b colorAffine) colorAffine {
	var r colorAffine
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			r.m[i][j] = b.m[i][0]*a.m[0][j] + b.m[i][1]*a.m[1][j] + b.m[i][2]*a.m[2][j]
		}
		r.t[i] = b.m[i][0]*a.t[0] + b.m[i][1]*a.t[1] + b.m[i][2]*a.t[2] + b.t[i]
	}
	return r
}

// Luma weights (ITU-R BT.601), as torchvision's rgb_to_grayscale.
var luma = [3]float64{0.299, 0.587, 0.114}

// photometric builds the colour transform of p: brightness, then contrast around the image's
// mean luma, then saturation, then hue. Composing them into one affine map means one pass and
// one rounding; hue is a rotation of RGB around the gray axis, which keeps luma and chroma
// magnitude like an HSV hue shift but stays linear.
func photometric(p Params, meanLuma float64) (colorAffine, bool) {
	c := identityColor
	changed := false
	if p.Brightness != 0 {
		b := p.Brightness * 255
		c = c.then(colorAffine{m: identityColor.m, t: [3]float64{b, b, b}})
		meanLuma += b
		changed = true
	}
	if p.Contrast != 1 && p.Contrast != 0 {
		k := p.Contrast
		off := (1 - k) * meanLuma
		c = c.then(colorAffine{m: [3][3]float64{{k, 0, 0}, {0, k, 0}, {0, 0, k}}, t: [3]float64{off, off, off}})
		changed = true
	}
	if p.Saturation != 1 && p.Saturation != 0 {
		s := p.Saturation
		var m [3][3]float64
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				m[i][j] = (1 - s) * luma[j]
				if i == j {
					m[i][j] += s
				}
			}
		}
		c = c.then(colorAffine{m: m})
		changed = true
	}
	if p.Hue != 0 {
		sin, cos := math.Sincos(2 * math.Pi * p.Hue)
		third, root := (1-cos)/3, sin/math.Sqrt(3)
		m := [3][3]float64{
			{cos + third, third - root, third + root},
			{third + root, cos + third, third - root},
			{third - root, third + root, cos + third},
		}
		c = c.then(colorAffine{m: m})
		changed = true
	}
	return c, changed
}

// meanLuma estimates the mean luma of img from every 4th pixel of every 4th row.
func meanLuma(img *image.RGBA) float64 {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	var sum, n float64
	for y := 0; y < h; y += 4 {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x += 4 {
			sum += luma[0]*float64(row[4*x]) + luma[1]*float64(row[4*x+1]) + luma[2]*float64(row[4*x+2])
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / n
}

// noiseLevels is the normal distribution at 4096 equally likely quantiles; indexing it with
// uniform 12-bit numbers draws Gaussian noise without a transcendental call per sample.
var noiseLevels = sync.OnceValue(func() *[4096]float64 {
	var q [4096]float64
	for i := range q {
		q[i] = math.Sqrt2 * math.Erfinv(2*(float64(i)+0.5)/4096-1)
	}
	return &q
})

const colorShift = 12 // fixed-point bits of the colour pass

// fixed is the transform in fixed point (colorShift fractional bits, the rounding half folded
// into t) and whether it scales each channel on its own (no channel mixing).
func (c colorAffine) fixed() (m [9]int32, t [3]int32, diagonal bool) {
	const one = 1 << colorShift
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			m[3*i+j] = int32(math.Round(c.m[i][j] * one))
		}
		t[i] = int32(math.Round(c.t[i]*one)) + one/2
	}
	return m, t, m[1] == 0 && m[2] == 0 && m[3] == 0 && m[5] == 0 && m[6] == 0 && m[7] == 0
}

// colorPass applies the colour transform and, when sigma > 0, additive Gaussian noise of
// standard deviation sigma (fraction of full scale), in one pass in fixed point, clamping to 0..255.
func colorPass(img *image.RGBA, c colorAffine, sigma float64, seed uint64) {
	m, t, diagonal := c.fixed()
	if sigma <= 0 && diagonal {
		// Brightness and contrast only: one table per channel.
		var lut [3][256]uint8
		for c := 0; c < 3; c++ {
			for v := range lut[c] {
				lut[c][v] = clampShift(m[4*c]*int32(v) + t[c])
			}
		}
		w, h := img.Rect.Dx(), img.Rect.Dy()
		for y := 0; y < h; y++ {
			row := img.Pix[y*img.Stride : y*img.Stride+4*w]
			for x := 0; x < w; x++ {
				p := row[4*x : 4*x+3 : 4*x+3]
				p[0], p[1], p[2] = lut[0][p[0]], lut[1][p[1]], lut[2][p[2]]
			}
		}
		return
	}
	var noise [4096]int32
	if sigma > 0 {
		for i, q := range noiseLevels() {
			noise[i] = int32(math.Round(q * sigma * 255 * (1 << colorShift)))
		}
	}
	state := seed
	w, h := img.Rect.Dx(), img.Rect.Dy()
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		for x := 0; x < w; x++ {
			p := row[4*x : 4*x+3 : 4*x+3]
			r, g, b := int32(p[0]), int32(p[1]), int32(p[2])
			nr, ng, nb := t[0], t[1], t[2]
			if sigma > 0 {
				// splitmix64: 36 of its bits pick three quantiles.
				state += 0x9e3779b97f4a7c15
				z := state
				z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
				z = (z ^ z>>27) * 0x94d049bb133111eb
				z ^= z >> 31
				nr += noise[z&4095]
				ng += noise[(z>>12)&4095]
				nb += noise[(z>>24)&4095]
			}
			p[0] = clampShift(m[0]*r + m[1]*g + m[2]*b + nr)
			p[1] = clampShift(m[3]*r + m[4]*g + m[5]*b + ng)
			p[2] = clampShift(m[6]*r + m[7]*g + m[8]*b + nb)
		}
	}
}

func clampShift(v int32) uint8 {
	v >>= colorShift
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// planarPass writes img through the colour transform c and Gaussian noise of standard deviation
// sigma (fraction of full scale) as normalised float planes: dst[c·n + i] = (v/255 − mean[c]) /
// std[c] for pixel i of n, v the transformed value rounded to 8 bits exactly as colorPass
// rounds it. Without noise a diagonal transform (brightness, contrast) folds into one table per
// channel.
func planarPass(dst []float32, img *image.RGBA, c colorAffine, sigma float64, seed uint64, mean, std [3]float32) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	n := w * h
	var scale, bias [3]float32
	for ch := range scale {
		scale[ch] = 1 / (255 * std[ch])
		bias[ch] = -mean[ch] / std[ch]
	}
	pr, pg, pb := dst[:n], dst[n:2*n], dst[2*n:3*n]
	// Fixed point as in colorPass, then one table lookup per channel for the normalisation.
	var norm [3][256]float32
	for ch := range norm {
		for v := range norm[ch] {
			norm[ch][v] = float32(v)*scale[ch] + bias[ch]
		}
	}
	m, t, diagonal := c.fixed()
	if sigma <= 0 && diagonal {
		var lut [3][256]float32
		for ch := range lut {
			for v := range lut[ch] {
				lut[ch][v] = norm[ch][clampShift(m[4*ch]*int32(v)+t[ch])]
			}
		}
		for y := 0; y < h; y++ {
			row := img.Pix[y*img.Stride : y*img.Stride+4*w]
			o := y * w
			rr, gg, bb := pr[o:o+w], pg[o:o+w], pb[o:o+w]
			for x := range rr {
				p := row[4*x : 4*x+3 : 4*x+3]
				rr[x], gg[x], bb[x] = lut[0][p[0]], lut[1][p[1]], lut[2][p[2]]
			}
		}
		return
	}
	var noise [4096]int32
	if sigma > 0 {
		for i, q := range noiseLevels() {
			noise[i] = int32(math.Round(q * sigma * 255 * (1 << colorShift)))
		}
	}
	state := seed
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		o := y * w
		rr, gg, bb := pr[o:o+w], pg[o:o+w], pb[o:o+w]
		for x := range rr {
			p := row[4*x : 4*x+3 : 4*x+3]
			r, g, b := int32(p[0]), int32(p[1]), int32(p[2])
			nr, ng, nb := t[0], t[1], t[2]
			if sigma > 0 { // the same generator and quantiles as colorPass
				state += 0x9e3779b97f4a7c15
				z := state
				z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
				z = (z ^ z>>27) * 0x94d049bb133111eb
				z ^= z >> 31
				nr += noise[z&4095]
				ng += noise[(z>>12)&4095]
				nb += noise[(z>>24)&4095]
			}
			rr[x] = norm[0][clampShift(m[0]*r+m[1]*g+m[2]*b+nr)]
			gg[x] = norm[1][clampShift(m[3]*r+m[4]*g+m[5]*b+ng)]
			bb[x] = norm[2][clampShift(m[6]*r+m[7]*g+m[8]*b+nb)]
		}
	}
}
