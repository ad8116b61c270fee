package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// eval of cardseg-ort's own inference model and checkpoint graph reads their metadata (input
// size, normalisation, logits) and agrees with the confusion counts the eval-step graph
// computes in-graph from the same weights, on images and masks at the model's size.
func TestEvalOwnModels(t *testing.T) {
	const h, w = 64, 96
	arch := model.MobileNetV3Large(1, 2)
	weights := model.Init(arch, 3)
	cfg := step.Config{Arch: arch, Batch: 1, Height: h, Width: w, Loss: step.DefaultLoss, Adam: step.DefaultAdamW}

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cards := []evalRect{{20, 8, 70, 56}, {0, 0, 48, 64}, {}, {10, 10, 90, 30}}
	for i, r := range cards {
		name := string(rune('a' + i))
		writePNGFile(t, filepath.Join(data, "test", "image", name+".png"), evalScene(w, h, r))
		writePNGFile(t, filepath.Join(data, "test", "mask", name+".png"), evalMask(w, h, evalRect{r.X0 + 4, r.Y0, r.X1 + 4, r.Y1}))
	}

	// The eval step's own count: normalise with the contract's ImageNet statistics, run the
	// eval-mode forward and its in-graph argmax against the masks.
	g, err := step.EvalStep(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := runtime.NewSession("eval_step", b, cpuModel().Session)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	n := len(cards)
	img := make([]float32, n*3*h*w)
	tgt := make([]int64, n*h*w)
	for i := range cards {
		name := string(rune('a' + i))
		im, _, err := augment.ReadImage(filepath.Join(data, "test", "image", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		mk, _, err := augment.ReadMask(filepath.Join(data, "test", "mask", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		for c := 0; c < 3; c++ {
			for p := 0; p < h*w; p++ {
				img[(i*3+c)*h*w+p] = (float32(im.Pix[4*p+c])/255 - step.Mean[c]) / step.Std[c]
			}
		}
		for p, v := range mk.Pix {
			tgt[i*h*w+p] = int64(v)
		}
	}
	feeds := map[string]*runtime.Tensor{
		step.InputImage:  runtime.MustNew([]int64{int64(n), 3, h, w}, img),
		step.InputTarget: runtime.MustNew([]int64{int64(n), h, w}, tgt),
	}
	// Random weights predict one class everywhere; shift the card logit's bias so that about
	// half of the pixels are card, which makes the comparison mean something.
	shiftCardBias(t, cfg, weights, feeds[step.InputImage])
	for _, p := range arch.Params() {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), weights.Tensors[p.Name])
	}
	out, err := sess.Run(feeds)
	if err != nil {
		t.Fatal(err)
	}
	want := runtime.Data[int64](out[step.OutConfusionTotal])

	build := map[string]func() ([]byte, error){
		"inference": func() ([]byte, error) {
			g, err := step.Inference(cfg, weights)
			if err != nil {
				return nil, err
			}
			return g.Marshal()
		},
		"checkpoint graph": func() ([]byte, error) {
			g, err := step.Checkpoint(cfg, weights)
			if err != nil {
				return nil, err
			}
			return g.Marshal()
		},
	}
	for _, name := range []string{"inference", "checkpoint graph"} {
		t.Run(name, func(t *testing.T) {
			b, err := build[name]()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name+".onnx")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			m := openModel(t, path, cpuModel())
			if m.Height != h || m.Width != w || m.NormFrom != "metadata" || m.Kind != OutputLogits {
				t.Errorf("read as %d×%d, normalisation from %s, output %s; want 64×96, metadata, logits", m.Height, m.Width, m.NormFrom, m.Kind)
			}
			res, err := EvaluateDataset(context.Background(), m, data, "test", EvalOptions{Batch: 3})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Confusion.Counts
			// Folded and unfolded batch norm round differently, so a pixel whose two logits
			// tie to float precision may go either way.
			var diff int64
			for i := range want {
				diff += abs64(got[i/2][i%2] - want[i])
			}
			if diff > 4 {
				t.Errorf("confusion %v, eval step %v", got, want)
			}
			if got[0][1]+got[1][1] == 0 || got[0][0]+got[1][0] == 0 {
				t.Errorf("the random model predicts one class only (%v); the comparison tests nothing", got)
			}
		})
	}
}

// shiftCardBias moves the card logit of the network's low-level classifier by minus the median
// of l1−l0 over the images.
func shiftCardBias(t *testing.T, cfg step.Config, w *model.Weights, images *runtime.Tensor) {
	t.Helper()
	g, err := step.Inference(cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := runtime.NewSession("calibrate", b, cpuModel().Session)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Run(map[string]*runtime.Tensor{step.InputImage: images})
	if err != nil {
		t.Fatal(err)
	}
	logits := runtime.Data[float32](out[step.OutLogits])
	plane := cfg.Height * cfg.Width
	var d []float64
	for i := 0; i+2*plane <= len(logits); i += 2 * plane {
		for p := 0; p < plane; p++ {
			d = append(d, float64(logits[i+plane+p]-logits[i+p]))
		}
	}
	sort.Float64s(d)
	bias := w.Tensors["classifier.low_classifier.bias"]
	if len(bias) != 2 {
		t.Fatalf("classifier.low_classifier.bias has %d values, want 2", len(bias))
	}
	bias[1] -= float32(d[len(d)/2])
}
