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
// (fused or not) and the loss Σ w·y (y cast to float32), with outputs y, loss, the batch
// statistics and the gradients for x, γ and β.
func fusedBNModel(t *testing.T, shape graphs.Shape, fused bool, w []float32) []byte {
	t.Helper()
	c := shape[1]
	g := graphs.New("bn_fused")
	err := graphs.Build(func() error {
		x := g.Input("x", graphs.Float, shape)
		gamma := g.Input("gamma", graphs.Float, graphs.Shape{c})
		beta := g.Input("beta", graphs.Float, graphs.Shape{c})
		src := fixedSource{"bn.weight": gamma, "bn.bias": beta,
			"bn.running_mean": g.InitFloat("rm", graphs.Shape{c}, make([]float32, c)),
			"bn.running_var":  g.InitFloat("rv", graphs.Shape{c}, make([]float32, c))}
		n := &net{g: g, src: src, mode: Train, opts: Options{FusedBN: fused}, out: &Output{}}
		y := graphs.Cast(n.batchNorm("bn", "conv.weight", graphs.Cast(x, graphs.Float16), int(c), 1e-3, 0.1), graphs.Float)
		loss := graphs.ReduceSum(graphs.Mul(y, g.InitFloat("w", shape, w)), false)
		grads, err := graphs.Grad(loss, []*graphs.Value{x, gamma, beta})
		if err != nil {
			return err
		}
		g.Output("y", y)
		g.Output("loss", loss)
		g.Output("mean", n.out.BN[0].BatchMean)
		g.Output("var", n.out.BN[0].BatchV)
		for i, name := range []string{"dx", "dgamma", "dbeta"} {
			g.Output(name, grads[i])
		}
		return nil
	})
	if err != nil {
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

// TestFusedBatchNormMatchesDecomposed: the ai.cardseg operators (CPU kernels) against the
// FP16 batch norm written in ONNX operators, which TestBatchNormHalfMatchesFloat ties to the
// float32 layer: outputs, statistics and gradients. Two shapes: one with a plane smaller than
// a GPU block, one whose channels split into several partial sums.
func TestFusedBatchNormMatchesDecomposed(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	for _, shape := range []graphs.Shape{{2, 3, 4, 5}, {2, 4, 64, 80}} {
		x, gamma, beta, w := fusedBNData(shape, 3)
		in := fusedInputs(shape, x, gamma, beta)
		res := map[bool]map[string]*runtime.Tensor{}
		for _, fused := range []bool{false, true} {
			s, err := runtime.NewDeviceSession("bn_fused", fusedBNModel(t, shape, fused, w),
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
		for _, k := range []string{"y", "loss", "mean", "var", "dx", "dgamma", "dbeta"} {
			d, m := maxDiff(runtime.Data[float32](res[true][k]), runtime.Data[float32](res[false][k]))
			if d > 2e-3*m {
				t.Errorf("%v: %s differs by %.3g (magnitude %.3g)", shape, k, d, m)
			} else {
				t.Logf("%v: %s within %.2e of its magnitude", shape, k, d/m)
			}
		}
	}
}

// TestFusedBatchNormGradientFiniteDifferences checks BatchNormTrain16Grad against central
// differences of the fused forward (CPU kernels). The inputs are float16-exact and the steps
// powers of two, so every perturbed input is exact; what remains is the rounding of y to
// float16, kept small by a small layer. The loss is linear in γ and β, so their differences
// have no truncation error and take a large step.
func TestFusedBatchNormGradientFiniteDifferences(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 2, 3, 3}
	x, gamma, beta, w := fusedBNData(shape, 5)
	s, err := runtime.NewDeviceSession("bn_fused", fusedBNModel(t, shape, true, w),
		runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1, CustomOps: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
		d, m := maxDiff(got, fd)
		if d > 0.05*m || m == 0 {
			t.Errorf("%s: analytic %v, finite differences %v (worst difference %.3g of %.3g)", name, got, fd, d, m)
		} else {
			t.Logf("%s: within %.2e of the largest entry", name, d/m)
		}
	}
	check("dx", x, 1.0/32, func(p []float32) float64 { return loss(p, gamma, beta) })
	check("dgamma", gamma, 0.5, func(p []float32) float64 { return loss(x, p, beta) })
	check("dbeta", beta, 0.5, func(p []float32) float64 { return loss(x, gamma, p) })
}

// TestFusedBatchNormCUDA runs the fused operators' CUDA kernels against their CPU kernels on
// a shape with several partial sums per channel and one with many channels. Needs a GPU.
func TestFusedBatchNormCUDA(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	if r := runtime.CheckCUDA(); !r.Usable {
		t.Skip("no usable CUDA: " + r.Problem)
	}
	for _, shape := range []graphs.Shape{{4, 16, 120, 160}, {8, 960, 15, 20}, {2, 3, 5, 7}} {
		x, gamma, beta, w := fusedBNData(shape, 11)
		in := fusedInputs(shape, x, gamma, beta)
		m := fusedBNModel(t, shape, true, w)
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
		for _, k := range []string{"y", "loss", "mean", "var", "dx", "dgamma", "dbeta"} {
			d, m := maxDiff(runtime.Data[float32](res[runtime.ProviderCUDA][k]), runtime.Data[float32](res[runtime.ProviderCPU][k]))
			if d > 2e-3*m {
				t.Errorf("%v: CUDA %s differs from the CPU's by %.3g (magnitude %.3g)", shape, k, d, m)
			} else {
				t.Logf("%v: CUDA %s within %.2e of the CPU's", shape, k, d/m)
			}
		}
	}
}
