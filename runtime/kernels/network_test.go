package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
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
		FP16: true, FusedBN: true, FusedActivation: true, FusedDepthwise: true, DepthwiseWeightGrad: "fused"}
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
	for _, op := range []string{"BatchNormTrain16", "BatchNormTrain16Grad", "DepthwiseConv16", "DepthwiseConvGrad16", "DepthwiseWeightGrad16"} {
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
		x := bnInput(r, b)
		gm, be := floats(r, b.C, 0.5, 1.5), floats(r, b.C, -0.5, 0.5)
		if nd.Op == "BatchNormTrain16" {
			y, m, v, err := BNForward(GPU, b, x, gm, be)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			wy, wm, wv, err := BNForward(CPU, b, x, gm, be)
			if err != nil {
				t.Fatal(err)
			}
			agree(t, name+" y", toF32(y), toF32(wy), 1.0/1024, 1e-3)
			agree(t, name+" mean", f32to64(m), f32to64(wm), 1e-5, 1e-5)
			agree(t, name+" var", f32to64(v), f32to64(wv), 1e-5, 1e-5)
			return
		}
		_, wm, wv, err := BNForward(CPU, b, x, gm, be)
		if err != nil {
			t.Fatal(err)
		}
		dy := halves(r, len(x), 0, 1)
		dx, dg, db, err := BNBackward(GPU, b, dy, x, gm, be, wm, wv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wdx, wdg, wdb, err := BNBackward(CPU, b, dy, x, gm, be, wm, wv)
		if err != nil {
			t.Fatal(err)
		}
		agree(t, name+" dx", toF32(dx), toF32(wdx), 1.0/1024, 1e-3)
		agree(t, name+" dgamma", f32to64(dg), f32to64(wdg), 1e-4, 1e-4)
		agree(t, name+" dbeta", f32to64(db), f32to64(wdb), 1e-4, 1e-4)
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
			splits := int(attr(t, nd, "splits"))
			got, err := DWGrad(GPU, g, splits, x, dy)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want, err := DWGrad(CPU, g, splits, x, dy)
			if err != nil {
				t.Fatal(err)
			}
			agree(t, name+" dW", toF32(got), toF32(want), 1.0/1024, 1e-3)
			return
		}
		grad := nd.Op == "DepthwiseConvGrad16"
		in := x
		if grad {
			in = dy
		}
		fw := halves(r, g.C*g.K*g.K, 0, 0.5)
		got, err := DWConv(GPU, g, grad, in, fw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := DWConv(CPU, g, grad, in, fw)
		if err != nil {
			t.Fatal(err)
		}
		agree(t, name, toF32(got), toF32(want), 1.0/1024, 1e-3)
	default:
		t.Errorf("%s: an ai.cardseg operator this test does not know", name)
	}
}
