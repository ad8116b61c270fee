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

// fusedBNModel builds, on x float32 [shape] cast to float16, the FP16 batch norm of Train mode
// (fused or not) with activation a and the loss Σ w·y (y cast to float32), with outputs y,
// loss, the batch statistics and the gradients for x, γ and β.
func fusedBNModel(t *testing.T, shape graphs.Shape, fused bool, a act, w []float32) []byte {
	return fusedBNModelWith(t, shape, Options{FusedBN: fused, FusedActivation: true}, a, w)
}

// fusedBNModelWith is fusedBNModel with the model options given.
func fusedBNModelWith(t *testing.T, shape graphs.Shape, opts Options, a act, w []float32) []byte {
	t.Helper()
	c := shape[1]
	g := graphs.New("bn_fused")
	return buildModel(t, g, func() error {
		x := g.Input("x", graphs.Float, shape)
		gamma := g.Input("gamma", graphs.Float, graphs.Shape{c})
		beta := g.Input("beta", graphs.Float, graphs.Shape{c})
		src := fixedSource{"bn.weight": gamma, "bn.bias": beta,
			"bn.running_mean": g.InitFloat("rm", graphs.Shape{c}, make([]float32, c)),
			"bn.running_var":  g.InitFloat("rv", graphs.Shape{c}, make([]float32, c))}
		n := &net{g: g, src: src, mode: Train, opts: opts, out: &Output{}}
		y := graphs.Cast(n.batchNorm("bn", "conv.weight", graphs.Cast(x, graphs.Float16), int(c), 1e-3, 0.1, a), graphs.Float)
		loss := graphs.ReduceSum(graphs.Mul(y, g.InitFloat("w", shape, w)), false)
		grads, err := graphs.Grad(loss, []*graphs.Value{x, gamma, beta})
		if err != nil {
			return err
		}
		g.Output("y", y)
		g.Output("loss", loss)
		g.Output("mean", n.out.BN[0].BatchMean)
		g.Output("var", n.out.BN[0].BatchV())
		for i, name := range []string{"dx", "dgamma", "dbeta"} {
			g.Output(name, grads[i])
		}
		return nil
	})
}

// buildModel runs build on g and returns the marshalled model.
func buildModel(t *testing.T, g *graphs.Graph, build func() error) []byte {
	t.Helper()
	if err := graphs.Build(build); err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runDevice runs a model once in a device session (custom operators registered) with host
// inputs and returns every output on the host.
func runDevice(s *runtime.DeviceSession, in map[string]*runtime.Tensor) (map[string]*runtime.Tensor, error) {
	ins, outs := map[string]*runtime.DeviceTensor{}, map[string]*runtime.DeviceTensor{}
	for _, info := range s.Inputs() {
		d, err := s.NewTensorFor(info.Name)
		if err != nil {
			return nil, err
		}
		if err := d.Upload(in[info.Name]); err != nil {
			return nil, fmt.Errorf("%s: %w", info.Name, err)
		}
		ins[info.Name] = d
	}
	for _, info := range s.Outputs() {
		d, err := s.NewTensorFor(info.Name)
		if err != nil {
			return nil, err
		}
		outs[info.Name] = d
	}
	b, err := s.NewBinding(-1, ins, outs)
	if err != nil {
		return nil, err
	}
	if err := s.Run(b); err != nil {
		return nil, err
	}
	res := map[string]*runtime.Tensor{}
	for name, d := range outs {
		if res[name], err = d.Fetch(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func fusedBNData(shape graphs.Shape, seed uint64) (x, gamma, beta, w []float32) {
	r := rand.New(rand.NewPCG(seed, 7))
	gen := func(n int64, lo, hi float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			// float16-exact values, so that the cast to float16 and perturbations are exact
			d[i] = f16.ToFloat32(f16.FromFloat32(float32(lo + (hi-lo)*r.Float64())))
		}
		return d
	}
	c := shape[1]
	return gen(shape.Size(), 1, 5), gen(c, 0.5, 1.5), gen(c, -1, 1), gen(shape.Size(), -1, 1)
}

func fusedInputs(shape graphs.Shape, x, gamma, beta []float32) map[string]*runtime.Tensor {
	c := shape[1]
	return map[string]*runtime.Tensor{"x": runtime.MustNew([]int64(shape), x),
		"gamma": runtime.MustNew([]int64{c}, gamma), "beta": runtime.MustNew([]int64{c}, beta)}
}

func maxDiff(got, want []float32) (d, m float64) {
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
		m = math.Max(m, math.Abs(float64(want[i])))
	}
	return d, m
}

// closeTo fails t when got and want differ by more than tol of want's largest magnitude (or
// want is all zero), and logs the relative difference otherwise.
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	d, m := maxDiff(got, want)
	if d > tol*m || m == 0 {
		t.Errorf("%s differs by %.3g (magnitude %.3g): got %.4g…, want %.4g…", what, d, m, got[:min(4, len(got))], want[:min(4, len(want))])
	} else {
		t.Logf("%s within %.2e of its magnitude", what, d/m)
	}
}

// closeOutputs is closeTo for each named output of two runs of a model, labelled what: name.
func closeOutputs(t *testing.T, what string, got, want map[string]*runtime.Tensor, tol float64, names ...string) {
	t.Helper()
	for _, k := range names {
		closeTo(t, what+": "+k, runtime.Data[float32](got[k]), runtime.Data[float32](want[k]), tol)
	}
}

// TestFusedBatchNormMatchesDecomposed: the ai.cardseg operators (CPU kernels) against the
// FP16 batch norm written in ONNX operators, which TestBatchNormHalfMatchesFloat ties to the
// float32 layer: outputs, statistics and gradients. Two shapes: one with a plane smaller than
// a GPU block, one whose channels split into several partial sums.
func TestFusedBatchNormMatchesDecomposed(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		shape    graphs.Shape
		a        act
		separate bool // the activation after the fused batch norm, not inside
	}{{graphs.Shape{2, 3, 4, 5}, actNone, false}, {graphs.Shape{2, 4, 64, 80}, actNone, false}, {graphs.Shape{2, 4, 64, 80}, actReLU, false},
		{graphs.Shape{2, 3, 9, 11}, actHardSwish, false}, {graphs.Shape{2, 3, 9, 11}, actHardSwish, true}} {
		shape := tc.shape
		x, gamma, beta, w := fusedBNData(shape, 3)
		in := fusedInputs(shape, x, gamma, beta)
		res := map[bool]map[string]*runtime.Tensor{}
		for _, fused := range []bool{false, true} {
			s, err := runtime.NewDeviceSession("bn_fused", fusedBNModelWith(t, shape, Options{FusedBN: fused, FusedActivation: !tc.separate}, tc.a, w),
				runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1, CustomOps: true})
			if err != nil {
				t.Fatal(err)
			}
			res[fused], err = runDevice(s, in)
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"y", "mean", "var", "dx", "dgamma", "dbeta"} {
			closeTo(t, fmt.Sprintf("%v act %d (separate %v): %s", shape, tc.a, tc.separate, k), runtime.Data[float32](res[true][k]), runtime.Data[float32](res[false][k]), 2e-3)
		}
	}
}

// TestFusedBatchNormGradientFiniteDifferences checks BatchNormTrain16Grad against central
// differences of the fused forward (CPU kernels), without and with each activation. The inputs
// are float16-exact and the steps powers of two, so every perturbed input is exact; what
// remains is the rounding of y to float16, kept small by a small layer. Without activation
// the loss is linear in γ and β, so their differences take a large step.
func TestFusedBatchNormGradientFiniteDifferences(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 2, 3, 3}
	for _, a := range []act{actNone, actReLU, actHardSwish} {
		x, gamma, beta, w := fusedBNData(shape, 5)
		s, err := runtime.NewDeviceSession("bn_fused", fusedBNModel(t, shape, true, a, w),
			runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1, CustomOps: true})
		if err != nil {
			t.Fatal(err)
		}
		base, err := runDevice(s, fusedInputs(shape, x, gamma, beta))
		if err != nil {
			t.Fatal(err)
		}
		loss := func(x, gamma, beta []float32) float64 {
			out, err := runDevice(s, fusedInputs(shape, x, gamma, beta))
			if err != nil {
				t.Fatal(err)
			}
			return float64(runtime.Data[float32](out["loss"])[0])
		}
		check := func(name string, v []float32, h float32, at func(p []float32) float64) {
			got := runtime.Data[float32](base[name])
			fd := make([]float32, len(v))
			for i := range v {
				p := append([]float32(nil), v...)
				p[i] = v[i] + h
				up := at(p)
				p[i] = v[i] - h
				fd[i] = float32((up - at(p)) / float64(2*h))
			}
			closeTo(t, fmt.Sprintf("act %d: %s", a, name), got, fd, 0.05)
		}
		hp := float32(0.5)
		if a != actNone {
			hp = 1.0 / 64
		}
		check("dx", x, 1.0/32, func(p []float32) float64 { return loss(p, gamma, beta) })
		check("dgamma", gamma, hp, func(p []float32) float64 { return loss(x, p, beta) })
		check("dbeta", beta, hp, func(p []float32) float64 { return loss(x, gamma, p) })
		s.Close()
	}
}

// TestFusedBatchNormCUDA runs the fused operators' CUDA kernels against their CPU kernels on
// shapes with several partial sums per channel, many channels, planes that are not a multiple
// of 8, and channels small enough for one pass. Needs a GPU.
func TestFusedBatchNormCUDA(t *testing.T) {
	requireCUDA(t)
	for _, tc := range []struct {
		shape graphs.Shape
		a     act
	}{{graphs.Shape{4, 16, 120, 160}, actHardSwish}, {graphs.Shape{8, 960, 15, 20}, actReLU}, {graphs.Shape{2, 3, 5, 7}, actNone}, {graphs.Shape{8, 40, 60, 80}, actNone},
		{graphs.Shape{8, 96, 30, 40}, actHardSwish}} { // the vector kernels, the first ones, and the one-pass ones (runtime/kernels/launch.h)
		shape := tc.shape
		x, gamma, beta, w := fusedBNData(shape, 11)
		in := fusedInputs(shape, x, gamma, beta)
		m := fusedBNModel(t, shape, true, tc.a, w)
		res := map[runtime.Provider]map[string]*runtime.Tensor{}
		for _, p := range []runtime.Provider{runtime.ProviderCPU, runtime.ProviderCUDA} {
			opts := runtime.DeviceOptions{Provider: p, CustomOps: true}
			if p == runtime.ProviderCUDA { // an operator left to the CPU would compare the CPU kernel with itself
				opts.ConfigEntries = map[string]string{"session.disable_cpu_ep_fallback": "1"}
			}
			s, err := runtime.NewDeviceSession("bn_fused", m, opts)
			if err != nil {
				t.Fatal(err)
			}
			res[p], err = runDevice(s, in)
			s.Close()
			if err != nil {
				t.Fatalf("%v on %v: %v", shape, p, err)
			}
		}
		for _, k := range []string{"y", "mean", "var", "dx", "dgamma", "dbeta"} {
			closeTo(t, fmt.Sprintf("%v act %d: CUDA %s", shape, tc.a, k), runtime.Data[float32](res[runtime.ProviderCUDA][k]), runtime.Data[float32](res[runtime.ProviderCPU][k]), 2e-3)
		}
	}
}

// dwCase is a depthwise layer geometry of MobileNetV3-Large: kernel, stride, dilation.
type dwCase struct{ k, s, d int64 }

var dwCases = []dwCase{{3, 1, 1}, {3, 2, 1}, {5, 1, 1}, {5, 2, 1}, {5, 1, 2}}

// dwGradModel is dwModel with an ONNX Conv whose weight gradient takes form ("fused" or
// "gather").
func dwGradModel(t *testing.T, shape graphs.Shape, dc dwCase, form string, r []float32) []byte {
	return dwModel(t, shape, dc, false, form, r)
}

func dwData(shape graphs.Shape, k int64, seed uint64) (x, w, r []float32) {
	x, _, _, r = fusedBNData(shape, seed)
	for i := range x {
		x[i] -= 3 // centred: products of both signs
	}
	w, _, _, _ = fusedBNData(graphs.Shape{shape[1], 1, k, k}, seed+1)
	for i := range w {
		w[i] = f16.ToFloat32(f16.FromFloat32((w[i] - 3) / 4))
	}
	return x, w, r
}

func runDW(t *testing.T, m []byte, p runtime.Provider, shape graphs.Shape, dc dwCase, x, w []float32) map[string]*runtime.Tensor {
	t.Helper()
	opts := runtime.DeviceOptions{Provider: p, IntraOpThreads: 1, CustomOps: true}
	if p == runtime.ProviderCUDA {
		opts.IntraOpThreads = 0
		opts.ConfigEntries = map[string]string{"session.disable_cpu_ep_fallback": "1"}
	}
	s, err := runtime.NewDeviceSession("dw_grad", m, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := runDevice(s, map[string]*runtime.Tensor{"x": runtime.MustNew([]int64(shape), x),
		"w": runtime.MustNew([]int64{shape[1], 1, dc.k, dc.k}, w)})
	if err != nil {
		t.Fatalf("%v %+v on %v: %v", shape, dc, p, err)
	}
	return out
}

// TestFusedDepthwiseWeightGradMatchesGather: DepthwiseWeightGrad16 (CPU kernel) against the
// unfolded-patches form for every depthwise geometry of the network, on planes with odd sides.
func TestFusedDepthwiseWeightGradMatchesGather(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 3, 13, 17}
	for _, dc := range dwCases {
		x, w, r := dwData(shape, dc.k, 21)
		got := runDW(t, dwGradModel(t, shape, dc, "fused", r), runtime.ProviderCPU, shape, dc, x, w)
		want := runDW(t, dwGradModel(t, shape, dc, "gather", r), runtime.ProviderCPU, shape, dc, x, w)
		closeOutputs(t, fmt.Sprintf("%+v", dc), got, want, 2e-3, "dw")
	}
}

// TestFusedDepthwiseWeightGradFiniteDifferences: the fused rule against central differences
// of the loss in each weight. The convolution is linear in w, so a large step has no
// truncation error and swamps the rounding of y to float16.
func TestFusedDepthwiseWeightGradFiniteDifferences(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 2, 7, 9}
	for _, dc := range []dwCase{{3, 2, 1}, {5, 1, 2}} {
		x, w, r := dwData(shape, dc.k, 31)
		m := dwGradModel(t, shape, dc, "fused", r)
		base := runDW(t, m, runtime.ProviderCPU, shape, dc, x, w)
		got := runtime.Data[float32](base["dw"])
		fd := make([]float32, len(w))
		const h = 0.5
		for i := range w {
			p := append([]float32(nil), w...)
			p[i] = w[i] + h
			up := runtime.Data[float32](runDW(t, m, runtime.ProviderCPU, shape, dc, x, p)["loss"])[0]
			p[i] = w[i] - h
			down := runtime.Data[float32](runDW(t, m, runtime.ProviderCPU, shape, dc, x, p)["loss"])[0]
			fd[i] = (up - down) / (2 * h)
		}
		closeTo(t, fmt.Sprintf("%+v", dc), got, fd, 0.02)
	}
}

// TestFusedDepthwiseWeightGradCUDA: the CUDA kernels against the CPU kernel on the network's
// geometries at a size with several partial sums per channel. Needs a GPU.
func TestFusedDepthwiseWeightGradCUDA(t *testing.T) {
	requireCUDA(t)
	for _, shape := range []graphs.Shape{{4, 24, 60, 80}, {8, 480, 15, 20}} {
		for _, dc := range dwCases {
			x, w, r := dwData(shape, dc.k, 41)
			m := dwGradModel(t, shape, dc, "fused", r)
			got := runDW(t, m, runtime.ProviderCUDA, shape, dc, x, w)
			want := runDW(t, m, runtime.ProviderCPU, shape, dc, x, w)
			closeOutputs(t, fmt.Sprintf("%v %+v: CUDA", shape, dc), got, want, 2e-3, "dw")
		}
	}
}

// dwModel: x float32 [shape] and w float32 [C,1,k,k] cast to float16, the depthwise layer
// (padding d·(k−1)/2) as DepthwiseConv16 (fusedConv) or an ONNX Conv whose weight gradient
// takes form, loss Σ r·y; outputs y and loss (float32) and the gradients for x and w.
func dwModel(t *testing.T, shape graphs.Shape, dc dwCase, fusedConv bool, form string, r []float32) []byte {
	t.Helper()
	c := shape[1]
	g := graphs.New("dw")
	g.Grad.DepthwiseWeightGrad = form
	return buildModel(t, g, func() error {
		x := g.Input("x", graphs.Float, shape)
		w := g.Input("w", graphs.Float, graphs.Shape{c, 1, dc.k, dc.k})
		p := dc.d * (dc.k - 1) / 2
		o := graphs.ConvOpts{Strides: [2]int64{dc.s, dc.s}, Pads: [4]int64{p, p, p, p}, Dilations: [2]int64{dc.d, dc.d}, Group: c}
		xh, wh := graphs.Cast(x, graphs.Float16), graphs.Cast(w, graphs.Float16)
		var y *graphs.Value
		if fusedConv {
			y = graphs.DepthwiseConv16(xh, wh, o)
		} else {
			y = graphs.Conv(xh, wh, nil, o)
		}
		yf := graphs.Cast(y, graphs.Float)
		loss := graphs.ReduceSum(graphs.Mul(yf, g.InitFloat("r", yf.Shape(), r[:yf.Shape().Size()])), false)
		grads, err := graphs.Grad(loss, []*graphs.Value{x, w})
		if err != nil {
			return err
		}
		g.Output("y", yf)
		g.Output("loss", loss)
		g.Output("dx", grads[0])
		g.Output("dw", grads[1])
		return nil
	})
}

// dwConvModel is dwModel with DepthwiseConv16 (fused) or an ONNX Conv, weight gradients of the
// latter by the gather form.
func dwConvModel(t *testing.T, shape graphs.Shape, dc dwCase, fused bool, r []float32) []byte {
	return dwModel(t, shape, dc, fused, "gather", r)
}

// TestFusedDepthwiseConvMatchesConv: DepthwiseConv16 and its gradients (CPU kernels) against
// ONNX Conv in float16 and its gradient rule, for every depthwise geometry of the network.
func TestFusedDepthwiseConvMatchesConv(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 3, 13, 17}
	for _, dc := range dwCases {
		x, w, r := dwData(shape, dc.k, 51)
		got := runDW(t, dwConvModel(t, shape, dc, true, r), runtime.ProviderCPU, shape, dc, x, w)
		want := runDW(t, dwConvModel(t, shape, dc, false, r), runtime.ProviderCPU, shape, dc, x, w)
		closeOutputs(t, fmt.Sprintf("%+v", dc), got, want, 2e-3, "y", "dx", "dw")
	}
}

// TestFusedDepthwiseConvFiniteDifferences: DepthwiseConv16's gradient rule against central
// differences in x and w. The layer is linear in each, so a large step has no truncation error.
func TestFusedDepthwiseConvFiniteDifferences(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{1, 2, 7, 9}
	for _, dc := range []dwCase{{3, 2, 1}, {5, 1, 2}} {
		x, w, r := dwData(shape, dc.k, 61)
		m := dwConvModel(t, shape, dc, true, r)
		base := runDW(t, m, runtime.ProviderCPU, shape, dc, x, w)
		loss := func(x, w []float32) float32 {
			return runtime.Data[float32](runDW(t, m, runtime.ProviderCPU, shape, dc, x, w)["loss"])[0]
		}
		for _, v := range []struct {
			name string
			at   func(p []float32) float32
			in   []float32
		}{{"dx", func(p []float32) float32 { return loss(p, w) }, x}, {"dw", func(p []float32) float32 { return loss(x, p) }, w}} {
			got := runtime.Data[float32](base[v.name])
			closeTo(t, fmt.Sprintf("%+v %s", dc, v.name), got, centralDiffs(v.in, v.at, 0.5), 0.02)
		}
	}
}

// requireCUDA initialises ONNX Runtime and skips the test where CUDA is not usable.
func requireCUDA(t *testing.T) {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	if r := runtime.CheckCUDA(); !r.Usable {
		t.Skip("no usable CUDA: " + r.Problem)
	}
}

// centralDiffs is the gradient of f at in by central differences of step h in each element.
func centralDiffs(in []float32, f func([]float32) float32, h float32) []float32 {
	fd := make([]float32, len(in))
	for i := range in {
		p := append([]float32(nil), in...)
		p[i] = in[i] + h
		up := f(p)
		p[i] = in[i] - h
		fd[i] = (up - f(p)) / (2 * h)
	}
	return fd
}

// TestFusedDepthwiseConvCUDA: DepthwiseConv16 and its gradients, CUDA kernels against the CPU
// kernels, on the network's geometries. Needs a GPU.
func TestFusedDepthwiseConvCUDA(t *testing.T) {
	requireCUDA(t)
	for _, shape := range []graphs.Shape{{4, 24, 61, 80}, {8, 480, 15, 20}} {
		for _, dc := range dwCases {
			x, w, r := dwData(shape, dc.k, 71)
			m := dwConvModel(t, shape, dc, true, r)
			got := runDW(t, m, runtime.ProviderCUDA, shape, dc, x, w)
			want := runDW(t, m, runtime.ProviderCPU, shape, dc, x, w)
			closeOutputs(t, fmt.Sprintf("%v %+v: CUDA", shape, dc), got, want, 2e-3, "y", "dx", "dw")
		}
	}
}
