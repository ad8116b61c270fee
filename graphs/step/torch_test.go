package step_test

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

const python = "/usr/bin/python3"

func requireTorch(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("PyTorch comparison skipped in -short mode")
	}
	if err := exec.Command(python, "-c", "import torch, torchvision").Run(); err != nil {
		t.Skip("Debian python3-torch / python3-torchvision not installed")
	}
}

// testBatch makes a normalised image batch and a target with card-like rectangles.
func testBatch(n, h, w int, seed uint64) ([]float32, []int64) {
	r := rand.New(rand.NewPCG(seed, 7))
	img := make([]float32, n*3*h*w)
	for i := range img {
		img[i] = float32(r.NormFloat64())
	}
	tg := make([]int64, n*h*w)
	for b := 0; b < n; b++ {
		y0, x0 := r.IntN(h/2), r.IntN(w/2)
		for y := y0; y < y0+h/3; y++ {
			for x := x0; x < x0+w/3; x++ {
				tg[(b*h+y)*w+x] = 1
			}
		}
	}
	return img, tg
}

// perturbedWeights makes BN statistics and affine parameters non-trivial so that eval mode and
// folding are really exercised.
func perturbedWeights(a model.Arch, seed uint64) *model.Weights {
	w := model.Init(a, seed)
	r := rand.New(rand.NewPCG(seed, 99))
	for _, p := range a.Params() {
		d := w.Tensors[p.Name]
		switch p.Kind {
		case model.BNWeight:
			for i := range d {
				d[i] = float32(0.5 + r.Float64())
			}
		case model.BNBias, model.BNMean:
			for i := range d {
				d[i] = float32(0.2 * r.NormFloat64())
			}
		case model.BNVar:
			for i := range d {
				d[i] = float32(0.5 + r.Float64())
			}
		}
	}
	return w
}

func runTorch(t *testing.T, a model.Arch, w *model.Weights, img []float32, tg []int64, n, h, wd int) safetensors.File {
	t.Helper()
	dir := t.TempDir()
	wp, bp, op := filepath.Join(dir, "w.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "out.safetensors")
	if err := a.SaveWeights(wp, w, nil); err != nil {
		t.Fatal(err)
	}
	it, _ := safetensors.FromFloat32(img, int64(n), 3, int64(h), int64(wd))
	tt, _ := safetensors.FromInt64(tg, int64(n), int64(h), int64(wd))
	if err := safetensors.WriteFile(bp, safetensors.File{Tensors: map[string]safetensors.Tensor{"image": it, "target": tt}}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, filepath.Join("testdata", "torch_reference.py"), wp, bp, op).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("torch reference: %v\n%s", err, out)
	}
	f, err := safetensors.ReadFile(op)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func f32(t *testing.T, f safetensors.File, name string) []float32 {
	t.Helper()
	tt, ok := f.Tensors[name]
	if !ok {
		t.Fatalf("reference lacks %s", name)
	}
	d, err := tt.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// diffAndMag are max|got−want| and max|want|.
func diffAndMag(got, want []float32) (diff, mag float64) {
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i])-float64(want[i])))
		mag = math.Max(mag, math.Abs(float64(want[i])))
	}
	return diff, mag
}

// maxRelErr is max|a-b| / max|b| (the tensor's own scale).
func maxRelErr(a, b []float32) float64 {
	d, m := diffAndMag(a, b)
	if m == 0 {
		return d
	}
	return d / m
}

// batchFeeds are a forward graph's inputs: the batch and every network tensor of w.
func batchFeeds(a model.Arch, w *model.Weights, img []float32, tg []int64, n, h, wd int64) map[string]*runtime.Tensor {
	feeds := map[string]*runtime.Tensor{
		step.InputImage:  runtime.MustNew([]int64{n, 3, h, wd}, img),
		step.InputTarget: runtime.MustNew([]int64{n, h, wd}, tg),
	}
	for _, p := range a.Params() {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), w.Tensors[p.Name])
	}
	return feeds
}

// runGraph runs g (built with error buildErr) once on the CPU provider.
func runGraph(t *testing.T, g *graphs.Graph, buildErr error, feeds map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.NewSession(g.Name, b, runtime.SessionOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(feeds)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runGradGraph builds cfg's forward/backward graph and runs it on feeds.
func runGradGraph(t *testing.T, cfg step.Config, feeds map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	g, err := step.GradGraph(cfg)
	return runGraph(t, g, err, feeds)
}

// TestGradientsMatchPyTorch compares loss and every parameter gradient of a training-mode
// forward/backward with torchvision's model in float64 (tolerance 1e-3 of each tensor's max
// magnitude, loss 1e-4), and the inference model with torchvision's eval forward (1e-4 rel).
func TestGradientsMatchPyTorch(t *testing.T) {
	requireTorch(t)
	const n, h, wd = 2, 64, 96
	a := model.MobileNetV3Large(1, 2)
	cfg := step.Config{Arch: a, Batch: n, Height: h, Width: wd, Loss: step.DefaultLoss, Adam: step.DefaultAdamW}
	w := perturbedWeights(a, 3)
	img, tg := testBatch(n, h, wd, 5)
	ref := runTorch(t, a, w, img, tg, n, h, wd)

	feeds := batchFeeds(a, w, img, tg, n, h, wd)
	// The standard graph and, where this CPU has them, the one on ORT's blocked kernels.
	variants := []step.Config{cfg}
	if b := nchwcBlock(t); b > 0 {
		bc := cfg
		bc.NCHWcBlock = b
		variants = append(variants, bc)
	}
	var structural map[string]bool
	for _, vc := range variants {
		out := runGradGraph(t, vc, feeds)
		t.Logf("NCHWc block %d:", vc.NCHWcBlock)
		structural = compareGrads(t, a, ref, out)
	}

	// One train step: running statistics and AdamW against PyTorch. Adam's first step moves
	// each weight by about lr·sign(gradient), so the comparison takes the elements whose
	// gradient is at least 1% of its tensor's largest: there the sign is certain, and a wrong
	// moment, bias correction or decay shows up in full.
	tg2, err := step.TrainStep(cfg)
	feeds[step.InputLR] = runtime.Scalar[float32](1e-3)
	feeds[step.InputStep] = runtime.Scalar[float32](1)
	total := int64(a.TrainableCount())
	feeds[step.InputMomentM] = runtime.MustNew([]int64{total}, make([]float32, total))
	feeds[step.InputMomentV] = runtime.MustNew([]int64{total}, make([]float32, total))
	tout := runGraph(t, tg2, err, feeds)
	if got, want := float64(runtime.Data[float32](tout[step.OutLoss])[0]), float64(f32(t, ref, "loss")[0]); math.Abs(got-want) > 1e-4 {
		t.Errorf("train step loss %.7f, PyTorch %.7f", got, want)
	}
	var worstStat, worstParam float64
	for _, p := range a.Params() {
		got := runtime.Data[float32](tout[step.Next(p.Name)])
		want := f32(t, ref, p.Name+".next")
		switch {
		case p.Kind == model.BNMean || p.Kind == model.BNVar:
			e := maxRelErr(got, want)
			worstStat = math.Max(worstStat, e)
			if e > 1e-4 {
				t.Errorf("%s after one step: error %.2e of its magnitude", p.Name, e)
			}
		case !structural[p.Name]:
			// Compare the update (new − old) to PyTorch's, relative to lr.
			old := w.Tensors[p.Name]
			grad := f32(t, ref, "grad."+p.Name)
			var gmax float64
			for _, v := range grad {
				gmax = math.Max(gmax, math.Abs(float64(v)))
			}
			var d float64
			for i := range want {
				if math.Abs(float64(grad[i])) < 1e-2*gmax {
					continue
				}
				d = math.Max(d, math.Abs(float64(got[i]-old[i])-float64(want[i]-old[i])))
			}
			worstParam = math.Max(worstParam, d/1e-3)
			if d > 1e-3*1e-3 {
				t.Errorf("%s after one AdamW step differs from PyTorch by %.2e (lr 1e-3)", p.Name, d)
			}
		}
	}
	t.Logf("train step: running statistics within %.2e, AdamW updates within %.2e of lr", worstStat, worstParam)

	// Inference model (BN folded) against torchvision's eval forward.
	ig, err := step.Inference(cfg, w)
	iout := runGraph(t, ig, err, map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{n, 3, h, wd}, img)})
	if e := maxRelErr(runtime.Data[float32](iout[step.OutLogits]), f32(t, ref, "eval_logits")); e > 1e-4 {
		t.Errorf("inference logits differ from torchvision eval forward by %.2e of their magnitude", e)
	} else {
		t.Logf("inference vs torchvision eval: %.2e", e)
	}
}

// TestWeightGradFormulationsAgree: the whole network's gradients are the same, within float32
// rounding, whichever convolution weight-gradient formulation the graph uses (each has its
// own finite-difference cases in package graphs; this checks them wired into the network).
func TestWeightGradFormulationsAgree(t *testing.T) {
	const n, h, wd = 2, 64, 96
	a := model.MobileNetV3Large(1, 2)
	w := perturbedWeights(a, 3)
	img, tg := testBatch(n, h, wd, 5)
	feeds := batchFeeds(a, w, img, tg, n, h, wd)
	grads := func(form string) map[string]*runtime.Tensor {
		return runGradGraph(t, step.Config{Arch: a, Batch: n, Height: h, Width: wd, Loss: step.DefaultLoss, Adam: step.DefaultAdamW, DepthwiseWeightGrad: form}, feeds)
	}
	ref := grads("conv")
	var globalMax float64
	for _, p := range a.Params() {
		if p.Kind.Trainable() {
			for _, v := range runtime.Data[float32](ref["grad."+p.Name]) {
				globalMax = math.Max(globalMax, math.Abs(float64(v)))
			}
		}
	}
	forms := []string{"taps", "im2col", "gather"}
	block := nchwcBlock(t)
	if block > 0 {
		forms = append(forms, "nchwc")
	}
	for _, form := range forms {
		var out map[string]*runtime.Tensor
		if form == "nchwc" { // depthwise convolutions on ORT's blocked kernels, forward and backward
			out = runGradGraph(t, step.Config{Arch: a, Batch: n, Height: h, Width: wd, Loss: step.DefaultLoss, Adam: step.DefaultAdamW, NCHWcBlock: block}, feeds)
		} else {
			out = grads(form)
		}
		worst, worstName := 0.0, ""
		for _, p := range a.Params() {
			if !p.Kind.Trainable() {
				continue
			}
			diff, mag := diffAndMag(runtime.Data[float32](out["grad."+p.Name]), runtime.Data[float32](ref["grad."+p.Name]))
			// A structurally zero gradient (a bias before a training-mode batch norm) is
			// rounding noise whose pattern follows the forward's summation order: it must
			// stay below 1e-6 of the network's largest gradient (scaled to the same limit).
			e := diff / mag
			if mag < 1e-6*globalMax {
				e = diff / (1e-6 * globalMax) * 1e-4
			}
			if mag > 0 && e > worst {
				worst, worstName = e, p.Name
			}
		}
		t.Logf("%s: worst difference %.2e of the tensor's max (%s)", form, worst, worstName)
		if worst > 1e-4 {
			t.Errorf("%s gradients differ from conv's by %.2e of %s's max", form, worst, worstName)
		}
	}
}

// compareGrads checks the loss and every parameter gradient of out against PyTorch's ref and
// returns the parameters whose gradient is structurally zero.
func compareGrads(t *testing.T, a model.Arch, ref safetensors.File, out map[string]*runtime.Tensor) map[string]bool {
	t.Helper()
	for _, k := range []string{"loss", "loss_ce", "loss_dice"} {
		got, want := float64(runtime.Data[float32](out[k])[0]), float64(f32(t, ref, k)[0])
		if math.Abs(got-want) > 1e-4 {
			t.Errorf("%s = %.7f, PyTorch %.7f", k, got, want)
		}
	}
	// A bias feeding a training-mode batch norm has a gradient that is exactly zero (the mean
	// subtraction removes it): PyTorch's float64 gives ~1e-17 and our float32 ~1e-8, rounding
	// noise. Such structurally-zero tensors (reference below 1e-12 of the network's largest
	// gradient) must stay below 1e-6 of that largest gradient; all others within 1e-3 of their
	// own magnitude.
	var globalMax float64
	for _, p := range a.Params() {
		if p.Kind.Trainable() {
			for _, v := range f32(t, ref, "grad."+p.Name) {
				globalMax = math.Max(globalMax, math.Abs(float64(v)))
			}
		}
	}
	worst, worstName := 0.0, ""
	structural := map[string]bool{}
	for _, p := range a.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		diff, mag := diffAndMag(runtime.Data[float32](out["grad."+p.Name]), f32(t, ref, "grad."+p.Name))
		e := diff / mag
		if mag < 1e-12*globalMax {
			structural[p.Name] = true
			e = diff / (1e-6 * globalMax) * 1e-3 // scaled so that the same 1e-3 limit applies
		}
		if e > worst {
			worst, worstName = e, p.Name
		}
		if e > 1e-3 {
			t.Errorf("grad.%s: max error %.2e of its magnitude (%.2e, abs diff %.2e, global %.2e)", p.Name, e, mag, diff, globalMax)
		}
	}
	t.Logf("worst gradient error %.2e (%s)", worst, worstName)
	return structural
}

// nchwcBlock is the block size of ORT's NCHWc kernels on this CPU, 0 where there are none.
func nchwcBlock(t *testing.T) int64 {
	var b int64
	t.Run("nchwc probe", func(t *testing.T) { b = gradcheck.NCHWcBlock(t) })
	return b
}
