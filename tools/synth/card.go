package synth

import (
	"math"
	"math/rand/v2"
)

// Card geometry, in millimetres: a standard trading card is 63 × 88 mm with corners of radius
// about 3.5 % of its width.
const (
	cardW      = 63.0
	cardH      = 88.0
	cardRadius = 0.035 * cardW
)

// frameColors are the frame colours of the five colours, gold multicolour, artifact and land.
var frameColors = []rgb{
	{0.90, 0.87, 0.78}, // white
	{0.18, 0.42, 0.66}, // blue
	{0.22, 0.20, 0.20}, // black
	{0.75, 0.30, 0.22}, // red
	{0.22, 0.45, 0.30}, // green
	{0.80, 0.68, 0.38}, // gold
	{0.62, 0.62, 0.64}, // artifact
	{0.55, 0.43, 0.32}, // land
}

var manaColors = []rgb{
	{0.95, 0.93, 0.80}, {0.55, 0.75, 0.92}, {0.35, 0.33, 0.32}, {0.90, 0.50, 0.38}, {0.45, 0.70, 0.45}, {0.75, 0.73, 0.70},
}

// renderCard draws one card, face or back, as a texture tw pixels wide (63 mm).
func renderCard(rng *rand.Rand, tw int) *canvas {
	th := int(math.Round(float64(tw) * cardH / cardW))
	c := newCanvas(tw, th, false)
	mm := float64(tw) / cardW
	switch pick(rng, []string{"face", "yellow", "back"}, []float64{0.78, 0.1, 0.12}) {
	case "back":
		drawBack(c, rng, mm)
	case "yellow":
		drawYellowFace(c, rng, mm)
	default:
		drawFace(c, rng, mm)
	}
	return c
}

// texturedFill fills the rectangle with colour v modulated by low-contrast noise, the look of
// printed frames and card stock.
func texturedFill(c *canvas, rng *rand.Rand, x0, y0, x1, y1 float64, v rgb, amount, cell float64) {
	l := newLattice(rng)
	seed := rng.Uint64()
	c.fillRect(int(x0), int(y0), int(math.Ceil(x1)), int(math.Ceil(y1)), func(x, y int) rgb {
		n := l.fbm(float64(x)/cell, float64(y)/cell, 3)
		g := (hash01(x, y, seed) - 0.5) * 0.04
		return v.scale(1 + float32(amount)*n + g)
	})
}

// drawFace draws a modern-frame card face: border, frame, title bar with mana symbols, art box,
// type line with set symbol, rules text box, and power/toughness box.
func drawFace(c *canvas, rng *rand.Rand, mm float64) {
	w, h := float64(c.w), float64(c.h)
	borderColor := pick(rng, []rgb{{0.05, 0.05, 0.06}, {0.93, 0.93, 0.9}, {0.72, 0.73, 0.75}, {0.78, 0.62, 0.25}, {0.3, 0.1, 0.35}},
		[]float64{0.6, 0.15, 0.12, 0.08, 0.05})
	borderless := rng.Float64() < 0.1
	b := 2.6 * mm
	if borderless {
		b = 0.8 * mm
	}
	texturedFill(c, rng, 0, 0, w, h, jitter(rng, borderColor, 0.03), 0.08, 6*mm)
	frame := jitter(rng, frameColors[rng.IntN(len(frameColors))], 0.05)
	texturedFill(c, rng, b, b, w-b, h-b, frame, 0.18, 4*mm)
	light := frame.mix(rgb{0.95, 0.93, 0.88}, float32(between(rng, 0.45, 0.75)))
	dark := rgb{0.08, 0.07, 0.07}

	// Title bar with name and mana cost.
	ix := b + 1.3*mm
	ty0, ty1 := b+1.3*mm, b+6.3*mm
	c.rect(ix, ty0, w-ix, ty1, 1.6*mm, dark, 0.9)
	c.rect(ix+0.3*mm, ty0+0.3*mm, w-ix-0.3*mm, ty1-0.3*mm, 1.4*mm, light, 1)
	c.textLine(rng, ix+1.5*mm, w*0.7, (ty0+ty1)/2, 3.0*mm, dark, between(rng, 0.5, 1))
	mx := w - ix - 2.6*mm
	for range 1 + rng.IntN(4) {
		col := manaColors[rng.IntN(len(manaColors))]
		c.ellipse(mx, (ty0+ty1)/2+0.25*mm, 1.75*mm, 1.75*mm, dark, 0.6)
		c.ellipse(mx, (ty0+ty1)/2, 1.7*mm, 1.7*mm, col, 1)
		c.ellipse(mx, (ty0+ty1)/2, 0.8*mm, 0.9*mm, col.scale(0.45), 0.8)
		mx -= 3.6 * mm
	}

	// Art, framed by a thin dark line.
	ax0, ay0, ax1, ay1 := b+2.2*mm, ty1+0.5*mm, w-b-2.2*mm, 49.3*mm
	textTop := 55.6 * mm
	fullArt := rng.Float64() < 0.12
	if fullArt {
		ay1 = h - b - 3*mm
	}
	c.rect(ax0-0.35*mm, ay0-0.35*mm, ax1+0.35*mm, ay1+0.35*mm, 0, dark, 1)
	drawArt(c, rng, ax0, ay0, ax1, ay1)

	// Type line and set symbol.
	ly0, ly1 := 49.8*mm, 55.0*mm
	c.rect(ix, ly0, w-ix, ly1, 1.4*mm, dark, 0.9)
	c.rect(ix+0.3*mm, ly0+0.3*mm, w-ix-0.3*mm, ly1-0.3*mm, 1.2*mm, light, fullArtAlpha(fullArt))
	c.textLine(rng, ix+1.5*mm, w*0.75, (ly0+ly1)/2, 2.6*mm, dark, between(rng, 0.4, 0.9))
	rarity := pick(rng, []rgb{{0.1, 0.1, 0.1}, {0.75, 0.78, 0.8}, {0.85, 0.7, 0.3}, {0.9, 0.45, 0.15}}, []float64{4, 3, 2, 1})
	sx := w - ix - 3*mm
	if rng.Float64() < 0.5 {
		c.ellipse(sx, (ly0+ly1)/2, 1.5*mm, 1.5*mm, rarity, 1)
	} else {
		c.capsule(sx-1.2*mm, (ly0+ly1)/2, sx+1.2*mm, (ly0+ly1)/2, 1.1*mm, rarity, 1)
	}

	// Rules text box with lines of text, sometimes a flavour line, sometimes power/toughness.
	bx0, by0, bx1, by1 := b+2.2*mm, textTop, w-b-2.2*mm, 81.5*mm
	if fullArt {
		c.rect(bx0, by0, bx1, by1, 0.6*mm, light.mix(rgb{1, 1, 1}, 0.3), 0.55)
	} else {
		parchment := light.mix(rgb{0.96, 0.94, 0.88}, 0.5)
		texturedFill(c, rng, bx0, by0, bx1, by1, parchment, 0.05, 3*mm)
	}
	lineH := between(rng, 2.1, 2.8) * mm
	lines := int((by1 - by0 - 2*mm) / (lineH * 1.45))
	lines = max(1, min(lines, 1+rng.IntN(lines+1)))
	y := by0 + 1.6*mm + lineH/2
	for i := 0; i < lines; i++ {
		ink := dark
		if i == lines-1 && lines > 2 && rng.Float64() < 0.4 {
			ink = rgb{0.3, 0.28, 0.26} // flavour text
		}
		fill := 1.0
		if rng.Float64() < 0.3 {
			fill = between(rng, 0.3, 0.9) // end of a paragraph
		}
		c.textLine(rng, bx0+1.5*mm, bx1-1.5*mm, y, lineH, ink, fill)
		y += lineH * 1.45
	}
	if rng.Float64() < 0.5 {
		px0, py0 := w-b-14*mm, 79.5*mm
		c.rect(px0, py0, w-b-1.2*mm, py0+5*mm, 1.2*mm, dark, 0.9)
		c.rect(px0+0.3*mm, py0+0.3*mm, w-b-1.5*mm, py0+4.7*mm, 1*mm, light, 1)
		c.textLine(rng, px0+3*mm, w-b-3.5*mm, py0+2.5*mm, 3*mm, dark, 1)
	}
	// Collector line in the bottom border.
	ink := rgb{0.85, 0.85, 0.85}
	if borderColor[0] > 0.5 {
		ink = rgb{0.15, 0.15, 0.15}
	}
	c.textLine(rng, b+1.5*mm, w*0.55, h-b*0.1-1.3*mm, 1.3*mm, ink, between(rng, 0.6, 1))
}

func fullArtAlpha(fullArt bool) float32 {
	if fullArt {
		return 0.6
	}
	return 1
}

// drawYellowFace draws a card of another popular game: yellow border, coloured panel, art
// window with a metallic frame, a name above and attack lines below.
func drawYellowFace(c *canvas, rng *rand.Rand, mm float64) {
	w, h := float64(c.w), float64(c.h)
	b := 3.2 * mm
	texturedFill(c, rng, 0, 0, w, h, jitter(rng, rgb{0.95, 0.82, 0.25}, 0.04), 0.06, 6*mm)
	panel := jitter(rng, hsv(between(rng, 0, 360), between(rng, 0.2, 0.6), between(rng, 0.6, 0.95)), 0.03)
	c.rect(b, b, w-b, h-b, 1.5*mm, panel, 1)
	dark := rgb{0.1, 0.1, 0.12}
	c.textLine(rng, b+3*mm, w*0.65, b+4*mm, 3.2*mm, dark, between(rng, 0.6, 1))
	c.ellipse(w-b-4*mm, b+4*mm, 2*mm, 2*mm, hsv(between(rng, 0, 360), 0.7, 0.8), 1)
	ax0, ay0, ax1, ay1 := b+3*mm, b+8*mm, w-b-3*mm, 46*mm
	c.rect(ax0-1*mm, ay0-1*mm, ax1+1*mm, ay1+1*mm, 0.3*mm, rgb{0.78, 0.76, 0.7}, 1)
	drawArt(c, rng, ax0, ay0, ax1, ay1)
	y := 52 * mm
	for y < h-b-8*mm {
		c.ellipse(b+4*mm, y, 1.6*mm, 1.6*mm, hsv(between(rng, 0, 360), 0.6, 0.8), 1)
		c.textLine(rng, b+7*mm, w-b-3*mm, y, 2.6*mm, dark, between(rng, 0.5, 1))
		y += 3.6 * mm
		if rng.Float64() < 0.5 {
			c.textLine(rng, b+3*mm, w-b-3*mm, y, 1.9*mm, dark, 1)
			y += 3 * mm
		}
		y += 1.5 * mm
	}
	c.textLine(rng, b+2*mm, w*0.6, h-b-2.5*mm, 1.4*mm, dark, 1)
}

// drawBack draws the common card back: brown border, mottled brown field, a central oval with a
// swirl, five coloured gems and a logo bar.
func drawBack(c *canvas, rng *rand.Rand, mm float64) {
	w, h := float64(c.w), float64(c.h)
	texturedFill(c, rng, 0, 0, w, h, jitter(rng, rgb{0.18, 0.12, 0.08}, 0.02), 0.15, 5*mm)
	b := 2.8 * mm
	texturedFill(c, rng, b, b, w-b, h-b, jitter(rng, rgb{0.42, 0.28, 0.16}, 0.03), 0.35, 3*mm)
	cx, cy := w/2, h*0.52
	swirl := perlinField(rng.Int64(), c.w, c.h, 2, 5*mm, 3)
	deep, glow := rgb{0.12, 0.18, 0.35}, rgb{0.85, 0.55, 0.25}
	c.paint(cx-24*mm, cy-34*mm, cx+24*mm, cy+34*mm,
		func(x, y float64) float64 { return sdEllipse(x, y, cx, cy, 22*mm, 32*mm) },
		func(x, y float64) rgb {
			r := math.Hypot((x-cx)/(22*mm), (y-cy)/(32*mm))
			n := swirl.at(x, y)
			t := clamp01(float32(0.5+1.2*float64(n)) * float32(1-0.5*r))
			return deep.mix(glow, t)
		}, 1)
	for i := 0; i < 5; i++ { // on a shallow arc under the oval
		gx, gy := cx+float64(i-2)*7*mm, cy+36*mm-math.Abs(float64(i-2))*1.5*mm
		c.ellipse(gx, gy, 1.8*mm, 1.8*mm, manaColors[i], 1)
	}
	c.rect(w*0.2, 7*mm, w*0.8, 14*mm, 3*mm, rgb{0.72, 0.52, 0.2}, 0.9)
	c.textLine(rng, w*0.25, w*0.75, 10.5*mm, 4*mm, rgb{0.2, 0.1, 0.05}, 1)
}

// drawArt fills the box [x0,x1]×[y0,y1] of c with a procedural painting, drawn on a canvas of
// its own so that nothing spills onto the frame.
func drawArt(c *canvas, rng *rand.Rand, x0, y0, x1, y1 float64) {
	ix0, iy0 := int(math.Round(x0)), int(math.Round(y0))
	aw, ah := int(math.Round(x1))-ix0, int(math.Round(y1))-iy0
	if aw < 2 || ah < 2 {
		return
	}
	art := newCanvas(aw, ah, false)
	paintArt(art, rng)
	for y := 0; y < ah; y++ {
		for x := 0; x < aw; x++ {
			if ix0+x >= 0 && ix0+x < c.w && iy0+y >= 0 && iy0+y < c.h {
				c.set(ix0+x, iy0+y, art.at(x, y))
			}
		}
	}
}

// paintArt fills a canvas with a procedural painting: a landscape, a nebula, a figure against a
// sky, a city or loose brush strokes.
func paintArt(c *canvas, rng *rand.Rand) {
	x0, y0, x1, y1 := 0.0, 0.0, float64(c.w), float64(c.h)
	hue := between(rng, 0, 360)
	palette := []rgb{
		hsv(hue, between(rng, 0.3, 0.8), between(rng, 0.2, 0.5)),
		hsv(hue+between(rng, 20, 90), between(rng, 0.3, 0.9), between(rng, 0.5, 0.9)),
		hsv(hue+between(rng, 120, 220), between(rng, 0.2, 0.7), between(rng, 0.6, 1)),
	}
	w, h := x1-x0, y1-y0
	kind := pick(rng, []string{"landscape", "nebula", "figure", "city", "strokes"}, []float64{3, 2, 3, 1, 2})
	// Sky or backdrop: a vertical gradient with soft clouds.
	clouds := perlinField(rng.Int64(), c.w, c.h, 3, w*0.35, 4)
	top, horizon := palette[1].mix(rgb{0.9, 0.9, 1}, 0.2), palette[2]
	c.fillRect(int(x0), int(y0), int(math.Ceil(x1)), int(math.Ceil(y1)), func(x, y int) rgb {
		t := float32((float64(y) - y0) / h)
		v := top.mix(horizon, t)
		return v.add(rgb{1, 1, 1}.scale(0.25 * clamp01(clouds.at(float64(x), float64(y)))))
	})
	switch kind {
	case "nebula":
		f := perlinField(rng.Int64(), c.w, c.h, 2, w*0.25, 5)
		c.fillRect(int(x0), int(y0), int(math.Ceil(x1)), int(math.Ceil(y1)), func(x, y int) rgb {
			n := clamp01(0.5 + f.at(float64(x), float64(y)))
			v := palette[0].mix(palette[1], n)
			if n > 0.7 {
				v = v.mix(palette[2], (n-0.7)*3)
			}
			return v
		})
		for range 20 + rng.IntN(40) {
			c.ellipse(between(rng, x0, x1), between(rng, y0, y1), 0.6, 0.6, rgb{1, 1, 0.95}, float32(between(rng, 0.4, 1)))
		}
	case "city":
		ground := y0 + h*between(rng, 0.6, 0.85)
		for range 6 + rng.IntN(10) {
			bw := w * between(rng, 0.05, 0.15)
			bx := between(rng, x0-bw/2, x1-bw/2)
			bh := h * between(rng, 0.2, 0.7)
			col := palette[0].scale(float32(between(rng, 0.5, 1)))
			c.rect(max(bx, x0), max(ground-bh, y0), min(bx+bw, x1), ground, 0, col, 1)
			if rng.Float64() < 0.5 {
				c.paint(bx, ground-bh-bw, bx+bw, ground-bh, func(x, y float64) float64 {
					return max(sdRoundRect(x, y, bx, ground-bh-bw, bx+bw, ground-bh, 0), math.Abs(x-bx-bw/2)-(y-(ground-bh-bw))/2)
				}, solid(col), 1)
			}
		}
		c.rect(x0, ground, x1, y1, 0, palette[0].scale(0.6), 1)
	default: // landscape, figure and strokes share hills
		l := newLattice(rng)
		for layer := 0; layer < 3; layer++ {
			base := y0 + h*(0.45+0.15*float64(layer))
			amp := h * between(rng, 0.08, 0.25)
			col := palette[0].mix(palette[2], float32(0.6-0.25*float64(layer))).scale(float32(1 - 0.2*float64(layer)))
			freq := between(rng, 2, 5) / w
			off := between(rng, 0, 50)
			c.fillRect(int(x0), int(y0), int(math.Ceil(x1)), int(math.Ceil(y1)), func(x, y int) rgb {
				ridge := base + amp*float64(l.fbm(float64(x)*freq+off, float64(layer)*3.3, 4))
				if float64(y) < ridge {
					return c.at(x, y)
				}
				shade := float32(1 - 0.3*(float64(y)-ridge)/h)
				return col.scale(shade)
			})
		}
		if kind == "figure" {
			fx, fy := between(rng, x0+w*0.3, x1-w*0.3), y0+h*between(rng, 0.35, 0.6)
			size := h * between(rng, 0.25, 0.45)
			body := hsv(hue+between(rng, 150, 210), between(rng, 0.3, 0.8), between(rng, 0.25, 0.7))
			shade := func(cx, cy, r float64, base rgb) func(x, y float64) rgb {
				return func(x, y float64) rgb {
					d := math.Hypot(x-cx+r*0.3, y-cy+r*0.3) / (r * 1.6)
					return base.scale(float32(1.25 - 0.6*min(d, 1)))
				}
			}
			if rng.Float64() < 0.5 { // wings or cloak
				for _, s := range []float64{-1, 1} {
					c.capsule(fx, fy, fx+s*size*1.1, fy-size*0.5, size*0.25, body.scale(0.7), 0.9)
				}
			}
			c.paint(fx-size*0.5, fy-size*0.2, fx+size*0.5, fy+size*1.2, func(x, y float64) float64 {
				return sdEllipse(x, y, fx, fy+size*0.5, size*0.45, size*0.7)
			}, shade(fx, fy+size*0.5, size*0.6, body), 1)
			hr := size * 0.22
			c.paint(fx-hr, fy-hr*3, fx+hr, fy-hr*0.8, func(x, y float64) float64 {
				return sdEllipse(x, y, fx, fy-hr*1.8, hr, hr*1.1)
			}, shade(fx, fy-hr*1.8, hr, body.mix(rgb{0.9, 0.75, 0.6}, 0.5)), 1)
			for _, s := range []float64{-1, 1} {
				c.capsule(fx+s*size*0.35, fy+size*0.1, fx+s*size*0.75, fy+size*between(rng, -0.3, 0.6), size*0.09, body.scale(0.85), 1)
			}
		}
		if kind == "strokes" {
			for range 40 + rng.IntN(80) {
				col := palette[rng.IntN(3)].mix(rgb{1, 1, 1}, float32(between(rng, 0, 0.3)))
				r := w * between(rng, 0.01, 0.06)
				ax, ay := between(rng, x0, x1), between(rng, y0, y1)
				ang := between(rng, 0, math.Pi)
				c.capsule(ax, ay, ax+math.Cos(ang)*r*3, ay+math.Sin(ang)*r*3, r, col, float32(between(rng, 0.2, 0.6)))
			}
		}
		if rng.Float64() < 0.3 { // a sun or moon
			c.ellipse(between(rng, x0+w*0.15, x1-w*0.15), y0+h*between(rng, 0.1, 0.3), w*0.07, w*0.07, rgb{1, 0.95, 0.8}, 0.9)
		}
	}
}
