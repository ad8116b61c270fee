package synth

import (
	"math"
	"math/rand/v2"

	"github.com/anthonynsimon/bild/perlin"
)

// lattice is value noise: random values on a 64×64 tiling lattice, interpolated with a
// smoothstep, so evaluating it costs a few loads and multiplies.
type lattice struct{ v [64 * 64]float32 }

func newLattice(rng *rand.Rand) *lattice {
	l := &lattice{}
	for i := range l.v {
		l.v[i] = float32(2*rng.Float64() - 1)
	}
	return l
}

// at returns the noise at (x, y) in lattice cells, in [-1, 1].
func (l *lattice) at(x, y float64) float32 {
	fx, fy := math.Floor(x), math.Floor(y)
	tx, ty := float32(x-fx), float32(y-fy)
	xi, yi := int(int64(fx))&63, int(int64(fy))&63
	xj, yj := (xi+1)&63, (yi+1)&63
	tx, ty = tx*tx*(3-2*tx), ty*ty*(3-2*ty)
	a, b := l.v[yi*64+xi], l.v[yi*64+xj]
	c, d := l.v[yj*64+xi], l.v[yj*64+xj]
	top := a + (b-a)*tx
	return top + (c+(d-c)*tx-top)*ty
}

// fbm sums octaves of the lattice, each twice the frequency and half the amplitude, scaled back
// to about [-1, 1].
func (l *lattice) fbm(x, y float64, octaves int) float32 {
	var sum, amp, norm float32 = 0, 1, 0
	for o := 0; o < octaves; o++ {
		sum += amp * l.at(x+float64(o)*17.31, y+float64(o)*7.77)
		norm += amp
		amp *= 0.5
		x, y = x*2.03, y*2.03
	}
	return sum / norm
}

// field is a smooth scalar map sampled on a coarse grid and interpolated bilinearly, for noise
// too costly to evaluate at every pixel (Perlin fBm from bild).
type field struct {
	gw, gh int
	step   float64
	v      []float32
}

// perlinField samples bild's Perlin fBm (octaves, seeded) over a w×h area every step pixels, at
// wavelength pixels per noise cell.
// A zero random gradient in bild's generator (about one seed in a thousand) yields NaN near its
// lattice point; such a field is drawn again from a derived seed.
func perlinField(seed int64, w, h int, step, wavelength float64, octaves int) *field {
	f := &field{gw: int(float64(w)/step) + 2, gh: int(float64(h)/step) + 2, step: step}
	f.v = make([]float32, f.gw*f.gh)
	for attempt := 0; ; attempt++ {
		p := perlin.NewPerlin(2, 2, max(1, min(octaves, 8)), seed)
		bad := false
		for j := 0; j < f.gh; j++ {
			for i := 0; i < f.gw; i++ {
				v := p.Noise2D(float64(i)*step/wavelength, float64(j)*step/wavelength)
				if math.IsNaN(v) || math.IsInf(v, 0) {
					bad, v = true, 0
				}
				f.v[j*f.gw+i] = float32(v)
			}
		}
		if !bad || attempt == 8 {
			return f
		}
		seed = int64(uint64(seed)*0x9e3779b97f4a7c15 + 1)
	}
}

// at interpolates the field at pixel coordinates (x, y), clamped to its area.
func (f *field) at(x, y float64) float32 {
	gx, gy := x/f.step, y/f.step
	gx = max(0, min(gx, float64(f.gw-1)-1e-6))
	gy = max(0, min(gy, float64(f.gh-1)-1e-6))
	i, j := int(gx), int(gy)
	tx, ty := float32(gx-float64(i)), float32(gy-float64(j))
	a, b := f.v[j*f.gw+i], f.v[j*f.gw+i+1]
	c, d := f.v[(j+1)*f.gw+i], f.v[(j+1)*f.gw+i+1]
	top := a + (b-a)*tx
	return top + (c+(d-c)*tx-top)*ty
}

// hash01 is a stateless hash of integer coordinates to [0, 1), for per-pixel grain.
func hash01(x, y int, seed uint64) float32 {
	z := uint64(x)*0x9e3779b97f4a7c15 ^ uint64(y)*0xc2b2ae3d27d4eb4f ^ seed
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40) / float32(1<<24)
}
