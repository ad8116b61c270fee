package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// TestNetworkOperators runs every ai.cardseg node of the FP16 train step (all fused operators
// on, as the GPU trains) through the emulated CUDA kernels and the CPU kernels, with each
// node's own shapes and attributes: every layer geometry the GPU meets, launch choices
// included, for the current kernels and the first ones (CARDSEG_CUDA_KERNELS=scalar). Batch 2 at 64×96 by default; CARDSEG_EMU_SIZE=NxHxW (e.g. 8x144x192, the CPU
// preset's training size, a few minutes) runs another.
func TestNetworkOperators(t *testing.T) {
	n, h, w := 2, 64, 96
	if s := os.Getenv("CARDSEG_EMU_SIZE"); s != "" {
		if _, err := fmt.Sscanf(s, "%dx%dx%d", &n, &h, &w); err != nil {
			t.Fatalf("CARDSEG_EMU_SIZE=%s: want NxHxW", s)
		}
	}
	cfg := step.Config{Arch: model.MobileNetV3Large(1, 2), Batch: n, Height: h, Width: w, Loss: step.DefaultLoss, Adam: step.DefaultAdamW,
		FP16: true, FusedBN: true, FusedActivation: true, FusedDepthwise: true, DepthwiseWeightGrad: "fused", FusedPack: true, FusedAdam: true, FusedLoss: true, FusedSE: true}
	g, err := step.TrainStep(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ScalarOnly(false)
	for _, scalar := range []bool{false, true} {
		ScalarOnly(scalar)
		t.Run(fmt.Sprintf("scalar=%v", scalar), func(t *testing.T) { networkOperators(t, g) })
	}
}

func networkOperators(t *testing.T, g *graphs.Graph) {
	r := rand.New(rand.NewPCG(11, 12))
	seen := map[string]bool{}
	ops := map[string]int{}
	for _, nd := range g.Nodes() {
		if nd.Domain != graphs.CardsegDomain {
			continue
		}
		key := nd.Op
		for _, in := range nd.Inputs {
			key += fmt.Sprint(in.Shape())
		}
		key += fmt.Sprint(nd.Attrs)
		if seen[key] {
			continue
		}
		seen[key] = true
		ops[nd.Op]++
		runNode(t, r, nd)
	}
	for _, op := range []string{"BatchNormTrain16", "BatchNormTrain16Grad", "DepthwiseConv16", "DepthwiseConvGrad16", "DepthwiseWeightGrad16",
		"PackRows", "UnpackRows", "UnpackRows16", "AdamW", "SegLoss16", "SegLoss16Grad", "ChannelScale16", "ChannelDot16"} {
		if ops[op] == 0 {
			t.Errorf("no %s node in the FP16 train step", op)
		}
	}
	t.Logf("distinct nodes: %v", ops)
}

func attr(t *testing.T, nd *graphs.Node, name string) int64 {
	t.Helper()
	for _, a := range nd.Attrs {
		if a.Name == name {
			if v, ok := a.Value.(int64); ok {
				return v
			}
		}
	}
	t.Fatalf("%s %s: no int attribute %s", nd.Op, nd.Name, name)
	return 0
}

func attrFloat(t *testing.T, nd *graphs.Node, name string) float32 {
	t.Helper()
	for _, a := range nd.Attrs {
		if a.Name == name {
			switch v := a.Value.(type) {
			case float32:
				return v
			case float64:
				return float32(v)
			}
		}
	}
	t.Fatalf("%s %s: no float attribute %s", nd.Op, nd.Name, name)
	return 0
}

// runNode feeds random data of the node's shapes to both kernels and compares their outputs.
func runNode(t *testing.T, r *rand.Rand, nd *graphs.Node) {
	t.Helper()
	name := fmt.Sprintf("%s %s %v", nd.Op, nd.Name, nd.Inputs[0].Shape())
	shape := nd.Inputs[0].Shape()
	switch nd.Op {
	case "BatchNormTrain16", "BatchNormTrain16Grad":
		x4 := shape
		if nd.Op == "BatchNormTrain16Grad" {
			x4 = nd.Inputs[1].Shape()
		}
		b := BN{N: int(x4[0]), C: int(x4[1]), HW: int(x4[2] * x4[3]), Splits: int(attr(t, nd, "splits")), Eps: attrFloat(t, nd, "epsilon"),
			Act: int(attr(t, nd, "activation"))}
		compareBN(t, r, name, b, nd.Op == "BatchNormTrain16", nd.Op == "BatchNormTrain16Grad")
	case "DepthwiseConv16", "DepthwiseConvGrad16", "DepthwiseWeightGrad16":
		k := int(attr(t, nd, "kh"))
		if kw := int(attr(t, nd, "kw")); kw != k {
			t.Fatalf("%s: kernel %dx%d", name, k, kw)
		}
		g := Geo{K: k, SH: int(attr(t, nd, "stride_h")), SW: int(attr(t, nd, "stride_w")), DH: int(attr(t, nd, "dilation_h")),
			DW: int(attr(t, nd, "dilation_w")), PH: int(attr(t, nd, "pad_top")), PW: int(attr(t, nd, "pad_left")), N: int(shape[0]), C: int(shape[1])}
		switch nd.Op {
		case "DepthwiseConv16":
			g.H, g.W, g.Ho, g.Wo = int(shape[2]), int(shape[3]), int(attr(t, nd, "out_h")), int(attr(t, nd, "out_w"))
		case "DepthwiseConvGrad16":
			g.Ho, g.Wo, g.H, g.W = int(shape[2]), int(shape[3]), int(attr(t, nd, "in_h")), int(attr(t, nd, "in_w"))
		default:
			dys := nd.Inputs[1].Shape()
			g.H, g.W, g.Ho, g.Wo = int(shape[2]), int(shape[3]), int(dys[2]), int(dys[3])
		}
		x := halves(r, g.N*g.C*g.H*g.W, 0, 1)
		dy := halves(r, g.N*g.C*g.Ho*g.Wo, 0, 1)
		if nd.Op == "DepthwiseWeightGrad16" {
			compareDWGrad(t, name, g, int(attr(t, nd, "splits")), x, dy)
			return
		}
		grad := nd.Op == "DepthwiseConvGrad16"
		in := x
		if grad {
			in = dy
		}
		compareDWConv(t, name, g, grad, in, halves(r, g.C*g.K*g.K, 0, 0.5))
	case "PackRows", "UnpackRows", "UnpackRows16":
		comparePacking(t, r, name, nd)
	case "AdamW":
		compareAdamW(t, r, name, nd)
	case "SegLoss16", "SegLoss16Grad":
		compareSegLoss(t, r, name, nd)
	case "ChannelScale16", "ChannelDot16":
		compareChannel(t, r, name, nd)
	default:
		t.Errorf("%s: an ai.cardseg operator this test does not know", name)
	}
}

// comparePacking runs a packing node with random tensors of its shapes and types through the
// emulated kernels and the CPU kernels: the same bits.
func comparePacking(t *testing.T, r *rand.Rand, name string, nd *graphs.Node) {
	t.Helper()
	tensors := nd.Inputs
	if nd.Op != "PackRows" {
		tensors = nd.Outputs
	}
	ts := make([]Packed, len(tensors))
	for j, v := range tensors {
		if v.DType() == graphs.Float16 {
			ts[j].Half = halves(r, int(v.Shape().Size()), 0, 1)
		} else {
			ts[j].Float = floats(r, int(v.Shape().Size()), -1, 1)
		}
	}
	if nd.Op == "PackRows" {
		total := int(nd.Outputs[0].Shape().Size())
		cpu, err := Pack(CPU, ts, total)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		gpu, err := Pack(GPU, ts, total)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if i := firstDiff(gpu, cpu); i >= 0 {
			t.Errorf("%s: element %d of the matrix differs", name, i)
		}
		return
	}
	m := floats(r, int(nd.Inputs[0].Shape().Size()), -3, 3)
	cpu, err := Unpack(CPU, m, ts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	gpu, err := Unpack(GPU, m, ts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for j := range cpu {
		if !slices.Equal(cpu[j].Half, gpu[j].Half) || firstDiff(cpu[j].Float, gpu[j].Float) >= 0 {
			t.Errorf("%s: output %d differs", name, j)
		}
	}
}

// compareAdamW runs the AdamW node on random parameters, gradients and moments of its shapes,
// stepping and skipping, through the emulated kernel and the CPU kernel: the same bits.
func compareAdamW(t *testing.T, r *rand.Rand, name string, nd *graphs.Node) {
	t.Helper()
	total, P := int(nd.Inputs[0].Shape().Size()), int(nd.Inputs[2].Shape().Size())
	a := Adam{P: floats(r, total, -1, 1), G: floats(r, total, -1e-2, 1e-2), M: floats(r, P, -1e-3, 1e-3), V: floats(r, P, 0, 1e-5),
		Scalars: [4]float32{0.99999, 3e-3, 1.2, 1.0 / 65536}, Beta1: attrFloat(t, nd, "beta1"), Beta2: attrFloat(t, nd, "beta2"),
		Eps: attrFloat(t, nd, "epsilon")}
	for _, skip := range []bool{false, true} {
		a.Skip = skip
		cp, cm, cv, err := AdamW(CPU, a)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		gp, gm, gv, err := AdamW(GPU, a)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if firstDiff(gp, cp) >= 0 || firstDiff(gm, cm) >= 0 || firstDiff(gv, cv) >= 0 {
			t.Errorf("%s (skip %v): the emulated kernel and the CPU kernel differ", name, skip)
		}
	}
}

// compareSegLoss runs a loss node (its sums, or its gradient) on random logits and labels of
// its shapes through the emulated kernels and the CPU kernels.
func compareSegLoss(t *testing.T, r *rand.Rand, name string, nd *graphs.Node) {
	t.Helper()
	zs := nd.Inputs[0].Shape()
	n, k, hw := int(zs[0]), int(zs[1]), int(zs[2]*zs[3])
	z := halves(r, n*k*hw, 0, 3)
	y := make([]int64, n*hw)
	for i := range y {
		y[i] = int64(r.IntN(k))
	}
	if nd.Op == "SegLoss16" {
		want, err := SegLoss(CPU, z, y, n, k, hw, int(attr(t, nd, "splits")))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := SegLoss(GPU, z, y, n, k, hw, int(attr(t, nd, "splits")))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for j := range want {
			agree(t, fmt.Sprintf("%s sum %d", name, j), f32to64(got[j]), f32to64(want[j]), 1e-5, 1e-6)
		}
		return
	}
	dce, dinter, dp := floats(r, n, 0.5, 1), floats(r, n, -2, -1), floats(r, n, 0.1, 0.5)
	want, err := SegLossGrad(CPU, z, y, dce, dinter, dp, n, k, hw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	got, err := SegLossGrad(GPU, z, y, dce, dinter, dp, n, k, hw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	agree(t, name, toF32(got), toF32(want), halfRel, 2e-5)
}

// compareChannel runs a squeeze-and-excitation node (ChannelScale16 or ChannelDot16) with random
// data of its shapes through the emulated kernels and the CPU kernels: the scale bit for bit,
// the sums within float16 rounding.
func compareChannel(t *testing.T, r *rand.Rand, name string, nd *graphs.Node) {
	t.Helper()
	shape := nd.Inputs[0].Shape()
	p, hw := int(shape[0]*shape[1]), int(shape[2]*shape[3])
	x := halves(r, p*hw, 0.2, 1)
	if nd.Op == "ChannelDot16" {
		b := halves(r, p*hw, 0, 1)
		want, err := ChannelDot(CPU, x, b, p, hw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ChannelDot(GPU, x, b, p, hw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		agree(t, name, toF32(got), toF32(want), halfRel, 1e-4)
		return
	}
	s, sh := halves(r, p, 0.5, 0.3), halves(r, p, 0, 0.01)
	want, err := ChannelScale(CPU, x, s, sh, p, hw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ChannelScale(GPU, x, s, sh, p, hw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: element %d is %#04x, want %#04x", name, i, got[i], want[i])
		}
	}
}
