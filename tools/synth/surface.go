package synth

import (
	"math"
)

// A surface colours the table plane: f(x, y, u, v) gets the pixel and its table coordinates.
type surface func(x, y int, u, v float64) rgb

// background paints the table: wood, fabric, a playmat, a desk or cutting mat, felt, stone or
// plain noise; sometimes a playmat lies on it with its stitched edge in view.
func (s *scene) background() {
	kind := pick(s.rng, []string{"wood", "fabric", "playmat", "desk", "felt", "stone", "noise"},
		[]float64{3, 2, 2, 2.5, 1, 1.2, 0.8})
	s.forEachPixel(s.surface(kind))
	if kind != "playmat" && s.rng.Float64() < 0.18 {
		s.playmatEdge()
	}
}

func (s *scene) surface(kind string) surface {
	switch kind {
	case "wood":
		return s.wood()
	case "fabric":
		return s.fabric()
	case "playmat":
		return s.playmat()
	case "desk":
		return s.desk()
	case "felt":
		return s.felt()
	case "stone":
		return s.stone()
	}
	return s.noisy()
}

// wood: planks with growth rings bent by noise, fibre streaks and dark seams.
func (s *scene) wood() surface {
	rng, ref := s.rng, s.ref
	base := jitter(rng, pick(rng, []rgb{{0.76, 0.6, 0.42}, {0.38, 0.25, 0.16}, {0.58, 0.33, 0.22}, {0.62, 0.6, 0.56}, {0.86, 0.84, 0.8}, {0.7, 0.52, 0.33}},
		[]float64{3, 2, 2, 1, 1, 2}), 0.04)
	dark := base.scale(float32(between(rng, 0.55, 0.78)))
	ang := pick(rng, []float64{0, math.Pi / 2}, []float64{1, 1}) + between(rng, -0.1, 0.1)
	ca, sa := math.Cos(ang), math.Sin(ang)
	plankW := ref * between(rng, 0.15, 0.5)
	period := ref * between(rng, 0.008, 0.03)
	seamW := max(0.6, ref*0.0025)
	warp, fibre := newLattice(rng), newLattice(rng)
	seed := rng.Uint64()
	return func(x, y int, u, v float64) rgb {
		along, across := u*ca+v*sa, -u*sa+v*ca
		plank := math.Floor(across / plankW)
		ph := float64(hash01(int(plank), 7, seed))
		w := float64(warp.fbm(along/(ref*0.7)+ph*13, across/(ref*0.12), 3)) * ref * 0.06
		r := 0.5 + 0.5*math.Sin((across+w+ph*97)/period*2*math.Pi)
		r = r * r * r
		f := fibre.at(along/(ref*0.3)+ph*31, across/(ref*0.0035))
		col := base.mix(dark, float32(0.55*r)+0.15*f+0.1).scale(float32(0.9 + 0.2*ph))
		if in := across - plank*plankW; in < seamW || in > plankW-seamW {
			col = col.scale(0.55)
		}
		return col
	}
}

// fabric: woven threads, over and under in a checker, with soft folds.
func (s *scene) fabric() surface {
	rng, ref := s.rng, s.ref
	base := hsv(between(rng, 0, 360), between(rng, 0.05, 0.6), between(rng, 0.2, 0.85))
	alt := base.mix(hsv(between(rng, 0, 360), 0.4, 0.7), float32(between(rng, 0, 0.25)))
	period := ref * between(rng, 0.0025, 0.007)
	weave := float32(between(rng, 0.05, 0.2))
	warpL, weftL, folds := newLattice(rng), newLattice(rng), newLattice(rng)
	return func(x, y int, u, v float64) rgb {
		a := warpL.at(u/(ref*0.06), v/period)
		b := weftL.at(u/period, v/(ref*0.06))
		over := (int(math.Floor(u/period))+int(math.Floor(v/period)))&1 == 0
		col, t := base, a
		if !over {
			col, t = base.mix(alt, 0.5), b
		}
		fold := 1 + 0.15*folds.fbm(u/(ref*0.5), v/(ref*0.5), 3)
		return col.scale((1 - weave + weave*t) * fold)
	}
}

// playmat: printed artwork in vivid colours, neoprene grain, sometimes card-zone outlines.
func (s *scene) playmat() surface {
	rng, ref := s.rng, s.ref
	hue := between(rng, 0, 360)
	cols := []rgb{hsv(hue, between(rng, 0.4, 0.9), between(rng, 0.1, 0.4)),
		hsv(hue+between(rng, 30, 120), between(rng, 0.4, 0.9), between(rng, 0.4, 0.8)),
		hsv(hue+between(rng, 150, 250), between(rng, 0.2, 0.7), between(rng, 0.6, 1))}
	art, warp := newLattice(rng), newLattice(rng)
	scale := ref * between(rng, 0.2, 0.6)
	// Half the mats are illustrated: a painting stretched over the mat, like printed artwork.
	var painting *canvas
	var paintScale float64
	if rng.Float64() < 0.5 {
		painting = newCanvas(160, 120, false)
		paintArt(painting, rng)
		paintScale = 160 / (ref * between(rng, 1.5, 3))
	}
	type zone struct{ x0, y0, x1, y1 float64 }
	var zones []zone
	if rng.Float64() < 0.2 {
		zw := ref * between(rng, 0.18, 0.3)
		zh := zw * cardH / cardW
		u0, v0 := s.toTable.Apply(between(rng, 0, float64(s.w)*0.4), between(rng, 0, float64(s.h)*0.5))
		for i := 0; i < 2+rng.IntN(4); i++ {
			x := u0 + float64(i)*zw*1.25
			zones = append(zones, zone{x, v0, x + zw, v0 + zh})
		}
	}
	line := max(0.8, ref*0.003)
	seed := rng.Uint64()
	return func(x, y int, u, v float64) rgb {
		wu := float64(warp.fbm(u/scale, v/scale, 2)) * 1.5
		n := clamp01(0.5 + 0.8*art.fbm(u/scale+wu, v/scale-wu, 6))
		col := cols[0].mix(cols[1], n)
		if n > 0.65 {
			col = col.mix(cols[2], (n-0.65)*2.5)
		}
		if painting != nil {
			px, py := (u+wu*ref*0.02)*paintScale, v*paintScale
			px, py = math.Mod(math.Abs(px), 320), math.Mod(math.Abs(py), 240)
			if px > 160 { // mirror-tile the painting beyond its edges
				px = 320 - px
			}
			if py > 120 {
				py = 240 - py
			}
			col = painting.sample(px, py).mix(col, 0.15)
		}
		col = col.scale(0.96 + 0.08*hash01(x, y, seed))
		for _, z := range zones {
			if d := math.Abs(sdRoundRect(u, v, z.x0, z.y0, z.x1, z.y1, (z.x1-z.x0)*0.05)); d < line {
				col = col.mix(rgb{0.95, 0.95, 0.95}, 0.45)
			}
		}
		return col
	}
}

// desk: laminate in a flat colour with faint reflections, or a cutting mat with its grid.
func (s *scene) desk() surface {
	rng, ref := s.rng, s.ref
	if rng.Float64() < 0.3 {
		base := pick(rng, []rgb{{0.12, 0.38, 0.28}, {0.12, 0.22, 0.42}, {0.1, 0.1, 0.1}}, []float64{3, 1, 1})
		grid := ref * between(rng, 0.04, 0.07)
		lw := max(0.6, ref*0.0015)
		ink := base.mix(rgb{0.9, 0.95, 0.9}, 0.55)
		// Distance to the nearest grid line, in table units; lines are anti-aliased over a pixel.
		near := func(t, period float64) float64 {
			m := math.Mod(math.Abs(t), period)
			return min(m, period-m)
		}
		return func(x, y int, u, v float64) rgb {
			d := min(near(u, grid), near(v, grid))
			width := lw
			if min(near(u, grid*5), near(v, grid*5)) < lw*2 {
				d, width = min(near(u, grid*5), near(v, grid*5)), lw*2
			}
			return base.mix(ink, clamp01(float32(1+(width-d)/1.0))*0.9)
		}
	}
	base := jitter(rng, pick(rng, []rgb{{0.9, 0.9, 0.88}, {0.7, 0.7, 0.7}, {0.32, 0.32, 0.33}, {0.1, 0.1, 0.11}, {0.82, 0.76, 0.64}},
		[]float64{3, 2, 2, 2, 2}), 0.03)
	l := newLattice(rng)
	seed := rng.Uint64()
	return func(x, y int, u, v float64) rgb {
		n := l.fbm(u/(ref*0.4), v/(ref*0.4), 3)
		return base.scale(1 + 0.05*n + 0.03*(hash01(x, y, seed)-0.5))
	}
}

// felt: a card-table cloth with fine fibres and mottling.
func (s *scene) felt() surface {
	rng, ref := s.rng, s.ref
	base := jitter(rng, pick(rng, []rgb{{0.08, 0.35, 0.18}, {0.1, 0.18, 0.4}, {0.45, 0.08, 0.1}, {0.08, 0.08, 0.08}}, []float64{3, 1, 1, 1}), 0.03)
	l := newLattice(rng)
	seed := rng.Uint64()
	return func(x, y int, u, v float64) rgb {
		return base.scale(1 + 0.1*l.fbm(u/(ref*0.2), v/(ref*0.2), 3) + 0.18*(hash01(int(u*1.7), int(v*1.7), seed)-0.5))
	}
}

// stone: granite speckles or marble veins.
func (s *scene) stone() surface {
	rng, ref := s.rng, s.ref
	base := jitter(rng, pick(rng, []rgb{{0.55, 0.55, 0.55}, {0.82, 0.8, 0.76}, {0.2, 0.2, 0.21}, {0.6, 0.5, 0.42}}, []float64{1, 1, 1, 1}), 0.04)
	l1, l2, l3 := newLattice(rng), newLattice(rng), newLattice(rng)
	if rng.Float64() < 0.5 {
		vein := base.scale(0.55)
		return func(x, y int, u, v float64) rgb {
			n := l1.fbm(u/(ref*0.5), v/(ref*0.5), 5)
			d := math.Abs(float64(n))
			col := base.scale(1 + 0.06*l2.fbm(u/(ref*0.1), v/(ref*0.1), 2))
			if d < 0.05 {
				col = col.mix(vein, float32(1-d/0.05))
			}
			return col
		}
	}
	specks := []rgb{base.scale(0.4), base.mix(rgb{1, 1, 1}, 0.5), jitter(rng, base, 0.2)}
	cell := ref * between(rng, 0.004, 0.01)
	return func(x, y int, u, v float64) rgb {
		col := base
		for i, l := range []*lattice{l1, l2, l3} {
			if l.at(u/cell+float64(i)*11, v/cell) > 0.55 {
				col = specks[i]
			}
		}
		return col
	}
}

// noisy: a busy multicoloured texture (carpet, cork, patterned cloth).
func (s *scene) noisy() surface {
	rng, ref := s.rng, s.ref
	a, b := hsv(between(rng, 0, 360), between(rng, 0.2, 0.8), between(rng, 0.2, 0.9)), hsv(between(rng, 0, 360), between(rng, 0.2, 0.8), between(rng, 0.2, 0.9))
	l := newLattice(rng)
	cell := ref * between(rng, 0.005, 0.05)
	seed := rng.Uint64()
	return func(x, y int, u, v float64) rgb {
		t := clamp01(0.5 + l.fbm(u/cell, v/cell, 3))
		return a.mix(b, t).scale(0.85 + 0.3*hash01(x, y, seed))
	}
}

// playmatEdge lays a playmat with a stitched border over part of the table.
func (s *scene) playmatEdge() {
	rng := s.rng
	mat := s.playmat()
	w, h := float64(s.w), float64(s.h)
	// The mat covers the frame but for one or two sides.
	x0, y0, x1, y1 := -w, -h, 2*w, 2*h
	switch rng.IntN(4) {
	case 0:
		x0 = w * between(rng, 0.1, 0.5)
	case 1:
		x1 = w * between(rng, 0.5, 0.9)
	case 2:
		y0 = h * between(rng, 0.1, 0.5)
	default:
		y1 = h * between(rng, 0.5, 0.9)
	}
	u0, v0 := s.toTable.Apply(x0, y0)
	u1, v1 := s.toTable.Apply(x1, y1)
	u0, u1 = min(u0, u1), max(u0, u1)
	v0, v1 = min(v0, v1), max(v0, v1)
	r := s.ref * 0.05
	stitch := hsv(between(rng, 0, 360), between(rng, 0, 0.7), between(rng, 0.1, 0.9))
	band := s.ref * 0.008
	shape := shape{x0: u0, y0: v0, x1: u1, y1: v1,
		sd: func(u, v float64) float64 { return sdRoundRect(u, v, u0, v0, u1, v1, r) },
		color: func(u, v, _ float64) rgb {
			d := -sdRoundRect(u, v, u0, v0, u1, v1, r)
			if d < band {
				return stitch.scale(0.85 + 0.3*float32(math.Abs(math.Sin((u+v)/band*1.5))))
			}
			x, y := s.table.Apply(u, v)
			return mat(int(x), int(y), u, v)
		}}
	if p, ok := place(shape, s.table, s.w, s.h); ok {
		s.c.shadow(p, s.lightX*s.ref*0.004, s.lightY*s.ref*0.004, s.ref*0.004, 0.35, &s.scratch)
		s.c.draw(p, 1, keepLabel)
	}
}
