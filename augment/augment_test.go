package augment

import (
	"bytes"
	"image"
	"math"
	"math/rand/v2"
	"testing"
)

// scene returns a w×h image whose colour encodes its mask: card pixels red, background blue,
// with a card-shaped rotated rectangle, a disc and a thin bar, so any misalignment between the
// warped image and the warped mask shows up as a colour that contradicts the label.
func scene(w, h int) (*image.RGBA, *Mask) {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	m := NewMask(w, h)
	fw, fh := float64(w), float64(h)
	sin, cos := math.Sincos(0.4)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			// rotated rectangle around (0.35w, 0.5h)
			dx, dy := px-0.35*fw, py-0.5*fh
			u, v := cos*dx+sin*dy, -sin*dx+cos*dy
			card := math.Abs(u) < 0.15*fw && math.Abs(v) < 0.2*fh
			card = card || math.Hypot(px-0.75*fw, py-0.3*fh) < 0.12*fh
			card = card || (math.Abs(py-0.85*fh) < 2 && px > 0.55*fw && px < 0.95*fw)
			i := 4 * (y*w + x)
			if card {
				m.Pix[y*w+x] = 1
				img.Pix[i], img.Pix[i+1], img.Pix[i+2] = 230, 20, 20
			} else {
				img.Pix[i], img.Pix[i+1], img.Pix[i+2] = 20, 20, 230
			}
			img.Pix[i+3] = 255
		}
	}
	return img, m
}

// geometricOnly keeps the geometric transforms of Defaults at probability 1.
func geometricOnly() Config {
	c := Defaults().WithProbability(0)
	c.FlipProb, c.RotateProb, c.ScaleProb, c.PerspectiveProb, c.ElasticProb = 0.5, 1, 1, 1, 1
	return c
}

func TestMaskConsistency(t *testing.T) {
	tests := []struct {
		name         string
		srcW, srcH   int
		outW, outH   int
		cfg          Config
		maxBoundaryD int // allowed distance of a disagreeing pixel from a label boundary
	}{
		{"same size", 160, 120, 160, 120, geometricOnly(), 1},
		{"downscale x2 prefiltered", 320, 240, 160, 120, geometricOnly(), 1},
		{"downscale x3 aspect change", 480, 300, 160, 120, geometricOnly(), 1},
		{"upscale", 80, 60, 160, 120, geometricOnly(), 1},
		{"all transforms", 320, 240, 160, 120, Defaults().WithProbability(1), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, srcMask := scene(tc.srcW, tc.srcH)
			dst := image.NewRGBA(image.Rect(0, 0, tc.outW, tc.outH))
			dstMask := NewMask(tc.outW, tc.outH)
			var a Augmenter
			rng := rand.New(rand.NewPCG(1, 2))
			for trial := 0; trial < 40; trial++ {
				p := tc.cfg.Sample(rng)
				if err := a.Apply(p, src, srcMask, dst, dstMask); err != nil {
					t.Fatal(err)
				}
				cards := 0
				for _, v := range dstMask.Pix {
					if v > 1 {
						t.Fatalf("trial %d: mask label %d, want 0 or 1", trial, v)
					}
					cards += int(v)
				}
				if cards == 0 {
					t.Fatalf("trial %d: the cards vanished (%+v)", trial, p)
				}
				if tc.maxBoundaryD < 0 {
					continue // photometric changes colours; only labels are checked
				}
				for y := 0; y < tc.outH; y++ {
					for x := 0; x < tc.outW; x++ {
						i := 4 * (y*tc.outW + x)
						red := dst.Pix[i] > dst.Pix[i+2]
						label := dstMask.Pix[y*tc.outW+x] == 1
						if red != label && !nearBoundary(dstMask, x, y, tc.maxBoundaryD) {
							t.Fatalf("trial %d (%+v): pixel (%d,%d) colour %v but label %v, far from any edge",
								trial, p, x, y, dst.Pix[i:i+3], label)
						}
					}
				}
			}
		})
	}
}

// nearBoundary reports whether a pixel within d of (x, y) has the other label.
func nearBoundary(m *Mask, x, y, d int) bool {
	v := m.Pix[y*m.Width+x]
	for yy := max(0, y-d); yy <= min(m.Height-1, y+d); yy++ {
		for xx := max(0, x-d); xx <= min(m.Width-1, x+d); xx++ {
			if m.Pix[yy*m.Width+xx] != v {
				return true
			}
		}
	}
	return false
}

func TestAffineRowMatchesGeneralRow(t *testing.T) {
	src, srcMask := scene(300, 200)
	for _, k := range []int{1, 2} {
		img := src
		if k > 1 {
			img = boxDownsample(nil, src, k)
		}
		s := sampler{src: words(img.Pix), stride: img.Stride / 4, iw: img.Rect.Dx(), ih: img.Rect.Dy(),
			mask: srcMask.Pix, mstride: 300, dw: 300 / k * k, dh: 200 / k * k, scale: 256 / float32(k)}
		rng := rand.New(rand.NewPCG(uint64(k), 1))
		const n = 150
		fast, slow := make([]uint32, n), make([]uint32, n)
		mfast, mslow := make([]uint8, n), make([]uint8, n)
		ru, rv := make([]float32, n), make([]float32, n)
		rows, labelDiff := 0, 0
		for trial := 0; trial < 300; trial++ {
			u, v := 1+rng.Float64()*298, 1+rng.Float64()*198
			du, dv := (rng.Float64()-0.5)*1.5, (rng.Float64()-0.5)*1.5
			if !s.affineRow(u, v, du, dv, fast, mfast) {
				continue
			}
			rows++
			for x := range ru {
				ru[x], rv[x] = float32(u+du*float64(x)), float32(v+dv*float64(x))
			}
			s.row(ru, rv, slow, mslow)
			for x := range fast {
				if mfast[x] != mslow[x] {
					labelDiff++
				}
				for c := 0; c < 32; c += 8 {
					a, b := int(fast[x]>>c&255), int(slow[x]>>c&255)
					if a-b > 2 || b-a > 2 {
						t.Fatalf("k=%d pixel %d channel %d: fixed point %d, float %d", k, x, c/8, a, b)
					}
				}
			}
		}
		if rows < 20 || labelDiff > rows*n/1000 {
			t.Fatalf("k=%d: %d rows compared, %d labels differ", k, rows, labelDiff)
		}
	}
}

// TestElasticFieldFinite: this seed gives bild's Perlin generator a zero gradient, whose NaN
// once reached the sampler as an index; the field must be redrawn finite.
func TestElasticFieldFinite(t *testing.T) {
	var f elasticField
	p := Identity()
	p.Elastic, p.ElasticSeed, p.ElasticFreq = 0.02, 4381975616672972197, 3
	f.make(p, 192, 144)
	var largest float64
	for i := range f.dx {
		dx, dy := float64(f.dx[i]), float64(f.dy[i])
		if math.IsNaN(dx) || math.IsNaN(dy) || math.IsInf(dx, 0) || math.IsInf(dy, 0) {
			t.Fatalf("node %d displacement (%v, %v)", i, dx, dy)
		}
		largest = max(largest, math.Hypot(dx, dy))
	}
	if want := 0.02 * 144; math.Abs(largest-want) > 1e-3 {
		t.Fatalf("largest displacement %v, want %v", largest, want)
	}
	src, m := scene(384, 288)
	var a Augmenter
	if err := a.Apply(p, src, m, image.NewRGBA(image.Rect(0, 0, 192, 144)), NewMask(192, 144)); err != nil {
		t.Fatal(err)
	}
}

func TestFlipIsExactMirror(t *testing.T) {
	src, srcMask := scene(64, 48)
	p := Identity()
	p.Flip = true
	dst := image.NewRGBA(image.Rect(0, 0, 64, 48))
	dstMask := NewMask(64, 48)
	var a Augmenter
	if err := a.Apply(p, src, srcMask, dst, dstMask); err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 48; y++ {
		for x := 0; x < 64; x++ {
			if dstMask.Pix[y*64+x] != srcMask.Pix[y*64+63-x] {
				t.Fatalf("mask (%d,%d) not mirrored", x, y)
			}
			if !bytes.Equal(dst.Pix[4*(y*64+x):4*(y*64+x)+4], src.Pix[4*(y*64+63-x):4*(y*64+63-x)+4]) {
				t.Fatalf("image (%d,%d) not mirrored", x, y)
			}
		}
	}
}

func TestRotationDirection(t *testing.T) {
	// A single card pixel right of the centre must end up above the centre after +90°.
	const n = 41
	src := image.NewRGBA(image.Rect(0, 0, n, n))
	m := NewMask(n, n)
	m.Pix[20*n+35] = 1
	p := Identity()
	p.Rotate = 90
	dst := image.NewRGBA(image.Rect(0, 0, n, n))
	dm := NewMask(n, n)
	var a Augmenter
	if err := a.Apply(p, src, m, dst, dm); err != nil {
		t.Fatal(err)
	}
	if dm.Pix[5*n+20] != 1 {
		for i, v := range dm.Pix {
			if v == 1 {
				t.Fatalf("card pixel at (%d,%d), want (20,5)", i%n, i/n)
			}
		}
		t.Fatal("card pixel lost")
	}
}

func TestIdentityCopiesExactly(t *testing.T) {
	src, srcMask := scene(50, 30)
	dst, dm, err := Resize(src, srcMask, 50, 30)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Pix, src.Pix) || !bytes.Equal(dm.Pix, srcMask.Pix) {
		t.Fatal("identity at the same size changed the pixels")
	}
	if _, nm, err := Resize(src, nil, 25, 15); err != nil || nm != nil {
		t.Fatalf("resize without mask: %v, %v", nm, err)
	}
}

func TestDeterminism(t *testing.T) {
	src, srcMask := scene(200, 150)
	cfg := Defaults().WithProbability(1)
	run := func(seed uint64) ([]uint8, []uint8, Params) {
		rng := rand.New(rand.NewPCG(seed, 99))
		p := cfg.Sample(rng)
		dst := image.NewRGBA(image.Rect(0, 0, 120, 90))
		dm := NewMask(120, 90)
		var a Augmenter
		if err := a.Apply(p, src, srcMask, dst, dm); err != nil {
			t.Fatal(err)
		}
		return dst.Pix, dm.Pix, p
	}
	i1, m1, p1 := run(7)
	i2, m2, p2 := run(7)
	if p1 != p2 || !bytes.Equal(i1, i2) || !bytes.Equal(m1, m2) {
		t.Fatal("same seed gave different results")
	}
	i3, _, p3 := run(8)
	if p1 == p3 || bytes.Equal(i1, i3) {
		t.Fatal("different seeds gave the same result")
	}
}

func TestSampleRanges(t *testing.T) {
	cfg := Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4000
	flips, rotations := 0, 0
	for i := 0; i < n; i++ {
		p := cfg.Sample(rng)
		if p.Flip {
			flips++
		}
		if p.Rotate != 0 {
			rotations++
		}
		if math.Abs(p.Rotate) > 15 || math.Abs(p.Brightness) > 0.2 || math.Abs(p.Contrast-1) > 0.2 ||
			math.Abs(p.Hue) > 0.05 || p.Scale < 0.8 || p.Scale > 1.25 || p.NoiseSigma > 0.04 || p.MotionLength > 9 {
			t.Fatalf("params out of range: %+v", p)
		}
	}
	for _, c := range []struct {
		name  string
		count int
		prob  float64
	}{{"flip", flips, cfg.FlipProb}, {"rotate", rotations, cfg.RotateProb}} {
		if got := float64(c.count) / n; math.Abs(got-c.prob) > 0.04 {
			t.Errorf("%s fired %.3f of the time, want %.2f", c.name, got, c.prob)
		}
	}
	// Turning one transform off leaves the others' draws unchanged.
	off := cfg
	off.FlipProb = 0
	a, b := rand.New(rand.NewPCG(5, 6)), rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 100; i++ {
		pa, pb := cfg.Sample(a), off.Sample(b)
		pa.Flip = false
		if pa != pb {
			t.Fatalf("disabling flip changed other params: %+v vs %+v", pa, pb)
		}
	}
	bad := cfg
	bad.RotateProb = 1.5
	bad.ScaleMin = 2
	if err := bad.Validate(); err == nil {
		t.Fatal("invalid config accepted")
	}
}

func TestPhotometricLeavesMaskAlone(t *testing.T) {
	src, srcMask := scene(120, 90)
	geo := Identity()
	geo.Rotate, geo.Scale = 10, 1.1
	full := geo
	full.Brightness, full.Contrast, full.Saturation, full.Hue = 0.1, 1.2, 0.7, 0.05
	full.NoiseSigma, full.NoiseSeed, full.BlurSigma, full.MotionLength, full.MotionAngle = 0.03, 9, 1.2, 5, 0.7
	var a Augmenter
	d1, m1 := image.NewRGBA(image.Rect(0, 0, 100, 80)), NewMask(100, 80)
	d2, m2 := image.NewRGBA(image.Rect(0, 0, 100, 80)), NewMask(100, 80)
	if err := a.Apply(geo, src, srcMask, d1, m1); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(full, src, srcMask, d2, m2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m1.Pix, m2.Pix) {
		t.Fatal("photometric transforms changed the mask")
	}
	if bytes.Equal(d1.Pix, d2.Pix) {
		t.Fatal("photometric transforms did not change the image")
	}
}

func uniform(w, h int, r, g, b uint8) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = r, g, b, 255
	}
	return img
}

func TestColorTransforms(t *testing.T) {
	tests := []struct {
		name    string
		in      [3]uint8
		set     func(*Params)
		want    [3]float64
		tolAbs  float64
		grayOut bool
	}{
		{"identity", [3]uint8{10, 120, 240}, func(p *Params) {}, [3]float64{10, 120, 240}, 0, false},
		{"brightness +0.2", [3]uint8{10, 120, 240}, func(p *Params) { p.Brightness = 0.2 }, [3]float64{61, 171, 255}, 0.5, false},
		{"brightness -0.2", [3]uint8{10, 120, 240}, func(p *Params) { p.Brightness = -0.2 }, [3]float64{0, 69, 189}, 0.5, false},
		// A uniform gray image is its own mean: contrast leaves it unchanged.
		{"contrast on gray", [3]uint8{90, 90, 90}, func(p *Params) { p.Contrast = 1.2 }, [3]float64{90, 90, 90}, 0.5, true},
		// Otherwise channels move away from the mean luma m = 100.79: 1.2·(v − m) + m.
		{"contrast on colour", [3]uint8{10, 120, 240}, func(p *Params) { p.Contrast = 1.2 }, [3]float64{0, 123.8, 255}, 0.5, false},
		{"saturation 0 gives luma", [3]uint8{10, 120, 240}, func(p *Params) { p.Saturation = 0 + 1e-9 }, [3]float64{100.8, 100.8, 100.8}, 1, true},
		{"hue keeps gray", [3]uint8{90, 90, 90}, func(p *Params) { p.Hue = 0.05 }, [3]float64{90, 90, 90}, 0.5, true},
		{"hue third turn cycles channels", [3]uint8{200, 20, 10}, func(p *Params) { p.Hue = 1.0 / 3 }, [3]float64{10, 200, 20}, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := uniform(8, 8, tc.in[0], tc.in[1], tc.in[2])
			p := Identity()
			tc.set(&p)
			c, _ := photometric(p, meanLuma(img))
			colorPass(img, c, 0, 0)
			got := img.Pix[:3]
			for i := 0; i < 3; i++ {
				if math.Abs(float64(got[i])-tc.want[i]) > tc.tolAbs+0.5 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
			if tc.grayOut && (got[0] != got[1] || got[1] != got[2]) {
				t.Fatalf("got %v, want gray", got)
			}
		})
	}
}

func TestApplyPlanarMatchesApply(t *testing.T) {
	src, srcMask := scene(200, 150)
	mean := [3]float32{0.485, 0.456, 0.406}
	std := [3]float32{0.229, 0.224, 0.225}
	const w, h = 120, 90
	rng := rand.New(rand.NewPCG(4, 4))
	for trial, cfg := range []Config{None(), Defaults(), Defaults().WithProbability(1), Defaults().WithProbability(1)} {
		p := cfg.Sample(rng)
		var a Augmenter
		img, m1 := image.NewRGBA(image.Rect(0, 0, w, h)), NewMask(w, h)
		if err := a.Apply(p, src, srcMask, img, m1); err != nil {
			t.Fatal(err)
		}
		planes, m2 := make([]float32, 3*w*h), NewMask(w, h)
		if err := a.ApplyPlanar(p, src, srcMask, planes, m2, mean, std); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m1.Pix, m2.Pix) {
			t.Fatalf("trial %d: masks differ", trial)
		}
		for c := 0; c < 3; c++ {
			for i := 0; i < w*h; i++ {
				want := (float32(img.Pix[4*i+c])/255 - mean[c]) / std[c]
				// Both round to 8 bits the same way, so only float rounding may differ.
				if d := planes[c*w*h+i] - want; d > 1e-5 || d < -1e-5 {
					t.Fatalf("trial %d (%+v): channel %d pixel %d = %v, Apply gives %v", trial, p, c, i, planes[c*w*h+i], want)
				}
			}
		}
	}
	var a Augmenter
	if err := a.ApplyPlanar(Identity(), src, srcMask, make([]float32, 5), NewMask(w, h), mean, std); err == nil {
		t.Fatal("short output accepted")
	}
}

func TestNoiseStatistics(t *testing.T) {
	img := uniform(256, 256, 128, 128, 128)
	colorPass(img, identityColor, 0.04, 42)
	var sum, sq float64
	n := 0.0
	for i := 0; i < 256*256; i++ {
		for c := 0; c < 3; c++ {
			v := float64(img.Pix[4*i+c]) - 128
			sum += v
			sq += v * v
			n++
		}
	}
	mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
	if math.Abs(mean) > 0.2 || math.Abs(std-0.04*255) > 0.3 {
		t.Fatalf("noise mean %.3f std %.3f, want 0 and %.2f", mean, std, 0.04*255)
	}
}

func TestBlurs(t *testing.T) {
	// Uniform images are unchanged (weights sum to one); an impulse spreads symmetrically and
	// keeps its mass.
	for _, blur := range []struct {
		name string
		run  func(*image.RGBA)
	}{
		{"gaussian", func(img *image.RGBA) { gaussianBlur(img, 1.3, nil, nil) }},
		{"motion horizontal", func(img *image.RGBA) { motionBlur(img, 7, 0, nil, nil) }},
		{"motion diagonal", func(img *image.RGBA) { motionBlur(img, 5, math.Pi/4, nil, nil) }},
	} {
		t.Run(blur.name, func(t *testing.T) {
			img := uniform(31, 31, 77, 150, 230)
			blur.run(img)
			for i := 0; i < len(img.Pix); i += 4 {
				if img.Pix[i] != 77 || img.Pix[i+1] != 150 || img.Pix[i+2] != 230 || img.Pix[i+3] != 255 {
					t.Fatalf("uniform image changed at %d: %v", i/4, img.Pix[i:i+4])
				}
			}
			img = uniform(31, 31, 0, 0, 0)
			img.Pix[4*(15*31+15)] = 255
			blur.run(img)
			total := 0
			for i := 0; i < 31*31; i++ {
				total += int(img.Pix[4*i])
			}
			if total < 230 || total > 280 {
				t.Fatalf("impulse mass %d, want about 255", total)
			}
			if img.Pix[4*(15*31+15)] == 255 {
				t.Fatal("impulse not spread")
			}
		})
	}
}

func TestHomographyFromQuads(t *testing.T) {
	from := [4][2]float64{{0, 0}, {10, 0}, {10, 8}, {0, 8}}
	to := [4][2]float64{{1, 2}, {12, -1}, {11, 9}, {-2, 7}}
	h, ok := HomographyFromQuads(from, to)
	if !ok {
		t.Fatal("singular")
	}
	inv, ok := h.Inverse()
	if !ok {
		t.Fatal("no inverse")
	}
	for i := range from {
		x, y := h.Apply(from[i][0], from[i][1])
		if math.Hypot(x-to[i][0], y-to[i][1]) > 1e-9 {
			t.Fatalf("corner %d maps to (%v,%v), want %v", i, x, y, to[i])
		}
		bx, by := inv.Apply(x, y)
		if math.Hypot(bx-from[i][0], by-from[i][1]) > 1e-9 {
			t.Fatalf("inverse of corner %d gives (%v,%v)", i, bx, by)
		}
	}
	if _, ok := HomographyFromQuads(from, [4][2]float64{{0, 0}, {1, 1}, {2, 2}, {3, 3}}); ok {
		t.Fatal("collinear target accepted")
	}
}

func TestDegenerateParamsDoNotPanic(t *testing.T) {
	src, m := scene(64, 48)
	dst, dm := image.NewRGBA(image.Rect(0, 0, 32, 24)), NewMask(32, 24)
	var a Augmenter
	for _, p := range []Params{
		{Scale: math.NaN(), Contrast: 1, Saturation: 1},
		{Scale: 1e-300, Contrast: 1, Saturation: 1},
		{Scale: 1, Rotate: math.Inf(1), Contrast: 1, Saturation: 1},
		{Scale: 1, Perspective: [4][2]float64{{0.5, 0.5}, {-0.5, 0.5}, {-0.5, -0.5}, {0.5, -0.5}}, Contrast: 1, Saturation: 1},
		{Scale: 1, Elastic: 5, ElasticSeed: 1, ElasticFreq: 3, Contrast: 1, Saturation: 1},
	} {
		if err := a.Apply(p, src, m, dst, dm); err != nil {
			t.Fatal(err)
		}
		for _, v := range dm.Pix {
			if v > 1 {
				t.Fatalf("%+v: label %d", p, v)
			}
		}
	}
}

func TestApplyRejectsMismatchedSizes(t *testing.T) {
	var a Augmenter
	img := image.NewRGBA(image.Rect(0, 0, 10, 10))
	if err := a.Apply(Identity(), img, NewMask(10, 9), img, NewMask(10, 10)); err == nil {
		t.Fatal("source size mismatch accepted")
	}
	if err := a.Apply(Identity(), img, NewMask(10, 10), img, NewMask(9, 10)); err == nil {
		t.Fatal("destination size mismatch accepted")
	}
}

func BenchmarkApply(b *testing.B) {
	src, srcMask := scene(640, 480)
	dst, dm := image.NewRGBA(image.Rect(0, 0, 640, 480)), NewMask(640, 480)
	for _, bc := range []struct {
		name string
		cfg  Config
	}{{"none", None()}, {"defaults", Defaults()}, {"all", Defaults().WithProbability(1)}} {
		b.Run(bc.name, func(b *testing.B) {
			var a Augmenter
			rng := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				if err := a.Apply(bc.cfg.Sample(rng), src, srcMask, dst, dm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	src, srcMask := scene(640, 480)
	jpg := encodeJPEG(b, src, 90)
	pngMask := encodePNG(b, srcMask.Gray())
	var img *image.RGBA
	var m *Mask
	b.Run("jpeg", func(b *testing.B) {
		for b.Loop() {
			img, _, _ = Decoder{}.Image(jpg, img)
		}
	})
	b.Run("mask", func(b *testing.B) {
		for b.Loop() {
			m, _, _ = Decoder{}.Mask(pngMask, m)
		}
	})
}
