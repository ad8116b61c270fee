package prune

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// writeCardDataset writes a small dataset: noisy dark tables with one bright rectangle each.
func writeCardDataset(t testing.TB, dir string, train, test, h, w int) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	for split, n := range map[string]int{"train": train, "test": test} {
		for _, sub := range []string{"image", "mask"} {
			if err := os.MkdirAll(filepath.Join(dir, split, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			mask := image.NewGray(image.Rect(0, 0, w, h))
			y0, x0 := r.IntN(h/2), r.IntN(w/2)
			ch, cw := h/4+r.IntN(h/4), w/4+r.IntN(w/4)
			for y := range h {
				for x := range w {
					v := uint8(50 + r.IntN(50))
					c := color.RGBA{v, v / 2, v / 3, 255}
					if y >= y0 && y < y0+ch && x >= x0 && x < x0+cw {
						c = color.RGBA{uint8(200 + r.IntN(40)), 190, 170, 255}
						mask.SetGray(x, y, color.Gray{255})
					}
					img.SetRGBA(x, y, c)
				}
			}
			name := fmt.Sprintf("%s_%03d.png", split, i)
			for sub, im := range map[string]image.Image{"image": img, "mask": mask} {
				f, err := os.Create(filepath.Join(dir, split, sub, name))
				if err != nil {
					t.Fatal(err)
				}
				if err := png.Encode(f, im); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// smallConfig is a fast training configuration at 64×96 on data.
func smallConfig(data string) pipeline.TrainConfig {
	c := pipeline.DefaultTrainConfig()
	if err := c.ApplyPreset("smoke"); err != nil {
		panic(err)
	}
	c.Data = data
	c.Epochs, c.Batch, c.MaxStepsPerEpoch = 1, 2, 2
	c.BNRecalibBatches = 1
	c.Threads, c.Workers = 1, 2
	return c
}

// perturbedWeights are initial weights with batch-norm statistics and affine parameters
// drawn away from their identity values, so that folding and slicing them matters.
func perturbedWeights(a model.Arch, seed uint64) *model.Weights {
	w := model.Init(a, seed)
	r := rand.New(rand.NewPCG(seed, 99))
	for _, p := range a.Params() {
		d := w.Tensors[p.Name]
		for i := range d {
			switch p.Kind {
			case model.BNWeight:
				d[i] = float32(0.5 + r.Float64())
			case model.BNBias: // mostly positive, so that ReLU channels carry signal
				d[i] = float32(0.05 + 0.2*r.Float64())
			case model.BNMean, model.ConvBias, model.ConvBiasPT:
				d[i] = float32(0.04 * (r.Float64() - 0.5))
			case model.BNVar:
				d[i] = float32(0.5 + 1.5*r.Float64())
			}
		}
	}
	return w
}

// writeCheckpoint saves weights as a checkpoint of cfg.
func writeCheckpoint(t testing.TB, path string, cfg pipeline.TrainConfig, w *model.Weights) {
	t.Helper()
	st, err := pipeline.NewState(cfg.StepConfig().Arch, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := pipeline.SaveCheckpoint(path, cfg, st, pipeline.Progress{Epoch: 1, BestIoU: 0.5, BestEpoch: 1}); err != nil {
		t.Fatal(err)
	}
}

// logits runs the inference model of (a, w) on a batch of images and returns its logits.
func logits(t testing.TB, a model.Arch, w *model.Weights, h, wd int, images []float32) []float32 {
	t.Helper()
	g, err := step.Inference(step.Config{Arch: a, Batch: 1, Height: h, Width: wd}, w)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.NewSession("inference", b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := int64(len(images) / (3 * h * wd))
	out, err := s.Run(map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{n, 3, int64(h), int64(wd)}, images)})
	if err != nil {
		t.Fatal(err)
	}
	y := out[step.OutLogits]
	if want := []int64{n, int64(a.Classes), int64(h), int64(wd)}; fmt.Sprint(y.Shape) != fmt.Sprint(want) {
		t.Fatalf("logits shape %v, want %v", y.Shape, want)
	}
	return runtime.Data[float32](y)
}

func randomImages(n, h, w int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 5))
	d := make([]float32, n*3*h*w)
	for i := range d {
		d[i] = float32(r.NormFloat64())
	}
	return d
}

// maxDiff is the largest absolute difference and the largest magnitude in want.
func maxDiff(got, want []float32) (diff, scale float64) {
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(got[i]-want[i])))
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	return diff, scale
}

// exportedParams counts the parameters of the batch-norm-folded inference model.
func exportedParams(t testing.TB, a model.Arch, w *model.Weights) int {
	t.Helper()
	f, err := model.FoldBN(a, w)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Tensors {
		n += len(d)
	}
	return n
}
