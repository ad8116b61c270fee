package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// packTensors is a layout like the optimizer's: more tensors than one table holds (so the
// plan launches several), float16 and float32 mixed, sizes from one element to one that
// dwarfs the rest, not multiples of 8.
func packTensors(r *rand.Rand) []Packed {
	var ts []Packed
	for j := 0; j < 2*96+7; j++ {
		n := 1 + r.IntN(300)
		if j == 50 {
			n = 40_003
		}
		if j%3 == 0 {
			ts = append(ts, Packed{Float: floats(r, n, -2, 2)})
		} else {
			ts = append(ts, Packed{Half: halves(r, n, 0, 1)})
		}
	}
	return ts
}

func packedLen(ts []Packed) int {
	n := 0
	for _, t := range ts {
		n += t.len()
	}
	return n
}

// TestPackKernels: pack_rows and unpack_rows, emulated through k_pack's tables, against the CPU
// kernels and against the concatenation itself, bit for bit.
func TestPackKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ts := packTensors(r)
	sum := packedLen(ts)
	total := (sum + 7) / 8 * 8
	if total == sum {
		total += 8
	}
	var want []float32
	for _, x := range ts {
		if x.Half != nil {
			for _, h := range x.Half {
				want = append(want, f16.ToFloat32(h))
			}
		} else {
			want = append(want, x.Float...)
		}
	}
	want = append(want, make([]float32, total-sum)...)
	before := Launches()
	for _, w := range []Where{CPU, GPU} {
		got, err := Pack(w, ts, total)
		if err != nil {
			t.Fatalf("%v: %v", w, err)
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("%v pack: element %d of %d is %g, want %g", w, i, total, got[i], want[i])
		}
	}
	// One launch per table: 199 tensors and the padding in tables of 96.
	if n := Launches()["pack_rows"] - before["pack_rows"]; n != 3 {
		t.Errorf("pack_rows launched %d times, want 3", n)
	}

	// Unpack values that float16 must round: ties, values past its range, subnormals.
	m := make([]float32, total)
	for i := range m {
		switch i % 5 {
		case 0:
			m[i] = float32(r.NormFloat64())
		case 1:
			m[i] = 1 + float32(2*r.IntN(1024)+1)/2048 // halfway between float16 neighbours
		case 2:
			m[i] = float32(r.NormFloat64() * 70000)
		case 3:
			m[i] = float32(r.NormFloat64() * 1e-6)
		default:
			m[i] = float32(-r.Float64())
		}
	}
	cpu, err := Unpack(CPU, m, ts)
	if err != nil {
		t.Fatal(err)
	}
	gpu, err := Unpack(GPU, m, ts)
	if err != nil {
		t.Fatal(err)
	}
	at := 0
	for j := range ts {
		if ts[j].Half != nil {
			if !slices.Equal(cpu[j].Half, gpu[j].Half) {
				t.Fatalf("unpack: float16 tensor %d differs between the kernels", j)
			}
			for i, h := range cpu[j].Half {
				if h != f16.FromFloat32(m[at+i]) && !(math.IsNaN(float64(m[at+i]))) {
					t.Fatalf("unpack: tensor %d element %d is %#04x, want %#04x (from %g)", j, i, h, f16.FromFloat32(m[at+i]), m[at+i])
				}
			}
		} else if !slices.Equal(cpu[j].Float, gpu[j].Float) || !slices.Equal(cpu[j].Float, m[at:at+len(ts[j].Float)]) {
			t.Fatalf("unpack: float32 tensor %d is not its slice of the matrix", j)
		}
		at += ts[j].len()
	}
}

// firstDiff is the first index where a and b differ bitwise, or −1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestAdamWKernel: bn.cu's adamw, emulated, against the CPU kernel and against AdamW written
// out here step by step in float32, bit for bit; a skipped step keeps everything. The matrix
// has padding past the moments, as the optimizer's does.
func TestAdamWKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const P, total = 5_003, 5_008
	a := Adam{P: floats(r, total, -1, 1), G: floats(r, total, -3e-3, 3e-3), M: floats(r, P, -1e-3, 1e-3), V: floats(r, P, 0, 1e-5),
		Scalars: [4]float32{1 - 1e-3*0.01, 1e-3 / 0.3, 1 / float32(math.Sqrt(0.02)), 1.0 / 1024}, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	for i := P; i < total; i++ {
		a.P[i], a.G[i] = 0, 0
	}
	a.G[7] = 0 // a zero gradient: the update is m/(√v·c + ε) of the old moments alone
	for _, skip := range []bool{false, true} {
		a.Skip = skip
		cp, cm, cv, err := AdamW(CPU, a)
		if err != nil {
			t.Fatal(err)
		}
		gp, gm, gv, err := AdamW(GPU, a)
		if err != nil {
			t.Fatal(err)
		}
		for name, pair := range map[string][2][]float32{"p": {gp, cp}, "m": {gm, cm}, "v": {gv, cv}} {
			if i := firstDiff(pair[0], pair[1]); i >= 0 {
				t.Fatalf("skip %v: %s[%d] emulated %g, CPU %g", skip, name, i, pair[0][i], pair[1][i])
			}
		}
		for i := 0; i < total; i++ {
			var wp, wm, wv float32 = a.P[i], 0, 0
			if i < P {
				wm, wv = a.M[i], a.V[i]
			}
			if !skip {
				// float32(…) rounds each product on its own (Go may otherwise fuse a multiply-add)
				g := a.G[i] * a.Scalars[3]
				m := float32(wm*a.Beta1) + float32(g*(1-a.Beta1))
				v := float32(wv*a.Beta2) + float32(float32(g*g)*(1-a.Beta2))
				den := float32(float32(math.Sqrt(float64(v)))*a.Scalars[2]) + a.Eps
				wp, wm, wv = float32(a.P[i]*a.Scalars[0])-float32(float32(m/den)*a.Scalars[1]), m, v
			}
			if math.Float32bits(cp[i]) != math.Float32bits(wp) || (i < P && (cm[i] != wm || cv[i] != wv)) {
				t.Fatalf("skip %v, element %d: p %g m %g v %g, want %g %g %g", skip, i, cp[i], valueAt(cm, i), valueAt(cv, i), wp, wm, wv)
			}
		}
	}
}

func valueAt(s []float32, i int) float32 {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// TestSegLossKernels: the loss kernels, emulated through k_seg_loss and k_seg_grad, against the
// CPU kernels (sums in double): per-image sums within float32 summation error, gradients within
// float16 rounding (and float32 cancellation in 1 − softmax, a few 1e-7 absolute). Labels
// include one outside the classes (no pixel, no cross-entropy).
func TestSegLossKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, c := range []struct{ n, k, hw, splits int }{{2, 2, 1000, 3}, {3, 3, 257, 1}, {2, 2, 4800, 2}} {
		z := halves(r, c.n*c.k*c.hw, 0, 3)
		y := make([]int64, c.n*c.hw)
		for i := range y {
			y[i] = int64(r.IntN(c.k))
			if i%97 == 5 {
				y[i] = int64(c.k) // no class
			}
		}
		want, err := SegLoss(CPU, z, y, c.n, c.k, c.hw, c.splits)
		if err != nil {
			t.Fatal(err)
		}
		got, err := SegLoss(GPU, z, y, c.n, c.k, c.hw, c.splits)
		if err != nil {
			t.Fatal(err)
		}
		for j, name := range []string{"ce", "inter", "p", "t", "pixels"} {
			agree(t, fmt.Sprintf("%+v %s", c, name), f32to64(got[j]), f32to64(want[j]), 1e-5, 1e-6)
		}
		if want[4][0] >= float32(c.hw) || want[4][0] < float32(c.hw)*0.9 {
			t.Errorf("%+v: %g pixels of %d counted", c, want[4][0], c.hw)
		}
		dce, dinter, dp := floats(r, c.n, 0.5, 1), floats(r, c.n, -2, -1), floats(r, c.n, 0.1, 0.5)
		gw, err := SegLossGrad(CPU, z, y, dce, dinter, dp, c.n, c.k, c.hw)
		if err != nil {
			t.Fatal(err)
		}
		gg, err := SegLossGrad(GPU, z, y, dce, dinter, dp, c.n, c.k, c.hw)
		if err != nil {
			t.Fatal(err)
		}
		agree(t, fmt.Sprintf("%+v dz", c), toF32(gg), toF32(gw), halfRel, 2e-5) // float32 softmax against double: 1 − s cancels
	}
}

// TestChannelKernels: ChannelScale16 and ChannelDot16's CUDA kernels (8-wide and scalar) against
// their CPU kernels, on planes smaller than a block, odd planes (scalar) and the network's
// squeeze-and-excitation planes.
func TestChannelKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, scalar := range []bool{false, true} {
		ScalarOnly(scalar)
		for _, c := range []struct{ p, hw int }{{3, 40}, {5, 257}, {2, 1031}, {16, 1200}, {24, 4800}, {4, 19200}} {
			x := halves(r, c.p*c.hw, 0.2, 2)
			s, sh := halves(r, c.p, 0.5, 0.3), halves(r, c.p, 0, 0.01)
			want, err := ChannelScale(CPU, x, s, sh, c.p, c.hw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ChannelScale(GPU, x, s, sh, c.p, c.hw)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want { // the same roundings: bit for bit
				if got[i] != want[i] {
					t.Fatalf("scalar %v %+v scale: element %d is %#04x, want %#04x", scalar, c, i, got[i], want[i])
				}
			}
			b := halves(r, c.p*c.hw, 0, 1)
			dw, err := ChannelDot(CPU, x, b, c.p, c.hw)
			if err != nil {
				t.Fatal(err)
			}
			dg, err := ChannelDot(GPU, x, b, c.p, c.hw)
			if err != nil {
				t.Fatal(err)
			}
			agree(t, fmt.Sprintf("scalar %v %+v dot", scalar, c), toF32(dg), toF32(dw), halfRel, 1e-4) // float32 sums against double
		}
	}
	ScalarOnly(false)
}
