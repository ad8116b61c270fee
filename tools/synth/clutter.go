package synth

import (
	"math"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// clutter adds non-card objects. Under the cards: paper notes, empty sleeves, deck boxes,
// phones and booster wrappers, several of them card-like on purpose. Over the cards: coins,
// dice, glass beads, pens and hands, which hide what they cover from the mask.
func (s *scene) clutter(over bool) {
	rng := s.rng
	type item struct {
		prob float64
		draw func()
	}
	var items []item
	if over {
		items = []item{
			{0.22, s.coin}, {0.22, s.coin}, {0.18, s.die}, {0.12, s.die}, {0.12, s.bead}, {0.1, s.pen}, {0.28, s.hand},
		}
	} else {
		items = []item{
			{0.2, s.paper}, {0.1, s.emptySleeve}, {0.1, s.deckBox}, {0.07, s.phone}, {0.07, s.wrapper}, {0.08, s.paper},
		}
	}
	for _, it := range items {
		if rng.Float64() < it.prob {
			it.draw()
		}
	}
}

// spot returns a random image point, sometimes near a card so that objects overlap cards.
func (s *scene) spot() (float64, float64) {
	if len(s.placed) > 0 && s.rng.Float64() < 0.5 {
		p := s.placed[s.rng.IntN(len(s.placed))]
		return p.x + s.rng.NormFloat64()*p.size*0.4, p.y + s.rng.NormFloat64()*p.size*0.4
	}
	return between(s.rng, -0.05, 1.05) * float64(s.w), between(s.rng, -0.05, 1.05) * float64(s.h)
}

// object draws a shape placed by h with a soft shadow cast from height (pixels above the table).
func (s *scene) object(sh shape, h augment.Homography, height, strength float64, alpha float32, mode labelMode) {
	p, ok := place(sh, h, s.w, s.h)
	if !ok {
		return
	}
	if height > 0 {
		s.c.shadow(p, s.lightX*height, s.lightY*height, 0.7*height+1, strength, &s.scratch)
	}
	s.c.draw(p, alpha, mode)
}

// coin: a metal disc with a rim, an embossed face and a highlight.
func (s *scene) coin() {
	rng := s.rng
	x, y := s.spot()
	r := between(rng, 9, 14) // mm
	metal := jitter(rng, pick(rng, []rgb{{0.85, 0.7, 0.35}, {0.78, 0.78, 0.8}, {0.72, 0.45, 0.3}}, []float64{1, 1, 1}), 0.04)
	relief := newLattice(rng)
	hx, hy := between(rng, -0.5, 0.5), between(rng, -0.5, 0.5)
	sh := shape{x0: -r, y0: -r, x1: r, y1: r,
		sd: func(u, v float64) float64 { return math.Hypot(u, v) - r },
		color: func(u, v, _ float64) rgb {
			d := math.Hypot(u, v) / r
			c := metal.scale(float32(0.75 + 0.35*(1-d)))
			if d > 0.84 && d < 0.92 {
				c = c.scale(0.7)
			} else if d < 0.8 {
				c = c.scale(1 + 0.18*relief.fbm(u/2.5, v/2.5, 2))
			}
			hl := math.Hypot(u/r-hx, v/r-hy)
			return c.mix(rgb{1, 1, 0.95}, float32(0.5*math.Exp(-hl*hl*8)))
		}}
	s.object(sh, s.onTable(x, y, between(rng, 0, 2*math.Pi), s.mmPx), s.mmPx*between(rng, 0.5, 1.5), 0.45, 1, clearLabel)
}

// die: a rounded cube seen from above, its side showing, with pips.
func (s *scene) die() {
	rng := s.rng
	x, y := s.spot()
	a := between(rng, 12, 20) // edge, mm
	body := hsv(between(rng, 0, 360), between(rng, 0, 0.9), between(rng, 0.15, 0.95))
	pip := rgb{0.95, 0.95, 0.95}
	if body[0]+body[1]+body[2] > 1.8 {
		pip = rgb{0.05, 0.05, 0.05}
	}
	face := 1 + rng.IntN(6)
	pips := map[int][][2]float64{
		1: {{0, 0}}, 2: {{-1, -1}, {1, 1}}, 3: {{-1, -1}, {0, 0}, {1, 1}},
		4: {{-1, -1}, {1, -1}, {-1, 1}, {1, 1}}, 5: {{-1, -1}, {1, -1}, {0, 0}, {-1, 1}, {1, 1}},
		6: {{-1, -1}, {1, -1}, {-1, 0}, {1, 0}, {-1, 1}, {1, 1}},
	}[face]
	h := s.onTable(x, y, between(rng, 0, 2*math.Pi), s.mmPx)
	// The side, shifted away from the light, then the top face.
	side := shape{x0: -a / 2, y0: -a / 2, x1: a/2 + a*0.3, y1: a/2 + a*0.3,
		sd: func(u, v float64) float64 {
			return sdRoundRect(u, v, -a/2, -a/2, a/2+a*0.25, a/2+a*0.25, a*0.2)
		},
		color: flat(body.scale(0.6))}
	s.object(side, h, s.mmPx*a*0.6, 0.45, 1, clearLabel)
	top := shape{x0: -a / 2, y0: -a / 2, x1: a / 2, y1: a / 2,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, -a/2, -a/2, a/2, a/2, a*0.18) },
		color: func(u, v, _ float64) rgb {
			for _, p := range pips {
				if math.Hypot(u-p[0]*a*0.27, v-p[1]*a*0.27) < a*0.09 {
					return pip
				}
			}
			return body.scale(float32(1.05 - 0.15*math.Hypot(u, v)/a))
		}}
	s.object(top, h, 0, 0, 1, clearLabel)
}

// bead: a glass counter with a bright highlight.
func (s *scene) bead() {
	rng := s.rng
	for range 1 + rng.IntN(4) {
		x, y := s.spot()
		r := between(rng, 5, 9)
		col := hsv(between(rng, 0, 360), between(rng, 0.4, 0.9), between(rng, 0.3, 0.8))
		sh := shape{x0: -r, y0: -r, x1: r, y1: r,
			sd: func(u, v float64) float64 { return math.Hypot(u, v) - r },
			color: func(u, v, _ float64) rgb {
				d := math.Hypot(u+r*0.35, v+r*0.35) / r
				return col.scale(float32(0.6+0.6*(1-math.Hypot(u, v)/r))).mix(rgb{1, 1, 1}, float32(0.8*math.Exp(-d*d*12)))
			}}
		s.object(sh, s.onTable(x, y, 0, s.mmPx), s.mmPx*r*0.4, 0.4, 1, clearLabel)
	}
}

// pen: a long capsule with a cap.
func (s *scene) pen() {
	rng := s.rng
	x, y := s.spot()
	l, r := between(rng, 110, 145), between(rng, 3.5, 5.5)
	body := hsv(between(rng, 0, 360), between(rng, 0, 0.8), between(rng, 0.1, 0.9))
	capCol := jitter(rng, body.scale(0.6), 0.2)
	sh := shape{x0: -l / 2, y0: -r, x1: l / 2, y1: r,
		sd: func(u, v float64) float64 { return sdCapsule(u, v, -l/2+r, 0, l/2-r, 0, r) },
		color: func(u, v, _ float64) rgb {
			c := body
			if u > l*0.22 {
				c = capCol
			}
			return c.scale(float32(1.15 - 0.5*math.Abs(v)/r))
		}}
	s.object(sh, s.onTable(x, y, between(rng, 0, 2*math.Pi), s.mmPx), s.mmPx*r*1.5, 0.4, 1, clearLabel)
}

// hand: a palm and fingers reaching in from a frame edge, often over a card (holding it),
// skin-toned and shaded, casting a wide shadow.
func (s *scene) hand() {
	rng := s.rng
	w, fh := float64(s.w), float64(s.h)
	tx, ty := between(rng, 0.2, 0.8)*w, between(rng, 0.2, 0.8)*fh
	if len(s.placed) > 0 && rng.Float64() < 0.7 {
		p := s.placed[rng.IntN(len(s.placed))]
		tx, ty = p.x+rng.NormFloat64()*p.size*0.3, p.y+rng.NormFloat64()*p.size*0.3
	}
	var ex, ey float64 // entry point on an edge
	switch rng.IntN(4) {
	case 0:
		ex, ey = between(rng, 0, w), fh*1.05
	case 1:
		ex, ey = between(rng, 0, w), -fh*0.05
	case 2:
		ex, ey = -w*0.05, between(rng, 0, fh)
	default:
		ex, ey = w*1.05, between(rng, 0, fh)
	}
	palmW := s.ref * between(rng, 0.14, 0.35)
	dir := math.Atan2(ty-ey, tx-ex)
	reach := math.Hypot(tx-ex, ty-ey)
	// Local frame: x along the arm towards the fingers, palm centre at the origin.
	pl := palmW * 1.05 // palm length
	dist := max(reach-pl*0.9, pl*0.3)
	cx, cy := ex+math.Cos(dir)*dist, ey+math.Sin(dir)*dist
	fingerR := palmW * 0.12
	type seg struct{ ax, ay, bx, by, r float64 }
	var parts []seg
	curl := between(rng, 0.55, 1) // curled fingers look shorter from above
	for i := 0; i < 4; i++ {
		off := (float64(i) - 1.5) * palmW * 0.245
		l := palmW * curl * between(rng, 0.8, 0.95) * []float64{0.82, 1, 0.95, 0.74}[i]
		bend := between(rng, -0.12, 0.12) + (float64(i)-1.5)*0.07
		ax, ay := pl*0.4, off
		parts = append(parts, seg{ax, ay, ax + l*math.Cos(bend), ay + l*math.Sin(bend), fingerR * []float64{0.95, 1, 0.97, 0.85}[i]})
	}
	side := 1.0
	if rng.Float64() < 0.5 {
		side = -1
	}
	// The thumb leaves the palm's side, angled outwards from the fingers' direction.
	ta := side * between(rng, 0.3, 0.9)
	tl := palmW * between(rng, 0.55, 0.75)
	tbx, tby := -pl*0.05, side*palmW*0.38
	parts = append(parts, seg{tbx, tby, tbx + tl*math.Cos(ta), tby + tl*math.Sin(ta), fingerR * 1.15})
	// The forearm runs back out of the frame, widening from the wrist.
	armLen := dist + pl*2
	arm := seg{-armLen, 0, -pl * 0.3, 0, palmW * 0.4}
	skin := hsv(between(rng, 12, 32), between(rng, 0.25, 0.6), between(rng, 0.3, 0.95))
	sleeveOn := rng.Float64() < 0.5
	cloth := hsv(between(rng, 0, 360), between(rng, 0, 0.7), between(rng, 0.1, 0.8))
	smin := func(a, b, k float64) float64 { // smooth union, so fingers grow out of the palm
		h := max(k-math.Abs(a-b), 0) / k
		return min(a, b) - h*h*k*0.25
	}
	sd := func(u, v float64) float64 {
		d := sdEllipse(u, v, 0, 0, pl*0.55, palmW*0.5)
		for _, p := range parts {
			d = smin(d, sdCapsule(u, v, p.ax, p.ay, p.bx, p.by, p.r), fingerR*1.2)
		}
		// The forearm widens away from the wrist.
		widen := max(0, -u-pl) * 0.08
		return smin(d, sdCapsule(u, v, arm.ax, arm.ay, arm.bx, arm.by, arm.r+widen), palmW*0.3)
	}
	seed := rng.Uint64()
	blotch := newLattice(rng)
	lightSide := between(rng, -1, 1)
	sh := shape{x0: -armLen - palmW, y0: -palmW * 1.6, x1: pl * 2.2, y1: palmW * 1.6,
		sd: sd,
		color: func(u, v, d float64) rgb {
			if sleeveOn && u < -pl*0.9 {
				return cloth.scale(float32(0.85 + 0.15*math.Sin(v/palmW*6)))
			}
			depth := clamp01(float32(-d / (fingerR * 1.5)))
			c := skin.scale(0.72 + 0.33*depth).scale(0.97 + 0.06*hash01(int(u), int(v), seed))
			// Light from one side of the hand, and a little blotchiness.
			c = c.scale(float32(1 + 0.12*lightSide*v/palmW))
			c = c.scale(1 + 0.06*blotch.fbm(u/(palmW*0.3), v/(palmW*0.3), 2))
			for _, p := range parts[:4] { // nails, elongated along the finger
				if math.Hypot((u-(p.bx-p.r*0.35))/1.3, v-p.by) < p.r*0.55 {
					c = c.mix(rgb{0.93, 0.8, 0.76}, 0.25)
				}
			}
			return c
		}}
	h := similarity(dir, 1, cx, cy)
	s.object(sh, h, s.ref*between(rng, 0.015, 0.05), between(rng, 0.3, 0.5), 1, clearLabel)
}

// paper: a sheet or index card, ruled or printed, with handwriting: flat, white, rectangular
// and covered in marks, like a card but not one.
func (s *scene) paper() {
	rng := s.rng
	x, y := s.spot()
	pw := between(rng, 70, 150)
	ph := pw * between(rng, 0.6, 1.45)
	res := max(40, min(500, s.mmPx*pw*1.2))
	k := res / pw
	tex := newCanvas(int(res), int(ph*k), false)
	paperCol := jitter(rng, pick(rng, []rgb{{0.95, 0.95, 0.93}, {0.96, 0.92, 0.78}, {0.9, 0.95, 0.98}}, []float64{3, 1, 1}), 0.02)
	texturedFill(tex, rng, 0, 0, float64(tex.w), float64(tex.h), paperCol, 0.02, 8*k)
	ink := pick(rng, []rgb{{0.1, 0.1, 0.12}, {0.1, 0.15, 0.5}, {0.5, 0.1, 0.1}}, []float64{3, 2, 1})
	lineGap := between(rng, 6, 9) * k
	if rng.Float64() < 0.5 { // ruled
		for ly := lineGap * 2; ly < float64(tex.h); ly += lineGap {
			tex.rect(0, ly-0.3*k, float64(tex.w), ly+0.3*k, 0, rgb{0.6, 0.75, 0.9}, 0.8)
		}
	}
	for ly := lineGap * 2; ly < float64(tex.h)-lineGap; ly += lineGap * pick(rng, []float64{1, 2}, []float64{3, 1}) {
		if rng.Float64() < 0.5 { // handwriting: a wobbly stroke
			px, py := 4*k, ly-lineGap*0.3
			for px < float64(tex.w)*between(rng, 0.4, 0.95) {
				nx, ny := px+between(rng, 0.5, 2)*k, ly-lineGap*0.3+between(rng, -1.5, 1.5)*k
				tex.capsule(px, py, nx, ny, 0.35*k, ink, 0.9)
				px, py = nx, ny
			}
		} else {
			tex.textLine(rng, 4*k, float64(tex.w)-4*k, ly-lineGap*0.3, lineGap*0.45, ink, between(rng, 0.4, 1))
		}
	}
	sh := shape{x0: -pw / 2, y0: -ph / 2, x1: pw / 2, y1: ph / 2,
		sd:    func(u, v float64) float64 { return sdRoundRect(u, v, -pw/2, -ph/2, pw/2, ph/2, 0.3) },
		color: func(u, v, _ float64) rgb { return tex.sample((u+pw/2)*k, (v+ph/2)*k) }}
	s.object(sh, s.onTable(x, y, between(rng, -math.Pi, math.Pi), s.mmPx), s.mmPx*0.3, 0.3, 1, clearLabel)
}

// emptySleeve: a card sleeve with nothing in it, translucent with a coloured back.
func (s *scene) emptySleeve() {
	rng := s.rng
	x, y := s.spot()
	sw, sh := cardW+3, cardH+4
	col := hsv(between(rng, 0, 360), between(rng, 0, 0.8), between(rng, 0.05, 0.8))
	shp := shape{x0: -sw / 2, y0: -sh / 2, x1: sw / 2, y1: sh / 2,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, -sw/2, -sh/2, sw/2, sh/2, 2) },
		color: func(u, v, _ float64) rgb {
			return col.mix(rgb{1, 1, 1}, float32(0.3*math.Exp(-math.Pow((u+v)/15, 2))))
		}}
	s.object(shp, s.onTable(x, y, between(rng, -math.Pi, math.Pi), s.mmPx), s.mmPx*0.3, 0.25, float32(between(rng, 0.6, 0.9)), clearLabel)
}

// deckBox: a box seen from above, its lid printed with a colour and a label.
func (s *scene) deckBox() {
	rng := s.rng
	x, y := s.spot()
	bw, bh := between(rng, 70, 85), between(rng, 95, 105)
	col := hsv(between(rng, 0, 360), between(rng, 0.2, 0.9), between(rng, 0.1, 0.8))
	lbl := col.mix(rgb{1, 1, 1}, 0.6)
	shp := shape{x0: -bw / 2, y0: -bh / 2, x1: bw / 2, y1: bh / 2,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, -bw/2, -bh/2, bw/2, bh/2, 3) },
		color: func(u, v, _ float64) rgb {
			if math.Abs(u) < bw*0.3 && math.Abs(v+bh*0.25) < bh*0.08 {
				return lbl
			}
			return col.scale(float32(1 - 0.2*math.Abs(u)/bw))
		}}
	s.object(shp, s.onTable(x, y, between(rng, -math.Pi, math.Pi), s.mmPx), s.mmPx*between(rng, 3, 8), 0.45, 1, clearLabel)
}

// phone: a dark slab with a glossy screen showing something colourful.
func (s *scene) phone() {
	rng := s.rng
	x, y := s.spot()
	pw, ph := between(rng, 68, 78), between(rng, 140, 160)
	screen := newLattice(rng)
	hue := between(rng, 0, 360)
	on := rng.Float64() < 0.6
	shp := shape{x0: -pw / 2, y0: -ph / 2, x1: pw / 2, y1: ph / 2,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, -pw/2, -ph/2, pw/2, ph/2, 8) },
		color: func(u, v, _ float64) rgb {
			if math.Abs(u) > pw/2-3 || math.Abs(v) > ph/2-3 {
				return rgb{0.05, 0.05, 0.06}
			}
			if !on {
				return rgb{0.08, 0.08, 0.1}.mix(rgb{1, 1, 1}, float32(0.15*math.Exp(-math.Pow((u-v)/20, 2))))
			}
			return hsv(hue+40*float64(screen.fbm(u/20, v/20, 2)), 0.5, 0.4+0.4*float64(screen.at(u/8, v/30)))
		}}
	s.object(shp, s.onTable(x, y, between(rng, -math.Pi, math.Pi), s.mmPx), s.mmPx*4, 0.45, 1, clearLabel)
}

// wrapper: a booster pack, shiny foil with printed art and crimped ends.
func (s *scene) wrapper() {
	rng := s.rng
	x, y := s.spot()
	ww, wh := between(rng, 70, 80), between(rng, 115, 130)
	art := perlinField(rng.Int64(), int(ww)+2, int(wh)+2, 2, 20, 3)
	a, b := hsv(between(rng, 0, 360), 0.7, 0.7), hsv(between(rng, 0, 360), 0.6, 0.3)
	shp := shape{x0: -ww / 2, y0: -wh / 2, x1: ww / 2, y1: wh / 2,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, -ww/2, -wh/2, ww/2, wh/2, 1) },
		color: func(u, v, _ float64) rgb {
			if math.Abs(v) > wh/2-6 {
				return rgb{0.75, 0.75, 0.78}.scale(float32(0.8 + 0.2*math.Sin(u*2)))
			}
			c := a.mix(b, clamp01(0.5+art.at(u+ww/2, v+wh/2)))
			return c.mix(rgb{1, 1, 1}, float32(0.35*math.Exp(-math.Pow((u*0.7+v)/12, 2))))
		}}
	s.object(shp, s.onTable(x, y, between(rng, -math.Pi, math.Pi), s.mmPx), s.mmPx*1.5, 0.4, 1, clearLabel)
}
