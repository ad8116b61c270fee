package synth

import (
	"math"
	"math/rand/v2"

	"github.com/anthonynsimon/bild/util"
)

// hsv converts hue (degrees), saturation and value to rgb, through bild's colour model.
func hsv(h, s, v float64) rgb {
	h = math.Mod(h, 360)
	if h < 0 {
		h += 360
	}
	c := util.HSVToRGB(h, max(0, min(s, 1)), max(0, min(v, 1)))
	return rgb{float32(c.R) / 255, float32(c.G) / 255, float32(c.B) / 255}
}

// between returns a uniform value in [lo, hi).
func between(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// pick returns one of the options, weighted.
func pick[T any](rng *rand.Rand, options []T, weights []float64) T {
	var total float64
	for _, w := range weights {
		total += w
	}
	r := rng.Float64() * total
	for i, w := range weights {
		if r < w {
			return options[i]
		}
		r -= w
	}
	return options[len(options)-1]
}

// jitter varies each channel of c by up to ±amount.
func jitter(rng *rand.Rand, c rgb, amount float64) rgb {
	for i := range c {
		c[i] = clamp01(c[i] + float32(between(rng, -amount, amount)))
	}
	return c
}

// paint fills a shape on a texture (no projection, one texture pixel per unit) with
// anti-aliased edges.
func (c *canvas) paint(x0, y0, x1, y1 float64, sd func(x, y float64) float64, color func(x, y float64) rgb, alpha float32) {
	ix0, iy0 := max(0, int(math.Floor(x0))-1), max(0, int(math.Floor(y0))-1)
	ix1, iy1 := min(c.w, int(math.Ceil(x1))+1), min(c.h, int(math.Ceil(y1))+1)
	for y := iy0; y < iy1; y++ {
		py := float64(y) + 0.5
		for x := ix0; x < ix1; x++ {
			px := float64(x) + 0.5
			cov := clamp01(float32(0.5 - sd(px, py)))
			if cov > 0 {
				c.blend(x, y, color(px, py), cov*alpha)
			}
		}
	}
}

func solid(v rgb) func(x, y float64) rgb { return func(float64, float64) rgb { return v } }

// flat is a shape colour that ignores position.
func flat(v rgb) func(x, y, sd float64) rgb { return func(float64, float64, float64) rgb { return v } }

// rect paints a rounded rectangle in one colour.
func (c *canvas) rect(x0, y0, x1, y1, r float64, v rgb, alpha float32) {
	c.paint(x0, y0, x1, y1, func(x, y float64) float64 { return sdRoundRect(x, y, x0, y0, x1, y1, r) }, solid(v), alpha)
}

// ellipse paints an ellipse in one colour.
func (c *canvas) ellipse(cx, cy, rx, ry float64, v rgb, alpha float32) {
	c.paint(cx-rx, cy-ry, cx+rx, cy+ry, func(x, y float64) float64 { return sdEllipse(x, y, cx, cy, rx, ry) }, solid(v), alpha)
}

// capsule paints a thick segment in one colour.
func (c *canvas) capsule(ax, ay, bx, by, r float64, v rgb, alpha float32) {
	c.paint(min(ax, bx)-r, min(ay, by)-r, max(ax, bx)+r, max(ay, by)+r,
		func(x, y float64) float64 { return sdCapsule(x, y, ax, ay, bx, by, r) }, solid(v), alpha)
}

// fillRect paints an axis-aligned rectangle with a colour function, without anti-aliasing.
func (c *canvas) fillRect(x0, y0, x1, y1 int, color func(x, y int) rgb) {
	for y := max(0, y0); y < min(c.h, y1); y++ {
		for x := max(0, x0); x < min(c.w, x1); x++ {
			c.set(x, y, color(x, y))
		}
	}
}

// textLine paints a line of pseudo-text between x0 and x1 centred on y, with letters of the
// given height: words of varied length with glyph-like strokes when there is room for them,
// plain bars when the text is too small to resolve. It returns where the text ended.
func (c *canvas) textLine(rng *rand.Rand, x0, x1, y, height float64, ink rgb, fill float64) float64 {
	x := x0
	end := x0 + (x1-x0)*fill
	charW := height * between(rng, 0.5, 0.62)
	for x < end {
		n := 1 + rng.IntN(9)
		w := float64(n) * charW
		if x+w > x1 {
			break
		}
		if height >= 7 {
			// Glyphs: a stroke per letter with occasional ascenders and descenders.
			for i := 0; i < n; i++ {
				gx := x + float64(i)*charW + charW*0.15
				top, bot := y-height*0.22, y+height*0.28
				switch r := rng.Float64(); {
				case r < 0.2:
					top = y - height*0.5
				case r < 0.3:
					bot = y + height*0.5
				}
				gw := charW * between(rng, 0.45, 0.7)
				c.rect(gx, top, gx+gw, bot, gw*0.3, ink, 0.85)
			}
		} else {
			c.rect(x, y-height*0.3, x+w, y+height*0.3, height*0.15, ink, 0.75)
		}
		x += w + charW*between(rng, 0.8, 1.2)
	}
	return x
}
