package synth

import (
	"image"
	"math"
	"math/rand/v2"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// scene is one photograph being composed: a table plane seen by a tilted camera, objects on it,
// lighting and the camera's own artefacts.
type scene struct {
	rng     *rand.Rand
	w, h    int
	ref     float64 // the frame's shorter side in pixels; sizes scale with it
	c       *canvas
	table   augment.Homography // table plane → image
	toTable augment.Homography // image → table plane
	lightX  float64            // direction shadows fall, unit vector
	lightY  float64
	mmPx    float64  // pixels per millimetre of the last card, to size clutter alike
	placed  []placed // cards drawn so far
	scratch []float32
}

// Render draws the synthetic photograph with the given seed at w×h pixels and returns it with its
// exact labels (1 card, 0 background, one per pixel, rows packed). The same seed and size give
// the same picture.
func Render(seed uint64, w, h int) (*image.RGBA, []uint8) {
	s := &scene{rng: rand.New(rand.NewPCG(seed, 0x63617264)), w: w, h: h, ref: float64(min(w, h))}
	s.c = newCanvas(w, h, true)
	s.camera()
	s.background()
	s.clutter(false)
	if s.rng.Float64() < 0.25 { // shallow depth of field: the table behind the cards out of focus
		s.c.gaussian(between(s.rng, 1, 4) * s.ref / 480)
	}
	s.cards()
	s.clutter(true)
	s.lighting()
	return s.develop(), s.c.label
}

// camera sets the table-to-image homography: the far edge of the table (top of the frame) is
// seen narrower than the near edge, then the camera rolls a little.
func (s *scene) camera() {
	w, h := float64(s.w), float64(s.h)
	tilt := 0.0
	if s.rng.Float64() < 0.75 {
		tilt = between(s.rng, 0.05, 0.45)
	}
	a, b := tilt*w*0.5, tilt*h*0.35
	tableQuad := [4][2]float64{{-a, -b}, {w + a, -b}, {w, h}, {0, h}}
	imageQuad := [4][2]float64{{0, 0}, {w, 0}, {w, h}, {0, h}}
	t, ok := augment.HomographyFromQuads(tableQuad, imageQuad)
	if !ok {
		t = augment.IdentityHomography
	}
	roll := between(s.rng, -0.12, 0.12)
	cx, cy := w/2, h/2
	rot := similarity(roll, 1, 0, 0)
	centre := augment.Homography{1, 0, cx, 0, 1, cy, 0, 0, 1}
	back := augment.Homography{1, 0, -cx, 0, 1, -cy, 0, 0, 1}
	s.table = centre.Mul(rot).Mul(back).Mul(t)
	s.toTable, _ = s.table.Inverse()
	ang := between(s.rng, 0, 2*math.Pi)
	s.lightX, s.lightY = math.Cos(ang), math.Sin(ang)
}

// tableScale is how many image pixels one table unit spans near image point (x, y).
func (s *scene) tableScale(x, y float64) float64 {
	u, v := s.toTable.Apply(x, y)
	ax, ay := s.table.Apply(u+1, v)
	bx, by := s.table.Apply(u, v+1)
	return math.Sqrt(math.Abs((ax-x)*(by-y) - (ay-y)*(bx-x)))
}

// onTable returns the homography placing local coordinates on the table: rotated by angle,
// scaled so that one local unit spans unitPx image pixels around image point (x, y).
func (s *scene) onTable(x, y, angle, unitPx float64) augment.Homography {
	u, v := s.toTable.Apply(x, y)
	k := unitPx / s.tableScale(x, y)
	return s.table.Mul(similarity(angle, k, u, v))
}

// forEachPixel calls f with every pixel and its table coordinates.
func (s *scene) forEachPixel(f func(x, y int, u, v float64) rgb) {
	m := s.toTable
	for y := 0; y < s.h; y++ {
		py := float64(y) + 0.5
		for x := 0; x < s.w; x++ {
			px := float64(x) + 0.5
			z := m[6]*px + m[7]*py + m[8]
			s.c.set(x, y, f(x, y, (m[0]*px+m[1]*py+m[2])/z, (m[3]*px+m[4]*py+m[5])/z))
		}
	}
}

// lighting multiplies the frame by an uneven illumination (a gradient, a vignette and a colour
// cast) and adds glare.
func (s *scene) lighting() {
	w, h := float64(s.w), float64(s.h)
	exposure := pick(s.rng, []float64{between(s.rng, 0.75, 1.15), between(s.rng, 0.45, 0.75), between(s.rng, 1.15, 1.4)}, []float64{0.8, 0.1, 0.1})
	gx, gy := between(s.rng, -0.5, 0.5), between(s.rng, -0.5, 0.5)
	vignette := between(s.rng, 0, 0.45)
	warm := between(s.rng, -0.08, 0.1)
	tint := rgb{float32(1 + warm), 1, float32(1 - warm*1.2)}
	type glare struct{ x, y, rx, ry, k float64 }
	var glares []glare
	for range pick(s.rng, []int{0, 1, 2}, []float64{0.6, 0.3, 0.1}) {
		glares = append(glares, glare{between(s.rng, 0, w), between(s.rng, 0, h),
			s.ref * between(s.rng, 0.04, 0.3), s.ref * between(s.rng, 0.04, 0.3), between(s.rng, 0.2, 0.8)})
	}
	diag := math.Hypot(w, h)
	for y := 0; y < s.h; y++ {
		for x := 0; x < s.w; x++ {
			dx, dy := (float64(x)-w/2)/diag, (float64(y)-h/2)/diag
			l := exposure * (1 + gx*dx + gy*dy) * (1 - vignette*4*(dx*dx+dy*dy))
			v := s.c.at(x, y)
			for i := range v {
				v[i] *= float32(l) * tint[i]
			}
			for _, g := range glares {
				ex, ey := (float64(x)-g.x)/g.rx, (float64(y)-g.y)/g.ry
				if d := ex*ex + ey*ey; d < 9 {
					a := float32(g.k * math.Exp(-d))
					v = v.mix(rgb{1, 1, 0.97}, a)
				}
			}
			s.c.set(x, y, v)
		}
	}
}

// develop applies the camera: defocus or motion blur, sensor noise, quantisation. (JPEG
// compression happens when the file is written.)
func (s *scene) develop() *image.RGBA {
	scale := s.ref / 480
	switch r := s.rng.Float64(); {
	case r < 0.35:
		s.c.gaussian(between(s.rng, 0.3, 1.6) * scale)
	case r < 0.45:
		s.motionBlur(between(s.rng, 3, 10)*scale, between(s.rng, 0, math.Pi))
	}
	sigma := between(s.rng, 0.003, 0.025)
	img := image.NewRGBA(image.Rect(0, 0, s.w, s.h))
	for i := 0; i < s.w*s.h; i++ {
		p := s.c.pix[3*i : 3*i+3]
		luma := 0.3*p[0] + 0.6*p[1] + 0.1*p[2]
		// Shot noise grows in the shadows of a phone sensor; part of it is shared by the channels.
		k := float32(sigma) * (1.4 - clamp01(luma))
		common := float32(s.rng.NormFloat64())
		for ch := 0; ch < 3; ch++ {
			v := p[ch] + k*(0.6*common+0.5*float32(s.rng.NormFloat64()))
			img.Pix[4*i+ch] = uint8(clamp01(v)*255 + 0.5)
		}
		img.Pix[4*i+3] = 255
	}
	return img
}

// motionBlur averages copies of the frame shifted along a line of the given length in pixels.
func (s *scene) motionBlur(length, angle float64) {
	n := max(2, int(math.Ceil(length)))
	src := &canvas{w: s.w, h: s.h, pix: append([]float32(nil), s.c.pix...)}
	dx, dy := math.Cos(angle), math.Sin(angle)
	for y := 0; y < s.h; y++ {
		for x := 0; x < s.w; x++ {
			var acc rgb
			for i := 0; i < n; i++ {
				t := (float64(i)/float64(n-1) - 0.5) * length
				acc = acc.add(src.sample(float64(x)+0.5+t*dx, float64(y)+0.5+t*dy))
			}
			s.c.set(x, y, acc.scale(1/float32(n)))
		}
	}
}
