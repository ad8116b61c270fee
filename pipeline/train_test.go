package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// writeRectDataset writes a small dataset of noisy images with bright "cards" (rectangles).
func writeRectDataset(t testing.TB, dir string, train, test, h, w int) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for split, n := range map[string]int{"train": train, "test": test} {
		for _, sub := range []string{"image", "mask"} {
			if err := os.MkdirAll(filepath.Join(dir, split, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < n; i++ {
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			mask := image.NewGray(image.Rect(0, 0, w, h))
			y0, x0 := r.IntN(h/2), r.IntN(w/2)
			ch, cw := h/4+r.IntN(h/4), w/4+r.IntN(w/4)
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					v := uint8(60 + r.IntN(40))
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
				f.Close()
			}
		}
	}
}

func tinyConfig(data string) TrainConfig {
	c := DefaultTrainConfig()
	if err := c.ApplyPreset("smoke"); err != nil {
		panic(err)
	}
	c.Data = data
	c.Epochs = 2
	c.Batch = 2
	c.MaxStepsPerEpoch = 3
	c.BNRecalibBatches = 1
	c.Threads = 1
	c.Workers = 2
	c.CosineT0 = 2
	return c
}

// cancelAt cancels the context when the given global step is reached.
type cancelAt struct {
	cancel context.CancelFunc
	after  int
	steps  int
}

func (c *cancelAt) Step(epoch, epochs, batch, batches int, loss, ips float64, eta time.Duration) {
	c.steps++
	if c.steps == c.after {
		c.cancel()
	}
}
func (c *cancelAt) EpochDone() {}

func train(t *testing.T, cfg TrainConfig, run string, resume *Checkpoint, sink ProgressSink, ctx context.Context) (TrainResult, error) {
	t.Helper()
	ds, err := OpenDataset(context.Background(), cfg.Data, DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &Trainer{Cfg: cfg, RunDir: run, Log: zerolog.Nop(), Dataset: ds, Resume: resume, Progress: sink,
		Session: runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1}}
	return tr.Train(ctx)
}

func sameWeights(t *testing.T, what string, a, b *State) {
	t.Helper()
	if a.Step != b.Step {
		t.Fatalf("%s: step %d vs %d", what, a.Step, b.Step)
	}
	for name, x := range a.Weights.Tensors {
		y := b.Weights.Tensors[name]
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s: %s[%d] = %g vs %g", what, name, i, x[i], y[i])
			}
		}
	}
	for i := range a.M {
		if a.M[i] != b.M[i] || a.V[i] != b.V[i] {
			t.Fatalf("%s: optimizer moment %d differs", what, i)
		}
	}
}

// TestResumeEquivalence: two epochs straight equal one epoch + resume + one epoch, and equal a
// run interrupted mid-epoch (Ctrl-C) and resumed, bit for bit.
func TestResumeEquivalence(t *testing.T) { resumeEquivalence(t, "fp32") }

// TestResumeEquivalenceFP16: the same for the mixed-precision step, which runs through the
// device-resident session (on the CPU here) and carries the loss scale across the resume.
func TestResumeEquivalenceFP16(t *testing.T) { resumeEquivalence(t, "fp16") }

func resumeEquivalence(t *testing.T, precision string) {
	if testing.Short() {
		t.Skip("trains three small runs")
	}
	data := t.TempDir()
	writeRectDataset(t, data, 8, 4, 64, 96)
	cfg := tinyConfig(data)
	cfg.Precision = precision

	runA := t.TempDir()
	resA, err := train(t, cfg, runA, nil, nil, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if resA.Steps != 6 || resA.Epochs != 2 {
		t.Fatalf("run A: %d steps, %d epochs", resA.Steps, resA.Epochs)
	}
	a, err := LoadCheckpoint(filepath.Join(runA, CheckpointDir, LastName))
	if err != nil {
		t.Fatal(err)
	}

	// B: one epoch, then resume for the second.
	runB := t.TempDir()
	one := cfg
	one.Epochs = 1
	if _, err := train(t, one, runB, nil, nil, context.Background()); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(filepath.Join(runB, CheckpointDir, LastName))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Progress.Epoch != 1 || ck.Progress.Step != 3 {
		t.Fatalf("after one epoch: %+v", ck.Progress)
	}
	ck.Progress.Config.Epochs = 2
	if _, err := train(t, ck.Progress.Config, runB, ck, nil, context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := LoadCheckpoint(filepath.Join(runB, CheckpointDir, LastName))
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, "1 epoch + resume + 1 epoch", a.State, b.State)
	if a.State.LossScale != b.State.LossScale || a.State.LossScaleGood != b.State.LossScaleGood || a.State.Step != b.State.Step {
		t.Fatalf("loss scale %g/%g, good %g/%g, step %d/%d", a.State.LossScale, b.State.LossScale, a.State.LossScaleGood, b.State.LossScaleGood, a.State.Step, b.State.Step)
	}
	if precision == "fp16" && (a.State.LossScale == 0 || a.State.LossScaleGood != float32(a.State.Step)) {
		t.Fatalf("fp16 run: loss scale %g, good %g after %d steps", a.State.LossScale, a.State.LossScaleGood, a.State.Step)
	}
	if b.Progress.BestIoU != a.Progress.BestIoU || b.Progress.BestEpoch != a.Progress.BestEpoch {
		t.Fatalf("best %v@%d vs %v@%d", b.Progress.BestIoU, b.Progress.BestEpoch, a.Progress.BestIoU, a.Progress.BestEpoch)
	}
	histA, _ := ReadMetricsLog(filepath.Join(runA, LogDir, "metrics.jsonl"))
	histB, _ := ReadMetricsLog(filepath.Join(runB, LogDir, "metrics.jsonl"))
	if len(histA) != 2 || len(histB) != 2 || histA[1].Val.IoU != histB[1].Val.IoU || histA[1].TrainLoss != histB[1].TrainLoss {
		t.Fatalf("metrics logs differ:\n%+v\n%+v", histA, histB)
	}

	// C: interrupted in the middle of the first epoch (after step 2 of 3), then resumed.
	runC := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := train(t, cfg, runC, nil, &cancelAt{cancel: cancel, after: 2}, ctx)
	if !errors.Is(err, ErrInterrupted) || res.Steps != 2 {
		t.Fatalf("interrupt: %v after %d steps", err, res.Steps)
	}
	ck, err = LoadCheckpoint(filepath.Join(runC, CheckpointDir, LastName))
	if err != nil {
		t.Fatal(err)
	}
	if ck.Progress.BatchInEpoch != 2 || ck.Progress.Epoch != 0 {
		t.Fatalf("interrupted checkpoint: %+v", ck.Progress)
	}
	if _, err := train(t, ck.Progress.Config, runC, ck, nil, context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCheckpoint(filepath.Join(runC, CheckpointDir, LastName))
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, "interrupted + resumed", a.State, c.State)
	for _, f := range []string{"loss.png", "iou.png", "lr.png"} {
		if _, err := os.Stat(filepath.Join(runA, PlotDir, f)); err != nil {
			t.Errorf("plot %s: %v", f, err)
		}
	}
}

// TestMaskedStepKeepsZeros: with a parameter mask, masked weights stay exactly zero through
// training steps and the others move.
func TestMaskedStepKeepsZeros(t *testing.T) {
	cfg := tinyConfig("x")
	cfg.Masked = true
	sc := cfg.StepConfig()
	ts, err := NewTrainSession(sc, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	st := smallState(t, cfg, 3)
	for i := range st.M {
		st.M[i], st.V[i] = 0, 0
	}
	st.Step = 0
	// Mask every third value; zero those weights first, as pruning does.
	st.Mask = make([]float32, len(st.M))
	off := 0
	for _, p := range sc.Arch.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		d := st.Weights.Tensors[p.Name]
		for i := range d {
			if (off+i)%3 == 0 {
				d[i] = 0
			} else {
				st.Mask[off+i] = 1
			}
		}
		off += len(d)
	}
	before := st.Weights.Clone()
	img, tgt := randomBatch(sc, 2)
	for i := 0; i < 3; i++ {
		if _, err := ts.Step(st, img, tgt, 1e-2); err != nil {
			t.Fatal(err)
		}
	}
	off, moved := 0, 0
	for _, p := range sc.Arch.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		d := st.Weights.Tensors[p.Name]
		for i := range d {
			if st.Mask[off+i] == 0 && d[i] != 0 {
				t.Fatalf("%s[%d] is masked but became %g", p.Name, i, d[i])
			}
			if st.Mask[off+i] == 1 && d[i] != before.Tensors[p.Name][i] {
				moved++
			}
		}
		off += len(d)
	}
	if moved < off/2 {
		t.Fatalf("only %d of %d unmasked weights moved", moved, off)
	}
	// Without a mask in the state, a masked session refuses to run.
	st.Mask = nil
	if _, err := ts.Step(st, img, tgt, 1e-2); err == nil {
		t.Fatal("masked step ran without a mask")
	}
}
