package synth

import (
	"math"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// placed remembers where a card went, so hands can reach for it.
type placed struct{ x, y, size float64 }

// cards lays 0–4 cards on the table (about 10 % of frames have none): scattered, in a row, fanned
// or stacked; upright, tapped or at any angle; from 5 % to 70 % of the frame's height; some cut
// by the frame edge, some lifted off the table, some in sleeves.
func (s *scene) cards() {
	rng := s.rng
	n := pick(rng, []int{0, 1, 2, 3, 4}, []float64{0.1, 0.34, 0.22, 0.18, 0.16})
	s.mmPx = s.ref * between(rng, 0.05, 0.3) / cardH // for clutter when there are no cards
	if n == 0 {
		return
	}
	fh := float64(s.h)
	// Card height in pixels, log-uniform over 5–70 % of the frame, with close-ups (the way
	// people photograph a card) as common as table overviews; crowded tables hold smaller cards.
	lo, hi := 0.05, 0.7
	if rng.Float64() < 0.5 {
		lo = 0.25
	}
	if n >= 3 {
		lo, hi = 0.05, 0.45
	}
	size := fh * math.Exp(between(rng, math.Log(lo), math.Log(hi)))
	var base float64
	switch r := rng.Float64(); {
	case r < 0.55:
		base = rng.NormFloat64() * 0.12 // upright, as photographed
	case r < 0.7:
		base = math.Pi/2 + rng.NormFloat64()*0.1 // tapped
	default:
		base = between(rng, -math.Pi, math.Pi)
	}
	layout := "scatter"
	if n >= 2 {
		layout = pick(rng, []string{"scatter", "row", "fan", "stack"}, []float64{4, 2, 2, 1})
	}
	w := float64(s.w)
	cw := size * cardW / cardH
	cx, cy := between(rng, 0.2*w, 0.8*w), between(rng, 0.25*fh, 0.75*fh)
	dirX, dirY := math.Cos(base), math.Sin(base)
	for i := 0; i < n; i++ {
		x, y, ang := cx, cy, base
		k := size * math.Exp(rng.NormFloat64()*0.08)
		switch layout {
		case "scatter":
			margin := 0.05
			if rng.Float64() < 0.25 {
				margin = -0.12 // cut by the frame
			}
			x, y = between(rng, margin*w, (1-margin)*w), between(rng, margin*fh, (1-margin)*fh)
			ang = base + rng.NormFloat64()*0.25
			k = size * math.Exp(rng.NormFloat64()*0.15)
		case "row":
			off := (float64(i) - float64(n-1)/2) * cw * between(rng, 1.05, 1.35)
			x, y = cx+off*dirX, cy+off*dirY
			ang = base + rng.NormFloat64()*0.04
		case "fan":
			spread := between(rng, 0.12, 0.3)
			a := (float64(i) - float64(n-1)/2) * spread
			r := size * 0.8
			x, y = cx+r*math.Sin(base+a), cy-r*math.Cos(base+a)+r
			ang = base + a
		case "stack":
			x, y = cx+rng.NormFloat64()*cw*0.08, cy+rng.NormFloat64()*cw*0.08
			ang = base + rng.NormFloat64()*0.15
		}
		s.card(x, y, ang, k)
	}
}

// card draws one card centred at image point (x, y), height size pixels, rotated by ang.
func (s *scene) card(x, y, ang, size float64) {
	rng := s.rng
	mmPx := size / cardH
	s.mmPx = mmPx
	tw := int(max(48, min(420, size*cardW/cardH*1.3)))
	tex := renderCard(rng, tw)
	texPerMM := float64(tw) / cardW
	h := s.onTable(x, y, ang, mmPx)
	lifted := rng.Float64() < 0.2
	if lifted { // held or propped: turned in 3D about its centre, seen in perspective
		if lh, ok := tilted(h, between(rng, -0.6, 0.6), between(rng, -0.6, 0.6), cardH*between(rng, 2.5, 6)); ok {
			h = lh
		}
	}
	shade := float32(between(rng, 0.82, 1.08))
	sheen, sheenPos, sheenW := float32(0), 0.0, 1.0
	sheenX, sheenY := 1.0, 0.0
	if rng.Float64() < 0.45 {
		sheen = float32(between(rng, 0.05, 0.35))
		a := between(rng, 0, math.Pi)
		sheenX, sheenY = math.Cos(a), math.Sin(a)
		sheenPos, sheenW = between(rng, -40, 40), between(rng, 4, 25)
	}
	sh := shape{x0: -cardW / 2, y0: -cardH / 2, x1: cardW / 2, y1: cardH / 2,
		sd: func(u, v float64) float64 {
			return sdRoundRect(u, v, -cardW/2, -cardH/2, cardW/2, cardH/2, cardRadius)
		},
		color: func(u, v, _ float64) rgb {
			c := tex.sample((u+cardW/2)*texPerMM, (v+cardH/2)*texPerMM).scale(shade)
			// The cut edge shows the card stock's light core, which outlines dark borders.
			if d := sdRoundRect(u, v, -cardW/2, -cardH/2, cardW/2, cardH/2, cardRadius); d > -0.3 {
				c = c.mix(rgb{0.7, 0.7, 0.68}, 0.35)
			}
			if sheen > 0 {
				d := (u*sheenX + v*sheenY - sheenPos) / sheenW
				c = c.mix(rgb{1, 1, 1}, sheen*float32(math.Exp(-d*d)))
			}
			return c
		}}
	p, ok := place(sh, h, s.w, s.h)
	if !ok {
		return
	}
	height := mmPx * between(rng, 0.3, 1.2)
	if lifted {
		height *= 4
	}
	s.c.shadow(p, s.lightX*height, s.lightY*height, 0.6*height+1, between(rng, 0.25, 0.55), &s.scratch)
	s.c.draw(p, 1, setCard)
	s.placed = append(s.placed, placed{x, y, size})
	if rng.Float64() < 0.2 {
		s.sleeve(h)
	}
}

// sleeve draws a card sleeve around the card placed by h: an opaque coloured margin outside the
// card (not card) and a faint glossy film over it (the card stays card).
func (s *scene) sleeve(h augment.Homography) {
	rng := s.rng
	m := between(s.rng, 0.8, 2.0) // margin, mm
	x0, y0, x1, y1 := -cardW/2-m, -cardH/2-m, cardW/2+m, cardH/2+m*1.5
	col := jitter(rng, pick(rng, []rgb{{0.05, 0.05, 0.07}, {0.6, 0.1, 0.1}, {0.1, 0.2, 0.55}, {0.85, 0.85, 0.88}, {0.1, 0.4, 0.2}, {0.45, 0.2, 0.5}},
		[]float64{3, 1, 1, 1, 1, 1}), 0.05)
	margin := shape{x0: x0, y0: y0, x1: x1, y1: y1,
		sd: func(u, v float64) float64 {
			outer := sdRoundRect(u, v, x0, y0, x1, y1, cardRadius+m*0.5)
			inner := sdRoundRect(u, v, -cardW/2, -cardH/2, cardW/2, cardH/2, cardRadius)
			return max(outer, -inner)
		},
		color: flat(col)}
	gloss := float32(between(rng, 0.05, 0.2))
	film := shape{x0: x0, y0: y0, x1: x1, y1: y1,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, x0, y0, x1, y1, cardRadius+m*0.5) },
		color: func(u, v, _ float64) rgb {
			t := float32(0.5 + 0.5*math.Sin((u+v)*0.05))
			return rgb{1, 1, 1}.scale(0.7 + 0.3*t)
		}}
	if p, ok := place(margin, h, s.w, s.h); ok {
		s.c.draw(p, float32(between(rng, 0.75, 0.95)), clearLabel)
	}
	if p, ok := place(film, h, s.w, s.h); ok {
		s.c.draw(p, gloss, keepLabel)
	}
}

// tilted returns h preceded by a 3D rotation of the card plane: pitch about the card's x axis
// and yaw about its y axis (radians), viewed by a pinhole at distance f (millimetres) in front of
// the card's centre. The result is the homography of a rigid card turned towards the camera.
func tilted(h augment.Homography, pitch, yaw, f float64) (augment.Homography, bool) {
	sp, cp := math.Sincos(pitch)
	sy, cy := math.Sincos(yaw)
	var from, to [4][2]float64
	for i, c := range [4][2]float64{{-cardW / 2, -cardH / 2}, {cardW / 2, -cardH / 2}, {cardW / 2, cardH / 2}, {-cardW / 2, cardH / 2}} {
		x, y := c[0], c[1]
		// Rotate (x, y, 0): yaw about y, then pitch about x.
		X, Z := x*cy, -x*sy
		Y, Z := y*cp-Z*sp, y*sp+Z*cp
		k := f / (f + Z)
		from[i] = c
		to[i] = [2]float64{X * k, Y * k}
	}
	local, ok := augment.HomographyFromQuads(from, to)
	if !ok {
		return h, false
	}
	return h.Mul(local), true
}
