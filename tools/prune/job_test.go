package prune

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

var cpu1 = runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1}

// jobFixture writes a tiny dataset and a checkpoint of perturbed initial weights on it.
func jobFixture(t *testing.T) (dir, ckpt string, cfg pipeline.TrainConfig, w *model.Weights) {
	t.Helper()
	dir = t.TempDir()
	data := filepath.Join(dir, "data")
	writeCardDataset(t, data, 6, 2, 64, 96)
	cfg = smallConfig(data)
	w = perturbedWeights(cfg.StepConfig().Arch, 1)
	ckpt = filepath.Join(dir, "in.onnx")
	writeCheckpoint(t, ckpt, cfg, w)
	return dir, ckpt, cfg, w
}

// Unstructured pruning's zeros survive fine-tuning: every weight the mask holds is still
// exactly zero afterwards while the others trained; with --remove-masks the output drops the
// mask (and the masked-training flag) but keeps the zeros.
func TestJobUnstructuredFineTuneKeepsZeros(t *testing.T) {
	dir, in, cfg, w := jobFixture(t)
	arch := cfg.StepConfig().Arch
	want, err := Prune(arch, w, nil, Options{Amount: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	wantMask := splitMask(arch, want.Mask)
	for _, tc := range []struct {
		name   string
		remove bool
	}{
		{"mask kept", false},
		{"mask removed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".onnx")
			j := &Job{Checkpoint: in, Out: out, Options: Options{Amount: 0.5}, RemoveMasks: tc.remove, BNBatches: 1,
				FineTune: FineTune{Run: true, Epochs: 1, LR: 1e-2, MaxStepsPerEpoch: 2},
				Session:  cpu1, Latency: LatencyOptions{Runs: 1, Threads: 1}, Log: zerolog.Nop()}
			rep, err := j.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ck, err := pipeline.LoadCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			if tc.remove != (ck.State.Mask == nil) || ck.Progress.Config.Masked == tc.remove {
				t.Fatalf("remove masks %v: the output has a mask of %d values, masked training %v", tc.remove, len(ck.State.Mask), ck.Progress.Config.Masked)
			}
			if ck.Progress.Step != 2 || rep.FineTune == nil || rep.FineTune.Steps != 2 {
				t.Fatalf("fine-tuning took %d steps (report %+v)", ck.Progress.Step, rep.FineTune)
			}
			masked, moved, unmasked := 0, 0, 0
			for name, m := range wantMask {
				got := ck.State.Weights.Tensors[name]
				for i, v := range m {
					if v == 0 {
						masked++
						if got[i] != 0 {
							t.Fatalf("%s[%d] was pruned, is %g after fine-tuning", name, i, got[i])
						}
						continue
					}
					unmasked++
					if got[i] != want.Weights.Tensors[name][i] {
						moved++
					}
				}
			}
			if masked == 0 || moved < unmasked/2 {
				t.Fatalf("%d masked weights; fine-tuning moved %d of %d others", masked, moved, unmasked)
			}
			if !tc.remove {
				for name, m := range splitMask(arch, ck.State.Mask) {
					for i := range m {
						if m[i] != wantMask[name][i] {
							t.Fatalf("output mask of %s differs at %d", name, i)
						}
					}
				}
			}
			if rep.PrunedWeights != masked || rep.MaskKept == tc.remove || rep.FineTune.MaskedNonZero != 0 {
				t.Fatalf("report: %d pruned weights (want %d), mask kept %v, %d moved", rep.PrunedWeights, masked, rep.MaskKept, rep.FineTune.MaskedNonZero)
			}
			if len(rep.Stages) != 3 {
				t.Fatalf("%d stages", len(rep.Stages))
			}
			for _, s := range rep.Stages {
				if s.Val == nil || s.Val.Images != 2 || s.LatencyMS <= 0 || s.LatencyMinMS <= 0 || s.LatencyMinMS > s.LatencyMS || s.FileBytes <= 0 {
					t.Fatalf("stage %s incomplete: %+v", s.Stage, s)
				}
			}
			if p, b := rep.Stage(StagePruned), rep.Stage(StageBefore); p.Params != b.Params || p.NonZero > b.NonZero*6/10 || p.GzipBytes >= b.GzipBytes {
				t.Fatalf("pruned %d/%d nonzero (gzip %d), before %d/%d (gzip %d)", p.NonZero, p.Params, p.GzipBytes, b.NonZero, b.Params, b.GzipBytes)
			}
		})
	}
}

// Structured pruning writes a checkpoint with the smaller architecture in its configuration:
// ONNX Runtime runs the file as it is, its inference model is at least a quarter smaller, and
// `train --resume` fine-tunes it.
func TestJobStructuredCheckpointResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a pruned model")
	}
	dir, in, cfg, _ := jobFixture(t)
	out := filepath.Join(dir, "pruned.onnx")
	j := &Job{Checkpoint: in, Out: out, Options: Options{Amount: 0.3, Structured: true, Squeeze: true, Multiple: 8},
		BNBatches: 1, FineTune: FineTune{Epochs: 1, MaxStepsPerEpoch: 1}, Session: cpu1, Log: zerolog.Nop()}
	rep, err := j.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before, pruned := rep.Stage(StageBefore), rep.Stage(StagePruned)
	if pruned == nil || len(rep.Stages) != 2 || rep.FineTune != nil {
		t.Fatalf("stages %+v", rep.Stages)
	}
	if removed := 1 - float64(pruned.Params)/float64(before.Params); removed < 0.25 || pruned.FileBytes >= before.FileBytes*8/10 {
		t.Fatalf("parameters %d -> %d (%.1f%% removed), file %d -> %d", before.Params, pruned.Params, 100*removed, before.FileBytes, pruned.FileBytes)
	}
	if pruned.Val == nil || before.Val == nil || rep.BNBatches != 1 {
		t.Fatalf("quality not measured: %+v %+v, %d statistics batches", before.Val, pruned.Val, rep.BNBatches)
	}
	ck, err := pipeline.LoadCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	c := ck.Progress.Config
	if c.Arch == nil || c.Arch.TrainableCount() != pruned.Trainable || c.Masked || ck.State.Mask != nil {
		t.Fatalf("output config: arch %v, masked %v", c.Arch, c.Masked)
	}
	if c.Epochs != 1 || c.LR != cfg.LR/10 || c.WarmupEpochs != 0 || ck.Progress.Epoch != 0 || ck.Progress.BestIoU != -1 {
		t.Fatalf("output is not set up for fine-tuning: epochs %d, lr %g, warm-up %g, progress %+v", c.Epochs, c.LR, c.WarmupEpochs, ck.Progress)
	}
	s, err := runtime.NewSessionFromFile(out, cpu1)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ds, err := pipeline.OpenDataset(context.Background(), c.Data, pipeline.DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &pipeline.Trainer{Cfg: c, RunDir: filepath.Join(dir, "resumed"), Log: zerolog.Nop(), Dataset: ds, Resume: ck, Session: cpu1}
	res, err := tr.Train(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 1 || res.Best == "" {
		t.Fatalf("resumed fine-tuning: %+v", res)
	}
}

func TestJobRejects(t *testing.T) {
	dir, in, _, _ := jobFixture(t)
	out := filepath.Join(dir, "out.onnx")
	for _, tc := range []struct {
		name string
		job  Job
		want string
	}{
		{"output is input", Job{Checkpoint: in, Out: in, Options: Options{Amount: 0.3}}, "is the input checkpoint"},
		{"no output", Job{Checkpoint: in, Options: Options{Amount: 0.3}}, "no output path"},
		{"fine-tune without data", Job{Checkpoint: in, Out: out, NoEval: true, FineTune: FineTune{Run: true, Epochs: 1}, Options: Options{Amount: 0.3}}, "fine-tuning needs data"},
		{"zero epochs", Job{Checkpoint: in, Out: out, FineTune: FineTune{Run: true}, Options: Options{Amount: 0.3}}, "0 fine-tuning epochs"},
		{"missing dataset", Job{Checkpoint: in, Out: out, Data: filepath.Join(dir, "nowhere"), Options: Options{Amount: 0.3}}, "pass --data DIR"},
		{"not a checkpoint", Job{Checkpoint: filepath.Join(dir, "data", "test", "image", "test_000.png"), Out: out, Options: Options{Amount: 0.3}}, "not an ONNX model"},
		{"bad amount", Job{Checkpoint: in, Out: out, Options: Options{Amount: 2}}, "amount 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.job.Log = zerolog.Nop()
			_, err := tc.job.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Without data the job still prunes and reports sizes; the report prints.
func TestJobWithoutData(t *testing.T) {
	dir, in, _, _ := jobFixture(t)
	out := filepath.Join(dir, "nodata.onnx")
	j := &Job{Checkpoint: in, Out: out, NoEval: true, Options: Options{Amount: 0.5, Structured: true, Head: true}, Log: zerolog.Nop()}
	rep, err := j.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Stages) != 2 || rep.Stages[1].Val != nil || rep.Stages[1].Params >= rep.Stages[0].Params/2 {
		t.Fatalf("stages %+v", rep.Stages)
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"structured, amount 0.50 layerwise", "without data", "backbone.1 ", "no expansion conv", "classifier.cbr", "inter"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
