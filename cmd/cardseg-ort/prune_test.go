package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/tools/prune"
)

// pruneFixture writes a tiny dataset and a checkpoint (initial weights, 64×96) trained on it.
func pruneFixture(t *testing.T) (dir, ckpt string) {
	t.Helper()
	dir = t.TempDir()
	data := filepath.Join(dir, "data")
	writeTinyDataset(t, data, map[string]int{"train": 4, "test": 2}, 64, 96)
	cfg := pipeline.DefaultTrainConfig()
	if err := cfg.ApplyPreset("smoke"); err != nil {
		t.Fatal(err)
	}
	cfg.Data, cfg.Batch, cfg.Threads, cfg.Workers = data, 2, 1, 1
	arch := cfg.StepConfig().Arch
	st, err := pipeline.NewState(arch, model.Init(arch, 1))
	if err != nil {
		t.Fatal(err)
	}
	ckpt = filepath.Join(dir, "best.onnx")
	if err := pipeline.SaveCheckpoint(ckpt, cfg, st, pipeline.Progress{Epoch: 1, BestIoU: 0.1}); err != nil {
		t.Fatal(err)
	}
	return dir, ckpt
}

func TestPruneStructuredJSON(t *testing.T) {
	dir, ckpt := pruneFixture(t)
	out := filepath.Join(dir, "pruned.onnx")
	stdout, code := runCLI(t, nil, "--log-level", "error", "prune", ckpt, "--amount", "0.3", "--structured", "--out", out,
		"--json", "--latency-runs", "2", "--bn-batches", "1", "--threads", "1")
	if code != 0 {
		t.Fatalf("prune exited %d:\n%s", code, stdout)
	}
	var rep prune.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("not one JSON report: %v\n%s", err, stdout)
	}
	before, pruned := rep.Stage(prune.StageBefore), rep.Stage(prune.StagePruned)
	if before == nil || pruned == nil || before.Val == nil || pruned.Val == nil || pruned.LatencyMS <= 0 {
		t.Fatalf("report stages incomplete: %s", stdout)
	}
	if removed := 1 - float64(pruned.Params)/float64(before.Params); removed < 0.25 {
		t.Fatalf("30%% structured pruning removed %.1f%% of the parameters", 100*removed)
	}
	if rep.Method != "structured" || rep.Scope != prune.Layerwise || rep.Criterion != "bn-gamma" || !rep.Squeeze || rep.Multiple != 8 {
		t.Fatalf("defaults: %+v", rep)
	}
	ck, err := pipeline.LoadCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Progress.Config.Arch == nil || ck.Progress.Config.Arch.TrainableCount() != pruned.Trainable {
		t.Fatal("the output's configuration lacks the pruned architecture")
	}
}

func TestPruneUnstructuredText(t *testing.T) {
	dir, ckpt := pruneFixture(t)
	out := filepath.Join(dir, "sparse.onnx")
	stdout, code := runCLI(t, nil, "--log-level", "error", "prune", ckpt, "--amount", "0.5", "--layerwise", "--remove-masks",
		"--no-eval", "--latency-runs", "0", "--out", out)
	if code != 0 {
		t.Fatalf("prune exited %d:\n%s", code, stdout)
	}
	for _, want := range []string{"unstructured, amount 0.50 layerwise", "mask removed", "backbone.14.block.0.0.weight", "50.0%", "not pruned: the stem conv"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	ck, err := pipeline.LoadCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	if ck.State.Mask != nil || ck.Progress.Config.Masked {
		t.Fatal("--remove-masks left a mask")
	}
	zeros := 0
	for _, v := range ck.State.Weights.Tensors["backbone.14.block.0.0.weight"] {
		if v == 0 {
			zeros++
		}
	}
	if zeros != 160*960/2 {
		t.Fatalf("backbone.14.block.0.0.weight has %d zeros, want %d", zeros, 160*960/2)
	}
}

func TestPruneRejects(t *testing.T) {
	dir, ckpt := pruneFixture(t)
	out := filepath.Join(dir, "x.onnx")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"amount out of range", []string{"--amount", "1.2", "--out", out}, "amount 1.2"},
		{"both scopes", []string{"--amount", "0.3", "--global", "--layerwise", "--out", out}, "--global and --layerwise can't be used together"},
		{"criterion without structured", []string{"--amount", "0.3", "--criterion", "l1", "--out", out}, "add --structured"},
		{"head without structured", []string{"--amount", "0.3", "--head", "--out", out}, "add --structured"},
		{"no output", []string{"--amount", "0.3"}, "--out"},
		{"output is input", []string{"--amount", "0.3", "--no-eval", "--out", ckpt}, "is the input checkpoint"},
		{"fine-tune without data", []string{"--amount", "0.3", "--no-eval", "--fine-tune", "--out", out}, "fine-tuning needs data"},
		{"missing dataset", []string{"--amount", "0.3", "--data", filepath.Join(dir, "nowhere"), "--out", out}, "pass --data DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, code := runCLI(t, nil, append([]string{"prune", ckpt}, tc.args...)...)
			if code == 0 || !strings.Contains(stdout, tc.want) {
				t.Fatalf("exit %d, want an error containing %q:\n%s", code, tc.want, stdout)
			}
			if strings.Contains(stdout, "panic") || strings.Contains(stdout, "goroutine ") {
				t.Fatalf("panicked:\n%s", stdout)
			}
		})
	}
}
