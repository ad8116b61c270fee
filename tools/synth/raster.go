package synth

import (
	"math"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// rgb is a colour with channels in 0..1 (sRGB values, not linear light).
type rgb [3]float32

func (c rgb) scale(k float32) rgb { return rgb{c[0] * k, c[1] * k, c[2] * k} }

func (c rgb) add(d rgb) rgb { return rgb{c[0] + d[0], c[1] + d[1], c[2] + d[2]} }

// mix returns c·(1−t) + d·t.
func (c rgb) mix(d rgb, t float32) rgb {
	return rgb{c[0] + (d[0]-c[0])*t, c[1] + (d[1]-c[1])*t, c[2] + (d[2]-c[2])*t}
}

func clamp01(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// canvas is an RGB float image with, for the frame, the label of every pixel.
type canvas struct {
	w, h  int
	pix   []float32 // 3 per pixel
	label []uint8   // 0 background, 1 card; nil for textures
}

func newCanvas(w, h int, labels bool) *canvas {
	c := &canvas{w: w, h: h, pix: make([]float32, 3*w*h)}
	if labels {
		c.label = make([]uint8, w*h)
	}
	return c
}

func (c *canvas) at(x, y int) rgb {
	i := 3 * (y*c.w + x)
	return rgb{c.pix[i], c.pix[i+1], c.pix[i+2]}
}

func (c *canvas) set(x, y int, v rgb) {
	i := 3 * (y*c.w + x)
	c.pix[i], c.pix[i+1], c.pix[i+2] = v[0], v[1], v[2]
}

// blend mixes v into pixel (x, y) with opacity a.
func (c *canvas) blend(x, y int, v rgb, a float32) {
	i := 3 * (y*c.w + x)
	p := c.pix[i : i+3 : i+3]
	p[0] += (v[0] - p[0]) * a
	p[1] += (v[1] - p[1]) * a
	p[2] += (v[2] - p[2]) * a
}

// sample reads the canvas bilinearly at continuous coordinates (pixel centres at +0.5),
// clamping at the borders.
func (c *canvas) sample(x, y float64) rgb {
	x, y = x-0.5, y-0.5
	x0, y0 := int(math.Floor(x)), int(math.Floor(y))
	fx, fy := float32(x-float64(x0)), float32(y-float64(y0))
	cl := func(v, n int) int { return min(max(v, 0), n-1) }
	xa, xb, ya, yb := cl(x0, c.w), cl(x0+1, c.w), cl(y0, c.h), cl(y0+1, c.h)
	top := c.at(xa, ya).mix(c.at(xb, ya), fx)
	bot := c.at(xa, yb).mix(c.at(xb, yb), fx)
	return top.mix(bot, fy)
}

// shape is an object in its own coordinates: a signed distance (negative inside, in local
// units) and a colour, both defined over bounds. color also gets the distance, for shading.
type shape struct {
	x0, y0, x1, y1 float64 // local bounds
	sd             func(x, y float64) float64
	color          func(x, y, sd float64) rgb
}

// labelMode says what drawing a shape does to the labels of the pixels it covers.
type labelMode int

const (
	keepLabel  labelMode = iota // translucent things: the label below shows through
	setCard                     // a card
	clearLabel                  // an opaque non-card object hides what is below
)

// projected is a shape placed in the frame through a homography.
type projected struct {
	s         shape
	toImage   augment.Homography // local → image
	toLocal   augment.Homography // image → local
	footprint float64            // local units per image pixel, for anti-aliasing
	bx0, by0  int                // image bounding box, clipped
	bx1, by1  int
}

// place projects s through h into a w×h frame; ok is false when it misses the frame.
func place(s shape, h augment.Homography, w, hgt int) (p projected, ok bool) {
	inv, ok := h.Inverse()
	if !ok {
		return p, false
	}
	p = projected{s: s, toImage: h, toLocal: inv}
	minX, minY, maxX, maxY := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	for _, c := range [4][2]float64{{s.x0, s.y0}, {s.x1, s.y0}, {s.x1, s.y1}, {s.x0, s.y1}} {
		x, y := h.Apply(c[0], c[1])
		if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) {
			return p, false
		}
		minX, minY, maxX, maxY = min(minX, x), min(minY, y), max(maxX, x), max(maxY, y)
	}
	p.bx0, p.by0 = max(0, int(math.Floor(minX))-1), max(0, int(math.Floor(minY))-1)
	p.bx1, p.by1 = min(w, int(math.Ceil(maxX))+1), min(hgt, int(math.Ceil(maxY))+1)
	if p.bx0 >= p.bx1 || p.by0 >= p.by1 {
		return p, false
	}
	// Local units per image pixel at the centre: the square root of the Jacobian's determinant.
	cx, cy := (s.x0+s.x1)/2, (s.y0+s.y1)/2
	ix, iy := h.Apply(cx, cy)
	ax, ay := inv.Apply(ix+1, iy)
	bx, by := inv.Apply(ix, iy+1)
	det := math.Abs((ax-cx)*(by-cy) - (ay-cy)*(bx-cx))
	p.footprint = math.Sqrt(det)
	if !(p.footprint > 0) {
		return p, false
	}
	return p, true
}

// draw composites p onto the frame: colour with anti-aliased coverage times alpha, labels by mode.
// A label changes only where the pixel's centre is inside the shape, so masks are exact.
func (c *canvas) draw(p projected, alpha float32, mode labelMode) {
	m := p.toLocal
	for y := p.by0; y < p.by1; y++ {
		py := float64(y) + 0.5
		for x := p.bx0; x < p.bx1; x++ {
			px := float64(x) + 0.5
			z := m[6]*px + m[7]*py + m[8]
			lx, ly := (m[0]*px+m[1]*py+m[2])/z, (m[3]*px+m[4]*py+m[5])/z
			if lx < p.s.x0-p.footprint || lx > p.s.x1+p.footprint || ly < p.s.y0-p.footprint || ly > p.s.y1+p.footprint {
				continue
			}
			sd := p.s.sd(lx, ly)
			cov := clamp01(float32(0.5 - sd/p.footprint))
			if cov <= 0 {
				continue
			}
			c.blend(x, y, p.s.color(lx, ly, sd), cov*alpha)
			if sd < 0 && c.label != nil {
				switch mode {
				case setCard:
					c.label[y*c.w+x] = 1
				case clearLabel:
					c.label[y*c.w+x] = 0
				}
			}
		}
	}
}

// shadow darkens the frame under p: its silhouette moved by (dx, dy) pixels, blurred by radius
// pixels, multiplied down by strength.
func (c *canvas) shadow(p projected, dx, dy, radius, strength float64, scratch *[]float32) {
	r := int(math.Ceil(radius))
	x0, y0 := max(0, p.bx0+int(dx)-2*r-1), max(0, p.by0+int(dy)-2*r-1)
	x1, y1 := min(c.w, p.bx1+int(dx)+2*r+2), min(c.h, p.by1+int(dy)+2*r+2)
	w, h := x1-x0, y1-y0
	if w <= 0 || h <= 0 {
		return
	}
	if cap(*scratch) < w*h {
		*scratch = make([]float32, w*h)
	}
	buf := (*scratch)[:w*h]
	clear(buf)
	m := p.toLocal
	for y := y0; y < y1; y++ {
		py := float64(y) + 0.5 - dy
		for x := x0; x < x1; x++ {
			px := float64(x) + 0.5 - dx
			z := m[6]*px + m[7]*py + m[8]
			lx, ly := (m[0]*px+m[1]*py+m[2])/z, (m[3]*px+m[4]*py+m[5])/z
			if lx < p.s.x0 || lx > p.s.x1 || ly < p.s.y0 || ly > p.s.y1 {
				continue
			}
			buf[(y-y0)*w+x-x0] = clamp01(float32(0.5 - p.s.sd(lx, ly)/p.footprint))
		}
	}
	if r > 0 {
		boxBlur(buf, w, h, r)
		boxBlur(buf, w, h, r)
	}
	k := float32(strength)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if s := buf[y*w+x]; s > 0 {
				i := 3 * ((y+y0)*c.w + x + x0)
				f := 1 - k*s
				c.pix[i] *= f
				c.pix[i+1] *= f
				c.pix[i+2] *= f
			}
		}
	}
}

// boxBlur blurs a w×h float buffer in place with a (2r+1)-wide box, horizontally then
// vertically, edges clamped; repeated passes approach a Gaussian. Running sums make the cost
// independent of r.
func boxBlur(buf []float32, w, h, r int) {
	inv := 1 / float32(2*r+1)
	line := make([]float32, max(w, h))
	for y := 0; y < h; y++ {
		row := buf[y*w : (y+1)*w]
		var sum float32
		for i := -r; i <= r; i++ {
			sum += row[min(max(i, 0), w-1)]
		}
		for x := 0; x < w; x++ {
			line[x] = sum * inv
			sum += row[min(x+r+1, w-1)] - row[max(x-r, 0)]
		}
		copy(row, line[:w])
	}
	// Columns, a whole row at a time: sums[x] runs down column x.
	sums := make([]float32, w)
	out := make([]float32, w*h)
	for i := -r; i <= r; i++ {
		row := buf[min(max(i, 0), h-1)*w:][:w]
		for x, v := range row {
			sums[x] += v
		}
	}
	for y := 0; y < h; y++ {
		o := out[y*w : (y+1)*w]
		add, sub := buf[min(y+r+1, h-1)*w:][:w], buf[max(y-r, 0)*w:][:w]
		for x := range o {
			o[x] = sums[x] * inv
			sums[x] += add[x] - sub[x]
		}
	}
	copy(buf, out)
}

// gaussian blurs the canvas with a Gaussian of standard deviation sigma pixels, edges
// clamped: a lens slightly out of focus. Small blurs use the exact separable kernel; large ones
// three box blurs of matching variance, whose cost does not grow with sigma.
func (c *canvas) gaussian(sigma float64) {
	if sigma < 0.2 {
		return
	}
	plane := make([]float32, c.w*c.h)
	tmp := make([]float32, max(c.w, c.h))
	for ch := 0; ch < 3; ch++ {
		for i := range plane {
			plane[i] = c.pix[3*i+ch]
		}
		if sigma < 1.5 {
			convolve(plane, c.w, c.h, gaussKernel(sigma), tmp)
		} else {
			// n box passes of width 2r+1 have variance n·((2r+1)²−1)/12.
			r := max(1, int(math.Round((math.Sqrt(4*sigma*sigma+1)-1)/2)))
			for range 3 {
				boxBlur(plane, c.w, c.h, r)
			}
		}
		for i, v := range plane {
			c.pix[3*i+ch] = v
		}
	}
}

func gaussKernel(sigma float64) []float32 {
	r := int(math.Ceil(2.5 * sigma))
	k := make([]float32, 2*r+1)
	var sum float32
	for i := range k {
		d := float64(i - r)
		k[i] = float32(math.Exp(-d * d / (2 * sigma * sigma)))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// convolve applies the symmetric kernel k along rows, then columns, of a w×h plane, edges
// clamped; line is scratch of at least max(w, h).
func convolve(plane []float32, w, h int, k []float32, line []float32) {
	r := len(k) / 2
	for y := 0; y < h; y++ {
		row := plane[y*w : (y+1)*w]
		for x := 0; x < w; x++ {
			var acc float32
			if x >= r && x+r < w {
				win := row[x-r : x+r+1]
				for j, kw := range k {
					acc += kw * win[j]
				}
			} else {
				for j, kw := range k {
					acc += kw * row[min(max(x+j-r, 0), w-1)]
				}
			}
			line[x] = acc
		}
		copy(row, line[:w])
	}
	out := make([]float32, w*h)
	for y := 0; y < h; y++ {
		o := out[y*w : (y+1)*w]
		for j, kw := range k {
			src := plane[min(max(y+j-r, 0), h-1)*w:][:w]
			for x, v := range src {
				o[x] += kw * v
			}
		}
	}
	copy(plane, out)
}

// Signed distances, negative inside.

// sdRoundRect is the distance to an axis-aligned rectangle [x0,x1]×[y0,y1] with corner radius r.
func sdRoundRect(x, y, x0, y0, x1, y1, r float64) float64 {
	cx, cy := (x0+x1)/2, (y0+y1)/2
	hx, hy := (x1-x0)/2-r, (y1-y0)/2-r
	qx, qy := math.Abs(x-cx)-hx, math.Abs(y-cy)-hy
	out := math.Hypot(max(qx, 0), max(qy, 0))
	return out + min(max(qx, qy), 0) - r
}

// sdEllipse approximates the distance to an ellipse with radii rx, ry centred at (cx, cy).
func sdEllipse(x, y, cx, cy, rx, ry float64) float64 {
	dx, dy := (x-cx)/rx, (y-cy)/ry
	k := math.Hypot(dx, dy)
	if k == 0 {
		return -min(rx, ry)
	}
	// The normalised distance scaled by the smaller radius: exact on circles, close enough
	// near the outline of moderate ellipses for anti-aliasing.
	return (k - 1) * min(rx, ry)
}

// sdCapsule is the distance to the segment (ax, ay)–(bx, by) thickened by r.
func sdCapsule(x, y, ax, ay, bx, by, r float64) float64 {
	px, py := x-ax, y-ay
	vx, vy := bx-ax, by-ay
	t := (px*vx + py*vy) / (vx*vx + vy*vy)
	t = max(0, min(1, t))
	return math.Hypot(px-t*vx, py-t*vy) - r
}

// similarity is the homography of a rotation by angle (radians), uniform scale and translation.
func similarity(angle, scale, tx, ty float64) augment.Homography {
	s, c := math.Sincos(angle)
	return augment.Homography{c * scale, -s * scale, tx, s * scale, c * scale, ty, 0, 0, 1}
}
