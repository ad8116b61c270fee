package step_test

import (
	"math"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// blockDiagLayers counts the weight gradients a step graph takes in the block-diagonal form:
// the Where that keeps the diagonal blocks of the whole batch's product, [N, A, N, B].
func blockDiagLayers(g *graphs.Graph, n int64) int {
	k := 0
	for _, nd := range g.Nodes() {
		if nd.Op != "Where" || len(nd.Inputs) != 3 {
			continue
		}
		if s := nd.Inputs[0].Shape(); len(s) == 4 && s[0] == n && s[1] == 1 && s[2] == n && s[3] == 1 {
			k++
		}
	}
	return k
}

// TestWeightGradBlockDiag: the whole network's gradients with the weight gradients of the
// stem and the thin 1×1 layers taken as one product of the batch (WeightGradProduct
// "blockdiag", the depthwise layers' form "gather" as on the GPU) equal the default ones
// within float32 summation order, and the form goes to the layers it is for: at batch 8 and
// 480×640 the stem and the nine 1×1 layers with small weights at 240×320 (2), 120×160 (4) and
// 60×80 (a projection and the head's two classifiers); the others keep their products.
func TestWeightGradBlockDiag(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	big := step.Config{Arch: a, Batch: 8, Height: 480, Width: 640, Loss: step.DefaultLoss, Adam: step.DefaultAdamW, FP16: true,
		DepthwiseWeightGrad: "gather", WeightGradProduct: "blockdiag"}
	g, err := step.TrainStep(big)
	if err != nil {
		t.Fatal(err)
	}
	if k := blockDiagLayers(g, 8); k != 10 {
		t.Errorf("batch 8, 480×640: %d layers in the block-diagonal form, want 10", k)
	}

	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	const n, h, w = 2, 128, 192
	st := newTrainState(a, n, h, w, 3)
	feeds := map[string]*runtime.Tensor{
		step.InputImage:  runtime.MustNew([]int64{n, 3, h, w}, st.img),
		step.InputTarget: runtime.MustNew([]int64{n, h, w}, st.target),
	}
	for _, p := range a.Params() {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), st.w.Tensors[p.Name])
	}
	var res [2]map[string]*runtime.Tensor
	for i, form := range []string{"batched", "blockdiag"} {
		c := step.Config{Arch: a, Batch: n, Height: h, Width: w, Loss: step.DefaultLoss, Adam: step.DefaultAdamW, DepthwiseWeightGrad: "gather", WeightGradProduct: form}
		g, err := step.GradGraph(c)
		if err == nil && form == "blockdiag" {
			if k := blockDiagLayers(g, n); k != 3 { // the stem and the two 1×1 layers at 64×96
				t.Errorf("batch 2, 128×192: %d layers in the block-diagonal form, want 3", k)
			}
		}
		res[i] = runGraph(t, g, err, feeds)
	}
	compared := 0
	for name, want := range res[0] {
		if !strings.HasPrefix(name, "grad.") {
			continue
		}
		got := runtime.Data[float32](res[1][name])
		var d2, w2 float64
		for i, v := range runtime.Data[float32](want) {
			d := float64(got[i] - v)
			d2 += d * d
			w2 += float64(v) * float64(v)
		}
		if e := math.Sqrt(d2 / math.Max(w2, 1e-30)); !(e <= 1e-5) {
			t.Errorf("%s: blockdiag differs from batched by %.2e (relative L2)", name, e)
		}
		compared++
	}
	if compared < 150 {
		t.Fatalf("compared %d gradients", compared)
	}
}
