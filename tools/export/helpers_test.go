package export

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// The tests export models of the smoke preset's size.
const testH, testW = 64, 96

var testTmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cardseg-export-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireORT(t testing.TB) {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
}

// writeRectDataset writes noisy pictures of bright axis-aligned "cards" with their masks, in
// the dataset layout (DIR/{train,test}/{image,mask}). Images are w×h; a few test images are
// larger (2×) so the RGB variants resize.
func writeRectDataset(t testing.TB, dir string, train, test, h, w int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 4))
	for _, split := range []struct {
		name string
		n    int
	}{{"train", train}, {"test", test}} {
		for _, sub := range []string{"image", "mask"} {
			if err := os.MkdirAll(filepath.Join(dir, split.name, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < split.n; i++ {
			ih, iw := h, w
			if split.name == "test" && i%3 == 2 {
				ih, iw = 2*h, 2*w
			}
			img := image.NewRGBA(image.Rect(0, 0, iw, ih))
			mask := image.NewGray(image.Rect(0, 0, iw, ih))
			y0, x0 := r.IntN(ih/2), r.IntN(iw/2)
			ch, cw := ih/4+r.IntN(ih/4), iw/4+r.IntN(iw/4)
			for y := 0; y < ih; y++ {
				for x := 0; x < iw; x++ {
					v := uint8(50 + r.IntN(60))
					c := color.RGBA{v, v / 2, v / 3, 255}
					if y >= y0 && y < y0+ch && x >= x0 && x < x0+cw {
						c = color.RGBA{uint8(190 + r.IntN(50)), 185, 165, 255}
						mask.SetGray(x, y, color.Gray{255})
					}
					img.SetRGBA(x, y, c)
				}
			}
			name := fmt.Sprintf("%s_%03d.png", split.name, i)
			writePNG(t, filepath.Join(dir, split.name, "image", name), img)
			writePNG(t, filepath.Join(dir, split.name, "mask", name), mask)
		}
	}
}

func writePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

func smokeConfig(data string) pipeline.TrainConfig {
	c := pipeline.DefaultTrainConfig()
	if err := c.ApplyPreset("smoke"); err != nil {
		panic(err)
	}
	c.Data = data
	return c
}

// randomWeights are freshly initialised weights whose batch-norm statistics and affine
// parameters are perturbed, so that folding them is really exercised.
func randomWeights(cfg pipeline.TrainConfig, seed uint64) *model.Weights {
	a := cfg.StepConfig().Arch
	w := model.Init(a, seed)
	r := rand.New(rand.NewPCG(seed, 99))
	for _, p := range a.Params() {
		d := w.Tensors[p.Name]
		for i := range d {
			switch p.Kind {
			case model.BNWeight, model.BNVar:
				d[i] = float32(0.5 + r.Float64())
			case model.BNBias, model.BNMean:
				d[i] = float32(0.2 * r.NormFloat64())
			}
		}
	}
	w.BatchesTracked = 17
	return w
}

// randomCheckpoint saves a checkpoint of random weights (smoke preset, 64×96, the narrow
// network of the trained test model).
func randomCheckpoint(t testing.TB, path string, seed uint64) (pipeline.TrainConfig, *model.Weights) {
	t.Helper()
	cfg := smokeConfig("x")
	cfg.WidthMult = testWidthMult
	w := randomWeights(cfg, seed)
	st, err := pipeline.NewState(cfg.StepConfig().Arch, w)
	if err != nil {
		t.Fatal(err)
	}
	rec := pipeline.EpochRecord{Epoch: 3, Step: 12, Val: pipeline.ValMetrics{IoU: 0.5, Images: 4}}
	if err := pipeline.SaveCheckpoint(path, cfg, st, pipeline.Progress{Epoch: 3, BestIoU: 0.5, BestEpoch: 2, LastMetrics: &rec}); err != nil {
		t.Fatal(err)
	}
	return cfg, w
}

var (
	randomOnce sync.Once
	randomPath string
)

// sharedRandomCheckpoint is one random checkpoint for the tests that only read it.
func sharedRandomCheckpoint(t testing.TB) string {
	t.Helper()
	requireORT(t)
	randomOnce.Do(func() {
		randomPath = filepath.Join(testTmp, "random.onnx")
		randomCheckpoint(t, randomPath, 1)
	})
	return randomPath
}

var (
	trainOnce             sync.Once
	trainedPath, dataPath string
	trainErr              error
)

// trainedCheckpoint trains (once per test run) a model that really segments the rectangle
// dataset: INT8 accuracy means nothing on random weights. It drives the train step directly
// (no per-epoch checkpoints or plots), re-estimates batch-norm statistics, scores the test
// split and saves one checkpoint.
func trainedCheckpoint(t testing.TB) (ckpt, data string) {
	t.Helper()
	requireORT(t)
	trainOnce.Do(func() {
		dataPath = filepath.Join(testTmp, "rects")
		writeRectDataset(t, dataPath, 32, 12, testH, testW, 3)
		trainedPath = filepath.Join(testTmp, "trained.onnx")
		trainErr = trainRects(dataPath, trainedPath, trainSteps, testWidthMult, 1)
	})
	if trainErr != nil {
		t.Fatalf("training the test model: %v", trainErr)
	}
	return trainedPath, dataPath
}

// The trained test model: a narrow network (a sixth of the full one's compute) trains in
// seconds and segments the rectangles (test card IoU 0.88). It is also a hard case for INT8:
// with full-range int8 weights on an x86 CPU without VNNI its mask IoU with FP32 falls to 0.75
// (saturation, see quantize.go); the default 7-bit weights keep it above 0.98.
const (
	trainSteps    = 80
	testWidthMult = 0.35
)

const trainLR = 3e-3

func trainRects(data, out string, steps int, widthMult float64, seed uint64) error {
	ctx := context.Background()
	cfg := smokeConfig(data)
	cfg.Batch = 4
	cfg.WidthMult = widthMult
	cfg.Seed = seed
	cfg.NoAugment = true
	sc := cfg.StepConfig()
	opts := runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}
	ds, err := pipeline.OpenDataset(ctx, data, pipeline.DatasetOptions{})
	if err != nil {
		return err
	}
	st, err := pipeline.NewState(sc.Arch, model.Init(sc.Arch, seed))
	if err != nil {
		return err
	}
	ts, err := pipeline.NewTrainSession(sc, opts)
	if err != nil {
		return err
	}
	defer ts.Close()
	l, err := pipeline.NewLoader(ds.Train, pipeline.LoaderConfig{Height: testH, Width: testW, BatchSize: cfg.Batch, Workers: 2, Shuffle: true, DropLast: true, Seed: seed})
	if err != nil {
		return err
	}
	for epoch := 0; st.Step < int64(steps); epoch++ {
		ep := l.Epoch(ctx, epoch)
		for st.Step < int64(steps) && ep.Next() {
			b := ep.Batch()
			if _, err := ts.Step(st, b.Images, b.Targets, trainLR); err != nil {
				ep.Close()
				return err
			}
		}
		if err := ep.Close(); err != nil {
			return err
		}
	}
	recal, err := pipeline.NewBNRecalibrator(sc, opts)
	if err != nil {
		return err
	}
	defer recal.Close()
	if _, err := recal.Run(ctx, st, l, 6); err != nil {
		return err
	}
	val, err := pipeline.NewValidator(sc, opts)
	if err != nil {
		return err
	}
	defer val.Close()
	vl, err := pipeline.NewLoader(ds.Test, pipeline.LoaderConfig{Height: testH, Width: testW, BatchSize: 4, Workers: 2})
	if err != nil {
		return err
	}
	m, err := val.Run(ctx, st, vl)
	if err != nil {
		return err
	}
	if m.IoU < 0.8 {
		return fmt.Errorf("the test model reached only card IoU %.3f after %d steps", m.IoU, steps)
	}
	rec := pipeline.EpochRecord{Epoch: 1, Step: st.Step, Val: m}
	return pipeline.SaveCheckpoint(out, cfg, st, pipeline.Progress{Epoch: 1, BestIoU: m.IoU, BestEpoch: 1, LastMetrics: &rec})
}
