package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// halves returns n float16 values mean + sd·N(0,1), rounded.
func halves(r *rand.Rand, n int, mean, sd float64) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = f16.FromFloat32(float32(mean + sd*r.NormFloat64()))
	}
	return out
}

func floats(r *rand.Rand, n int, lo, hi float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(lo + (hi-lo)*r.Float64())
	}
	return out
}

// bnInput is x with a different mean and spread per channel (means large against the spread
// in some, to exercise the variance's pivot).
func bnInput(r *rand.Rand, b BN) []uint16 {
	x := make([]uint16, b.N*b.C*b.HW)
	for c := 0; c < b.C; c++ {
		mean, sd := 4*r.NormFloat64(), 0.2+2*r.Float64()
		for n := 0; n < b.N; n++ {
			copy(x[(n*b.C+c)*b.HW:], halves(r, b.HW, mean, sd))
		}
	}
	return x
}

func toF32(h []uint16) []float64 {
	out := make([]float64, len(h))
	for i, v := range h {
		out[i] = float64(f16.ToFloat32(v))
	}
	return out
}

func f32to64(s []float32) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		out[i] = float64(v)
	}
	return out
}

// halfRel is the relative tolerance of float16 outputs: one unit in the last place is 2^-11
// to 2^-10 of a value, and a sum taken in another order can round either way.
const halfRel = 1.5 / 1024

// agree checks got against want element by element: |g − w| ≤ rel·|w| + abs·rms(want). It
// reports the worst element in units of the bound.
func agree(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	var ss float64
	for _, w := range want {
		ss += w * w
	}
	rms := math.Sqrt(ss / float64(len(want)))
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(got[i]) || math.IsInf(got[i], 0) {
			d = math.Inf(1)
		}
		if q := d / (rel*math.Abs(want[i]) + abs*rms); q > worst || at < 0 {
			worst, at = q, i
		}
	}
	if worst > 1 {
		t.Errorf("%s: element %d is %.6g, want %.6g (%.3g× the tolerance)", what, at, got[at], want[at], worst)
	} else {
		t.Logf("%s: worst element at %.3g of the tolerance", what, worst)
	}
}

// bnCases: planes smaller than a block, odd sizes, planes of a multiple of 8 (the vector
// kernels; channels of up to 12288 elements take the one-pass ones), more splits than some
// slices can fill, and layers of the network (with the graph's splits).
func bnCases() []BN {
	cases := []BN{{N: 2, C: 3, HW: 4 * 5, Splits: 1}, {N: 2, C: 5, HW: 9 * 11, Splits: 7}, {N: 1, C: 2, HW: 13, Splits: 13},
		{N: 3, C: 4, HW: 1031, Splits: 3}, {N: 3, C: 5, HW: 24, Splits: 4}, {N: 2, C: 7, HW: 320, Splits: 3},
		{N: 2, C: 3, HW: 6144, Splits: 2}, {N: 2, C: 3, HW: 6152, Splits: 2}} // the largest one-pass channel, and one vector more
	for _, l := range []struct{ n, c, hw int }{{4, 16, 120 * 160}, {4, 72, 60 * 80}, {8, 160, 15 * 20}, {8, 96, 30 * 40}} {
		cases = append(cases, BN{N: l.n, C: l.c, HW: l.hw, Splits: int(graphs.BNSplits(int64(l.n), int64(l.c), int64(l.hw)))})
	}
	for i := range cases {
		cases[i].Eps = 1e-3
		cases[i].Act = i % 3
	}
	return cases
}

// TestBatchNormKernels: bn.cu's forward and backward kernels, emulated through the launch
// plans, against the CPU kernels.
func TestBatchNormKernels(t *testing.T) {
	defer ScalarOnly(false)
	for _, scalar := range []bool{false, true} {
		ScalarOnly(scalar)
		testBatchNormKernels(t, scalar)
	}
}

// launchedSince lists the kernels launched since the counts before.
func launchedSince(before map[string]int64) map[string]bool {
	out := map[string]bool{}
	for k, n := range Launches() {
		if n > before[k] {
			out[k] = true
		}
	}
	return out
}

func testBatchNormKernels(t *testing.T, scalar bool) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, b := range bnCases() {
		name := fmt.Sprintf("N%d C%d HW%d S%d act %d scalar %v", b.N, b.C, b.HW, b.Splits, b.Act, scalar)
		before := Launches()
		compareBN(t, r, name, b, true, true)
		ran := launchedSince(before)
		vec := !scalar && b.HW%8 == 0
		small := vec && b.N*b.HW <= 256*8*6
		for _, k := range []string{"bn_fwd_partial8", "bn_fwd_apply8", "bn_bwd_partial8", "bn_bwd_apply8"} {
			if ran[k] != (vec && !small) {
				t.Errorf("%s: %s launched %v, want %v", name, k, ran[k], vec && !small)
			}
		}
		for _, k := range []string{"bn_fwd_small8", "bn_bwd_small8"} {
			if ran[k] != small {
				t.Errorf("%s: %s launched %v, want %v", name, k, ran[k], small)
			}
		}
		for _, k := range []string{"bn_fwd_finish", "bn_bwd_finish"} { // the vector kernels sum the partials themselves
			if ran[k] == vec {
				t.Errorf("%s: %s launched %v, want %v", name, k, ran[k], !vec)
			}
		}
	}
}

// compareBN runs the layer's forward (fwd) and backward (bwd) on random data with the emulated
// GPU kernels and the CPU kernels and compares every output. The backward gets the CPU's
// statistics, so that only its own arithmetic differs.
func compareBN(t *testing.T, r *rand.Rand, name string, b BN, fwd, bwd bool) {
	t.Helper()
	x := bnInput(r, b)
	g, be := floats(r, b.C, 0.5, 1.5), floats(r, b.C, -0.5, 0.5)
	wy, wmean, wvar, err := BNForward(CPU, b, x, g, be)
	if err != nil {
		t.Fatal(err)
	}
	if fwd {
		y, mean, variance, err := BNForward(GPU, b, x, g, be)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		agree(t, name+" y", toF32(y), toF32(wy), halfRel, 1e-3)
		agree(t, name+" mean", f32to64(mean), f32to64(wmean), 1e-5, 1e-5)
		agree(t, name+" var", f32to64(variance), f32to64(wvar), 1e-5, 1e-5)
	}
	if !bwd {
		return
	}
	dy := halves(r, len(x), 0, 1)
	dx, dg, db, err := BNBackward(GPU, b, dy, x, g, be, wmean, wvar)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	wdx, wdg, wdb, err := BNBackward(CPU, b, dy, x, g, be, wmean, wvar)
	if err != nil {
		t.Fatal(err)
	}
	agree(t, name+" dx", toF32(dx), toF32(wdx), halfRel, 1e-3)
	agree(t, name+" dgamma", f32to64(dg), f32to64(wdg), 1e-4, 1e-4)
	agree(t, name+" dbeta", f32to64(db), f32to64(wdb), 1e-4, 1e-4)
}

// compareDWConv runs DWConv on both kernels and compares; it reports whether a strip kernel ran.
func compareDWConv(t *testing.T, name string, g Geo, grad bool, in, w []uint16) (strip bool) {
	t.Helper()
	before := Launches()
	got, err := DWConv(GPU, g, grad, in, w)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	strip = launched(before, "dws", "dwd2")
	want, err := DWConv(CPU, g, grad, in, w)
	if err != nil {
		t.Fatal(err)
	}
	agree(t, name, toF32(got), toF32(want), halfRel, 1e-3)
	return strip
}

// compareDWGrad runs DWGrad on both kernels and compares; it reports whether a strip kernel ran.
func compareDWGrad(t *testing.T, name string, g Geo, splits int, x, dy []uint16) (strip bool) {
	t.Helper()
	before := Launches()
	got, err := DWGrad(GPU, g, splits, x, dy)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	strip = launched(before, "dwg_")
	want, err := DWGrad(CPU, g, splits, x, dy)
	if err != nil {
		t.Fatal(err)
	}
	agree(t, name+" dW", toF32(got), toF32(want), halfRel, 1e-3)
	return strip
}

// launched reports whether a kernel whose name has one of the prefixes ran since before.
func launched(before map[string]int64, prefixes ...string) bool {
	for k := range launchedSince(before) {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}

// dwCases: the network's depthwise geometries (kernel, stride, dilation; padding d·(k−1)/2).
var dwCases = []struct{ k, s, d int }{{3, 1, 1}, {3, 2, 1}, {5, 1, 1}, {5, 2, 1}, {5, 1, 2}}

func geo(k, s, d, n, c, h, w int) Geo {
	p := d * (k - 1) / 2
	return Geo{K: k, SH: s, SW: s, DH: d, DW: d, PH: p, PW: p, N: n, C: c, H: h, W: w,
		Ho: (h+2*p-d*(k-1)-1)/s + 1, Wo: (w+2*p-d*(k-1)-1)/s + 1}
}

// TestDepthwiseKernels: bn.cu's depthwise convolution, its input gradient and its weight
// gradient, emulated, against the CPU kernels on every geometry of the network, on planes with
// odd and even sides.
func TestDepthwiseKernels(t *testing.T) {
	defer ScalarOnly(false)
	for _, scalar := range []bool{false, true} {
		ScalarOnly(scalar)
		testDepthwiseKernels(t, scalar)
	}
}

func testDepthwiseKernels(t *testing.T, scalar bool) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, plane := range [][4]int{{2, 3, 13, 17}, {2, 5, 30, 40}, {1, 3, 12, 32}, {1, 2, 3, 4}} {
		for _, dc := range dwCases {
			g := geo(dc.k, dc.s, dc.d, plane[0], plane[1], plane[2], plane[3])
			name := fmt.Sprintf("%+v scalar %v", g, scalar)
			x := halves(r, g.N*g.C*g.H*g.W, 0, 1)
			dy := halves(r, g.N*g.C*g.Ho*g.Wo, 0, 1)
			w := halves(r, g.C*g.K*g.K, 0, 0.5)
			for _, grad := range []bool{false, true} {
				in := x
				if grad {
					in = dy
				}
				if strip := compareDWConv(t, fmt.Sprintf("%s grad %v", name, grad), g, grad, in, w); strip == scalar {
					t.Errorf("%s grad %v: strip kernel launched %v", name, grad, strip)
				}
			}
			splitsList := []int{1, 3, min(int(graphs.BNSplits(int64(g.N), int64(g.C), int64(g.Ho*g.Wo))), g.Ho*g.Wo)}
			slices.Sort(splitsList)
			for _, splits := range slices.Compact(splitsList) {
				if strip := compareDWGrad(t, fmt.Sprintf("%s splits %d", name, splits), g, splits, x, dy); strip == scalar {
					t.Errorf("%s splits %d: strip kernel launched %v", name, splits, strip)
				}
			}
		}
	}
}

// TestEmulationReportsFaults: kernels with the faults the emulation is there to find.
func TestEmulationReportsFaults(t *testing.T) {
	if err := selftest(0); err != nil {
		t.Fatalf("a correct kernel: %v", err)
	}
	for which, want := range map[int]string{
		1: "threads returned while",
		2: "different barriers",
		3: "wrote outside out",
		4: "the kernel takes 5",
		5: "outside CUDA's limits",
		6: "without coroutines",
	} {
		err := selftest(which)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("fault %d: got %v, want an error with %q", which, err, want)
		}
	}
}
