package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// seModel builds, on x float32 [shape] cast to float16, the FP16 squeeze-and-excitation block
// of Train mode (Options.FusedSE or Mul) with its fully connected layers' parameters as inputs,
// and the loss Σ w·y (y cast to float32); outputs y, loss and the gradients for x and the four
// parameters.
func seModel(t *testing.T, shape graphs.Shape, sq int64, fused bool, w []float32) []byte {
	t.Helper()
	c := shape[1]
	g := graphs.New("se")
	return buildModel(t, g, func() error {
		x := g.Input("x", graphs.Float, shape)
		ps := []*graphs.Value{
			g.Input("fc1.weight", graphs.Float, graphs.Shape{sq, c, 1, 1}), g.Input("fc1.bias", graphs.Float, graphs.Shape{sq}),
			g.Input("fc2.weight", graphs.Float, graphs.Shape{c, sq, 1, 1}), g.Input("fc2.bias", graphs.Float, graphs.Shape{c}),
		}
		src := fixedSource{"se.fc1.weight": ps[0], "se.fc1.bias": ps[1], "se.fc2.weight": ps[2], "se.fc2.bias": ps[3]}
		n := &net{g: g, src: src, mode: Train, opts: Options{FusedSE: fused}, out: &Output{}}
		y := graphs.Cast(n.squeezeExcite("se", graphs.Cast(x, graphs.Float16), int(c), int(sq)), graphs.Float)
		loss := graphs.ReduceSum(graphs.Mul(y, g.InitFloat("w", shape, w)), false)
		grads, err := graphs.Grad(loss, append([]*graphs.Value{x}, ps...))
		if err != nil {
			return err
		}
		g.Output("y", y)
		g.Output("loss", loss)
		for i, name := range []string{"dx", "dfc1w", "dfc1b", "dfc2w", "dfc2b"} {
			g.Output(name, grads[i])
		}
		return nil
	})
}

// seInputs: x around 1 (the block follows an activation), and fully connected weights and
// biases scaled by their fan-in so that every ReLU input is positive and every hard sigmoid
// input inside its slope: the block is smooth there, and two runs that round differently
// differ by their rounding alone, not by an activation that one of them takes past its kink
// (with weights of unit range the hard sigmoid's inputs reach ±45 at 960 channels, and one
// flipped derivative moves the first layer's weight gradient by more than 5%). It fails the
// test when the drawn inputs come within a margin of a kink.
func seInputs(t *testing.T, shape graphs.Shape, sq int64, seed uint64) map[string]*runtime.Tensor {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	n, c, hw := shape[0], shape[1], shape[2]*shape[3]
	vals := func(n int64, lo, hi float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = lo + (hi-lo)*r.Float32()
		}
		return v
	}
	a1, a2 := 0.5/float32(math.Sqrt(float64(c))), 0.4/float32(math.Sqrt(float64(sq)))
	x := vals(shape.Size(), -0.5, 2.5)
	w1, b1 := vals(sq*c, -a1, a1), vals(sq, 1.5, 2)
	w2, b2 := vals(c*sq, -a2, a2), vals(c, -0.5, 0.5)
	for i := range n {
		pool := make([]float64, c)
		for ch := range c {
			for _, v := range x[(i*c+ch)*hw : (i*c+ch+1)*hw] {
				pool[ch] += float64(v)
			}
			pool[ch] /= float64(hw)
		}
		h := make([]float64, sq)
		for j := range sq {
			h[j] = float64(b1[j])
			for ch := range c {
				h[j] += float64(w1[j*c+ch]) * pool[ch]
			}
			if h[j] < 0.05 {
				t.Fatalf("seInputs(%v, seed %d): fc1 output %.3g of image %d is within 0.05 of the ReLU's kink", shape, seed, h[j], i)
			}
		}
		for ch := range c {
			z := float64(b2[ch])
			for j := range sq {
				z += float64(w2[ch*sq+j]) * h[j]
			}
			if math.Abs(z) > 2.95 {
				t.Fatalf("seInputs(%v, seed %d): fc2 output %.3g of image %d is within 0.05 of the hard sigmoid's kinks at ±3", shape, seed, z, i)
			}
		}
	}
	return map[string]*runtime.Tensor{
		"x":          runtime.MustNew([]int64(shape), x),
		"fc1.weight": runtime.MustNew([]int64{sq, c, 1, 1}, w1),
		"fc1.bias":   runtime.MustNew([]int64{sq}, b1),
		"fc2.weight": runtime.MustNew([]int64{c, sq, 1, 1}, w2),
		"fc2.bias":   runtime.MustNew([]int64{c}, b2),
	}
}

func seWeights(shape graphs.Shape, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 3))
	w := make([]float32, shape.Size())
	for i := range w {
		w[i] = r.Float32()*2 - 1
	}
	return w
}

var seOutputs = []string{"y", "dx", "dfc1w", "dfc1b", "dfc2w", "dfc2b"}

// TestFusedSEMatchesMul: the squeeze-and-excitation block with ScaleChannels (ChannelScale16
// and ChannelDot16, CPU kernels; the mean pool's gradient folded into the input gradient's
// shift) against the block with Mul, in ONNX Runtime on the CPU: outputs and all gradients.
func TestFusedSEMatchesMul(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		shape graphs.Shape
		sq    int64
	}{{graphs.Shape{2, 8, 6, 5}, 8}, {graphs.Shape{3, 24, 16, 20}, 8}} {
		w := seWeights(tc.shape, 5)
		in := seInputs(t, tc.shape, tc.sq, 7)
		got := runOnce(t, seModel(t, tc.shape, tc.sq, true, w), runtime.ProviderCPU, in)
		want := runOnce(t, seModel(t, tc.shape, tc.sq, false, w), runtime.ProviderCPU, in)
		closeOutputs(t, tc.shape.String(), got, want, 2e-3, seOutputs...)
	}
}

// TestFusedSEGradientFiniteDifferences: ScaleChannels' gradient rule (x ⊙ s) against central
// differences in x and s. Bilinear, so a large step has no truncation error; inputs and
// weights are float16-exact and small, so the products are exact too.
func TestFusedSEGradientFiniteDifferences(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	shape := graphs.Shape{2, 3, 4, 5}
	r := rand.New(rand.NewPCG(21, 22))
	x, s, w := make([]float32, shape.Size()), make([]float32, 6), make([]float32, shape.Size())
	for i := range x {
		x[i] = float32(r.IntN(17)-8) / 4
		w[i] = float32(r.IntN(5) - 2)
	}
	for i := range s {
		s[i] = float32(r.IntN(9)) / 8
	}
	g := graphs.New("scale_channels")
	m := buildModel(t, g, func() error {
		xv := g.Input("x", graphs.Float, shape)
		sv := g.Input("s", graphs.Float, graphs.Shape{2, 3, 1, 1})
		y := graphs.Cast(graphs.ScaleChannels(graphs.Cast(xv, graphs.Float16), graphs.Cast(sv, graphs.Float16)), graphs.Float)
		loss := graphs.ReduceSum(graphs.Mul(y, g.InitFloat("w", shape, w)), false)
		grads, err := graphs.Grad(loss, []*graphs.Value{xv, sv})
		if err != nil {
			return err
		}
		g.Output("loss", loss)
		g.Output("dx", grads[0])
		g.Output("ds", grads[1])
		return nil
	})
	run := func(x, s []float32) map[string]*runtime.Tensor {
		return runOnce(t, m, runtime.ProviderCPU, map[string]*runtime.Tensor{
			"x": runtime.MustNew([]int64(shape), x), "s": runtime.MustNew([]int64{2, 3, 1, 1}, s)})
	}
	base := run(x, s)
	loss := func(x, s []float32) float32 { return runtime.Data[float32](run(x, s)["loss"])[0] }
	for _, v := range []struct {
		name string
		at   func(p []float32) float32
		in   []float32
	}{{"dx", func(p []float32) float32 { return loss(p, s) }, x}, {"ds", func(p []float32) float32 { return loss(x, p) }, s}} {
		closeTo(t, v.name, runtime.Data[float32](base[v.name]), centralDiffs(v.in, v.at, 0.5), 1e-3)
	}
}

// channelOpsModel: ChannelScale16(x, s, t) and ChannelDot16(x, b) alone, float32 in and out
// (the casts to float16 and back are exact for float16-exact inputs).
func channelOpsModel(t *testing.T, shape graphs.Shape) []byte {
	t.Helper()
	per := graphs.Shape{shape[0], shape[1], 1, 1}
	g := graphs.New("channel_ops")
	return buildModel(t, g, func() error {
		half := func(name string, s graphs.Shape) *graphs.Value {
			return graphs.Cast(g.Input(name, graphs.Float, s), graphs.Float16)
		}
		x, b := half("x", shape), half("b", shape)
		g.Output("y", graphs.Cast(graphs.ChannelScale16(x, half("s", per), half("t", per)), graphs.Float))
		g.Output("dot", graphs.Cast(graphs.ChannelDot16(x, b), graphs.Float))
		return nil
	})
}

// channelOpsInputs: float16-exact values, distinct per plane, so that a kernel that mixes up
// planes or misses part of one is far off.
func channelOpsInputs(shape graphs.Shape, seed uint64) map[string]*runtime.Tensor {
	r := rand.New(rand.NewPCG(seed, 5))
	vals := func(n int64, scale float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.IntN(257)-128) / 128 * scale
		}
		return v
	}
	per := shape[0] * shape[1]
	return map[string]*runtime.Tensor{
		"x": runtime.MustNew([]int64(shape), vals(shape.Size(), 2)),
		"b": runtime.MustNew([]int64(shape), vals(shape.Size(), 1)),
		"s": runtime.MustNew([]int64{shape[0], shape[1], 1, 1}, vals(per, 1)),
		"t": runtime.MustNew([]int64{shape[0], shape[1], 1, 1}, vals(per, 0.5)),
	}
}

// TestFusedSECUDA: ChannelScale16 and ChannelDot16 alone, then the squeeze-and-excitation
// block with ScaleChannels, CUDA kernels against the CPU kernels, on the network's largest
// blocks (960 channels at 30×40, 120 at 60×80). Needs a GPU.
func TestFusedSECUDA(t *testing.T) {
	requireCUDA(t)
	// The two operators alone: the 8-wide kernels (planes of a multiple of 8 elements, the
	// network's) and the one-element ones.
	for _, shape := range []graphs.Shape{{8, 960, 30, 40}, {8, 120, 60, 80}, {2, 8, 6, 5}, {3, 5, 7, 9}} {
		m := channelOpsModel(t, shape)
		in := channelOpsInputs(shape, 13)
		got := runOnce(t, m, runtime.ProviderCUDA, in)
		want := runOnce(t, m, runtime.ProviderCPU, in)
		closeOutputs(t, fmt.Sprintf("%v: CUDA ChannelScale16", shape), got, want, 1e-3, "y")
		closeOutputs(t, fmt.Sprintf("%v: CUDA ChannelDot16", shape), got, want, 2e-3, "dot")
	}
	// The block, in its smooth region (seInputs).
	for _, tc := range []struct {
		shape graphs.Shape
		sq    int64
	}{{graphs.Shape{8, 960, 30, 40}, 240}, {graphs.Shape{8, 120, 60, 80}, 32}, {graphs.Shape{2, 8, 6, 5}, 8}} {
		w := seWeights(tc.shape, 9)
		in := seInputs(t, tc.shape, tc.sq, 11)
		m := seModel(t, tc.shape, tc.sq, true, w)
		got := runOnce(t, m, runtime.ProviderCUDA, in)
		want := runOnce(t, m, runtime.ProviderCPU, in)
		closeOutputs(t, fmt.Sprintf("%v: CUDA", tc.shape), got, want, 2e-3, seOutputs...)
	}
}
