package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// packCase is a PackRows / UnpackRows model: n tensors of random shapes (every third float16,
// cast from its float32 input in the graph), more than one GPU table's 96 when n is large.
type packCase struct {
	shapes []graphs.Shape
	half   []bool
	rows   int64
}

func newPackCase(n int, seed uint64) packCase {
	r := rand.New(rand.NewPCG(seed, 3))
	var c packCase
	var total int64
	for j := 0; j < n; j++ {
		s := graphs.Shape{int64(1 + r.IntN(5)), int64(1 + r.IntN(40))}
		if j%4 == 1 {
			s = graphs.Shape{int64(1 + r.IntN(9))}
		}
		c.shapes = append(c.shapes, s)
		c.half = append(c.half, j%3 == 0)
		total += s.Size()
	}
	c.rows = (total+graphs.PackRowsWidth-1)/graphs.PackRowsWidth + 1 // a row of padding at least
	return c
}

// model: inputs t<j> (float32); outputs m = PackRows(tensors), u<j> = UnpackRows(m) and
// h<j> = UnpackRows16(m) cast to float32.
func (c packCase) model(t *testing.T) []byte {
	g := graphs.New("pack")
	return buildModel(t, g, func() error {
		var ins []*graphs.Value
		for j, s := range c.shapes {
			v := g.Input(fmt.Sprintf("t%d", j), graphs.Float, s)
			if c.half[j] {
				v = graphs.Cast(v, graphs.Float16)
			}
			ins = append(ins, v)
		}
		m := graphs.PackRows(c.rows, ins...)
		g.Output("m", m)
		for j, u := range graphs.UnpackRows(m, graphs.Float, c.shapes) {
			g.Output(fmt.Sprintf("u%d", j), u)
		}
		for j, h := range graphs.UnpackRows(m, graphs.Float16, c.shapes) {
			g.Output(fmt.Sprintf("h%d", j), graphs.Cast(h, graphs.Float))
		}
		return nil
	})
}

// inputs: normal values, some past float16's range, some that float16 rounds.
func (c packCase) inputs(seed uint64) map[string]*runtime.Tensor {
	r := rand.New(rand.NewPCG(seed, 4))
	in := map[string]*runtime.Tensor{}
	for j, s := range c.shapes {
		d := make([]float32, s.Size())
		for i := range d {
			d[i] = float32(r.NormFloat64())
			if i%7 == 3 {
				d[i] *= 1e5
			}
		}
		in[fmt.Sprintf("t%d", j)] = runtime.MustNew([]int64(s), d)
	}
	return in
}

func (c packCase) run(t *testing.T, p runtime.Provider, in map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	return runOnce(t, c.model(t), p, in)
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %g, want %g", what, i, got[i], want[i])
		}
	}
}

// TestPackRows: the packing operators' CPU kernels in ONNX Runtime against the concatenation
// they stand for: the matrix holds the tensors end to end (float16 ones as float32) and zeros
// after them; UnpackRows gives them back, UnpackRows16 rounds them to float16 as Cast does.
func TestPackRows(t *testing.T) {
	c := newPackCase(9, 1)
	in := c.inputs(2)
	out := c.run(t, runtime.ProviderCPU, in)
	var want []float32
	for j := range c.shapes {
		d := runtime.Data[float32](in[fmt.Sprintf("t%d", j)])
		for _, v := range d {
			if c.half[j] {
				v = f16.ToFloat32(f16.FromFloat32(v))
			}
			want = append(want, v)
		}
	}
	want = append(want, make([]float32, int(c.rows)*graphs.PackRowsWidth-len(want))...)
	if got := out["m"].Shape; len(got) != 2 || got[0] != c.rows || got[1] != graphs.PackRowsWidth {
		t.Fatalf("m has shape %v, want [%d %d]", got, c.rows, graphs.PackRowsWidth)
	}
	sameBits(t, "m", runtime.Data[float32](out["m"]), want)
	at := 0
	for j, s := range c.shapes {
		n := int(s.Size())
		sameBits(t, fmt.Sprintf("u%d", j), runtime.Data[float32](out[fmt.Sprintf("u%d", j)]), want[at:at+n])
		rounded := make([]float32, n)
		for i, v := range want[at : at+n] {
			rounded[i] = f16.ToFloat32(f16.FromFloat32(v))
		}
		sameBits(t, fmt.Sprintf("h%d", j), runtime.Data[float32](out[fmt.Sprintf("h%d", j)]), rounded)
		at += n
	}
}

// TestFusedPackRowsCUDA: the CUDA kernels against the CPU kernels, bit for bit, with more tensors
// than one launch takes.
func TestFusedPackRowsCUDA(t *testing.T) {
	requireCUDA(t)
	c := newPackCase(230, 5)
	in := c.inputs(6)
	cpu := c.run(t, runtime.ProviderCPU, in)
	cuda := c.run(t, runtime.ProviderCUDA, in)
	for name, want := range cpu {
		sameBits(t, "CUDA "+name, runtime.Data[float32](cuda[name]), runtime.Data[float32](want))
	}
}

// adamModel: AdamW on inputs p, g [rows, 8], m, v [P], the four scalars and skip (a float
// input, > ½ skips), outputs p2, m2, v2.
func adamModel(t *testing.T, rows, P int64) []byte {
	g := graphs.New("adamw")
	return buildModel(t, g, func() error {
		f := func(name string, s graphs.Shape) *graphs.Value { return g.Input(name, graphs.Float, s) }
		p, gr := f("p", graphs.Shape{rows, graphs.PackRowsWidth}), f("g", graphs.Shape{rows, graphs.PackRowsWidth})
		m, v := f("m", graphs.Shape{P}), f("v", graphs.Shape{P})
		sc := []*graphs.Value{f("decay", graphs.Shape{}), f("step_size", graphs.Shape{}), f("inv_sq_bc2", graphs.Shape{}), f("gscale", graphs.Shape{})}
		skip := graphs.Greater(f("skip", graphs.Shape{}), graphs.Scalar(g, 0.5))
		p2, m2, v2 := graphs.AdamW(p, gr, m, v, sc[0], sc[1], sc[2], sc[3], skip, 0.9, 0.999, 1e-8)
		g.Output("p2", p2)
		g.Output("m2", m2)
		g.Output("v2", v2)
		return nil
	})
}

// runOnce runs a model once on provider p (our operators registered; on CUDA, none may fall
// back to the CPU).
func runOnce(t *testing.T, m []byte, p runtime.Provider, in map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	opts := runtime.DeviceOptions{Provider: p, CustomOps: true}
	if p == runtime.ProviderCUDA {
		opts.ConfigEntries = map[string]string{"session.disable_cpu_ep_fallback": "1"}
	}
	s, err := runtime.NewDeviceSession("once", m, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := runDevice(s, in)
	if err != nil {
		t.Fatalf("%v: %v", p, err)
	}
	return out
}

// TestFusedAdamWModel: the AdamW node in ONNX Runtime (CPU kernel): a skipped step gives back
// its inputs; a step moves p by at most about lr, and the padding past the moments stays zero.
// (TestFusedAdamStepMatches in pipeline ties its arithmetic to AdamW in ONNX operators.)
func TestFusedAdamWModel(t *testing.T) {
	const rows, P = 5, 37
	m := adamModel(t, rows, P)
	r := rand.New(rand.NewPCG(4, 4))
	p := make([]float32, rows*8)
	for i := range p[:P] {
		p[i] = float32(r.NormFloat64())
	}
	gr := make([]float32, rows*8)
	for i := range gr[:P] {
		gr[i] = float32(r.NormFloat64()) * 1024
	}
	for _, skip := range []float32{0, 1} {
		in := map[string]*runtime.Tensor{"p": runtime.MustNew([]int64{rows, 8}, p), "g": runtime.MustNew([]int64{rows, 8}, gr),
			"m": runtime.MustNew([]int64{P}, make([]float32, P)), "v": runtime.MustNew([]int64{P}, make([]float32, P)),
			"decay": runtime.MustNew([]int64{}, []float32{1}), "step_size": runtime.MustNew([]int64{}, []float32{1e-3 / 0.1}),
			"inv_sq_bc2": runtime.MustNew([]int64{}, []float32{1 / float32(math.Sqrt(0.001))}),
			"gscale":     runtime.MustNew([]int64{}, []float32{1.0 / 1024}), "skip": runtime.MustNew([]int64{}, []float32{skip})}
		out := runOnce(t, m, runtime.ProviderCPU, in)
		p2, m2 := runtime.Data[float32](out["p2"]), runtime.Data[float32](out["m2"])
		for i := range p {
			d := math.Abs(float64(p2[i] - p[i]))
			switch {
			case skip == 1 && (p2[i] != p[i] || (i < P && m2[i] != 0)):
				t.Fatalf("skipped step changed element %d", i)
			case skip == 0 && i < P && (d < 0.9e-3 || d > 1.1e-3): // a first step moves each weight by lr·sign(g)
				t.Fatalf("element %d moved by %g, want about 1e-3", i, d)
			case i >= P && p2[i] != 0:
				t.Fatalf("padding element %d became %g", i, p2[i])
			}
		}
	}
}

// TestFusedAdamWCUDA: the AdamW operator's CUDA kernel against its CPU kernel, bit for bit
// (each operation rounded once on both), stepping and skipping.
func TestFusedAdamWCUDA(t *testing.T) {
	requireCUDA(t)
	const rows, P = 40_001, 320_005
	r := rand.New(rand.NewPCG(3, 3))
	gen := func(n int, scale float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(scale * r.NormFloat64())
		}
		return d
	}
	m := adamModel(t, rows, P)
	for _, skip := range []float32{0, 1} {
		in := map[string]*runtime.Tensor{
			"p": runtime.MustNew([]int64{rows, 8}, gen(rows*8, 0.1)), "g": runtime.MustNew([]int64{rows, 8}, gen(rows*8, 300)),
			"m": runtime.MustNew([]int64{P}, gen(P, 1e-3)), "v": runtime.MustNew([]int64{P}, gen(P, 1e-5)),
			"decay": runtime.MustNew([]int64{}, []float32{0.99999}), "step_size": runtime.MustNew([]int64{}, []float32{3e-3}),
			"inv_sq_bc2": runtime.MustNew([]int64{}, []float32{1.3}), "gscale": runtime.MustNew([]int64{}, []float32{1.0 / 65536}),
			"skip": runtime.MustNew([]int64{}, []float32{skip}),
		}
		for i, x := range runtime.Data[float32](in["v"]) { // second moments are not negative
			runtime.Data[float32](in["v"])[i] = float32(math.Abs(float64(x)))
		}
		res := map[runtime.Provider]map[string]*runtime.Tensor{}
		for _, p := range []runtime.Provider{runtime.ProviderCPU, runtime.ProviderCUDA} {
			res[p] = runOnce(t, m, p, in)
		}
		for _, k := range []string{"p2", "m2", "v2"} {
			sameBits(t, fmt.Sprintf("skip %v: CUDA %s", skip, k), runtime.Data[float32](res[runtime.ProviderCUDA][k]), runtime.Data[float32](res[runtime.ProviderCPU][k]))
		}
	}
}

// segLossModel: SegLoss16 and SegLoss16Grad on z (float32 input cast to float16) [n,2,h,w] and
// labels y, with the sums' gradients as inputs dce, dinter, dp; outputs the five sums and dz
// (as float32).
func segLossModel(t *testing.T, n, h, w int64) []byte {
	g := graphs.New("segloss")
	return buildModel(t, g, func() error {
		z := graphs.Cast(g.Input("z", graphs.Float, graphs.Shape{n, 2, h, w}), graphs.Float16)
		y := g.Input("y", graphs.Int64, graphs.Shape{n, h, w})
		ce, inter, p, tt, pix := graphs.SegLoss16(z, y)
		for i, v := range []*graphs.Value{ce, inter, p, tt, pix} {
			g.Output(fmt.Sprintf("s%d", i), v)
		}
		d := func(name string) *graphs.Value { return g.Input(name, graphs.Float, graphs.Shape{n}) }
		g.Output("dz", graphs.Cast(graphs.SegLoss16Grad(z, y, d("dce"), d("dinter"), d("dp")), graphs.Float))
		return nil
	})
}

func segLossInputs(n, h, w int64, seed uint64) map[string]*runtime.Tensor {
	r := rand.New(rand.NewPCG(seed, 5))
	z := make([]float32, n*2*h*w)
	for i := range z {
		z[i] = float32(3 * r.NormFloat64())
	}
	y := make([]int64, n*h*w)
	for i := range y {
		y[i] = int64(r.IntN(2))
	}
	y[3] = 2 // no class
	d := func(v float32) *runtime.Tensor {
		s := make([]float32, n)
		for i := range s {
			s[i] = v * float32(i+1)
		}
		return runtime.MustNew([]int64{n}, s)
	}
	return map[string]*runtime.Tensor{"z": runtime.MustNew([]int64{n, 2, h, w}, z), "y": runtime.MustNew([]int64{n, h, w}, y),
		"dce": d(0.7), "dinter": d(-1.5), "dp": d(0.3)}
}

// TestFusedSegLossModel: the loss operators in ONNX Runtime (CPU kernels): the pixel counts
// leave out the one label that is no class, and the class-1 gradient is the negative of the
// class-0 one wherever the label is a class (softmax over two classes).
func TestFusedSegLossModel(t *testing.T) {
	const n, h, w = 2, 6, 10
	out := runOnce(t, segLossModel(t, n, h, w), runtime.ProviderCPU, segLossInputs(n, h, w, 1))
	if pix := runtime.Data[float32](out["s4"]); pix[0] != h*w-1 || pix[1] != h*w {
		t.Errorf("pixels %v, want [%d %d]", pix, h*w-1, h*w)
	}
	dz := runtime.Data[float32](out["dz"])
	for i := 0; i < h*w; i++ {
		if i != 3 && math.Abs(float64(dz[i]+dz[h*w+i])) > 2e-3*math.Abs(float64(dz[i]))+1e-6 {
			t.Fatalf("pixel %d: dz %g and %g do not cancel", i, dz[i], dz[h*w+i])
		}
	}
}

// TestFusedSegLossCUDA: the loss operators' CUDA kernels against their CPU kernels (sums in
// double there; exp and log through the GPU's special-function unit).
func TestFusedSegLossCUDA(t *testing.T) {
	requireCUDA(t)
	const n, h, w = 8, 480, 640
	m, in := segLossModel(t, n, h, w), segLossInputs(n, h, w, 2)
	cpu, cuda := runOnce(t, m, runtime.ProviderCPU, in), runOnce(t, m, runtime.ProviderCUDA, in)
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("s%d", i)
		closeTo(t, "CUDA sum "+k, runtime.Data[float32](cuda[k]), runtime.Data[float32](cpu[k]), 1e-5)
	}
	closeTo(t, "CUDA dz", runtime.Data[float32](cuda["dz"]), runtime.Data[float32](cpu["dz"]), 2e-3)
}

// TestFusedSegLossGradientFiniteDifferences: SegLoss16Grad against central differences of
// SegLoss16's sums, L = Σ_n dce·ce + dinter·inter + dp·p, along random ±1 directions. Logits
// are multiples of 2^-4 in (−4, 4) and the step is 2^-5, so z ± step stays float16-exact; the
// sums are taken in double and the gradient is rounded to float16 once.
func TestFusedSegLossGradientFiniteDifferences(t *testing.T) {
	const n, h, w = 2, 4, 6
	m := segLossModel(t, n, h, w)
	in := segLossInputs(n, h, w, 3)
	z := runtime.Data[float32](in["z"])
	for i := range z {
		z[i] = float32(math.Round(float64(max(min(z[i], 3.9), -3.9))*16) / 16)
	}
	d := [3][]float32{runtime.Data[float32](in["dce"]), runtime.Data[float32](in["dinter"]), runtime.Data[float32](in["dp"])}
	lossAt := func(zz []float32) float64 {
		in2 := map[string]*runtime.Tensor{}
		for k, v := range in {
			in2[k] = v
		}
		in2["z"] = runtime.MustNew([]int64{n, 2, h, w}, zz)
		out := runOnce(t, m, runtime.ProviderCPU, in2)
		var l float64
		for j := 0; j < 3; j++ {
			for i, s := range runtime.Data[float32](out[fmt.Sprintf("s%d", j)]) {
				l += float64(d[j][i]) * float64(s)
			}
		}
		return l
	}
	dz := runtime.Data[float32](runOnce(t, m, runtime.ProviderCPU, in)["dz"])
	r := rand.New(rand.NewPCG(8, 8))
	const step = 1.0 / 32
	for trial := 0; trial < 3; trial++ {
		plus, minus := append([]float32(nil), z...), append([]float32(nil), z...)
		var analytic float64
		for i := range z {
			v := float32(1 - 2*r.IntN(2))
			plus[i] += v * step
			minus[i] -= v * step
			analytic += float64(dz[i]) * float64(v)
		}
		fd := (lossAt(plus) - lossAt(minus)) / (2 * step)
		if math.Abs(fd-analytic) > 1e-2*math.Abs(analytic)+1e-4 {
			t.Errorf("direction %d: finite difference %.6g, SegLoss16Grad %.6g", trial, fd, analytic)
		} else {
			t.Logf("direction %d: finite difference %.6g, SegLoss16Grad %.6g", trial, fd, analytic)
		}
	}
}
