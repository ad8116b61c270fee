package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
	"github.com/cardseg-ort/cardseg-ort/tools/export"
)

// exportCheckpoint saves a small random checkpoint (smoke preset, narrow network).
func exportCheckpoint(t *testing.T) string {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
	cfg := pipeline.DefaultTrainConfig()
	if err := cfg.ApplyPreset("smoke"); err != nil {
		t.Fatal(err)
	}
	cfg.Data, cfg.WidthMult = filepath.Join(t.TempDir(), "no-such-dataset"), 0.35
	a := cfg.StepConfig().Arch
	st, err := pipeline.NewState(a, model.Init(a, 3))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "best.onnx")
	if err := pipeline.SaveCheckpoint(path, cfg, st, pipeline.Progress{Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExportCommand(t *testing.T) {
	ck := exportCheckpoint(t)
	out := filepath.Join(t.TempDir(), "pkg")
	stdout, code := runCLI(t, nil, "export", ck, "--out", out, "--fp16", "--embed-preprocess", "--format", "onnx,safetensors",
		"--threads", "2", "--json")
	if code != 0 {
		t.Fatalf("export exited %d:\n%s", code, stdout)
	}
	// stdout and stderr are combined by runCLI: the JSON report is the line that parses.
	var rep export.Report
	found := false
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &rep) == nil {
			found = true
		}
	}
	if !found {
		t.Fatalf("no JSON report in the output:\n%s", stdout)
	}
	if len(rep.Models) != 4 || rep.Weights == nil || rep.Batch != "1" || rep.Opset != 18 {
		t.Fatalf("report: %d models, weights %v, batch %s, opset %d", len(rep.Models), rep.Weights, rep.Batch, rep.Opset)
	}
	for _, f := range []string{"cardseg.onnx", "cardseg.rgb.onnx", "cardseg.fp16.onnx", "cardseg.fp16.rgb.onnx", "cardseg.safetensors", export.ReportName} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if d := rep.Model(export.FP32, false).Parity.MaxAbsDiff; d > export.FP32MaxAbsDiff {
		t.Errorf("FP32 max diff %.2e", d)
	}

	// The summary names every file, and the RGB model re-exports from the safetensors file.
	again := filepath.Join(t.TempDir(), "again")
	stdout, code = runCLI(t, nil, "export", filepath.Join(out, "cardseg.safetensors"), "--out", again, "--name", "fromweights", "--opset", "21")
	if code != 0 {
		t.Fatalf("export from safetensors exited %d:\n%s", code, stdout)
	}
	for _, want := range []string{"fromweights.onnx", "fp32", "(safetensors)", "opset 21", "synthetic pictures"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}

func TestExportCommandErrors(t *testing.T) {
	ck := exportCheckpoint(t)
	exported := filepath.Join(t.TempDir(), "exported")
	if _, code := runCLI(t, nil, "export", ck, "--out", exported); code != 0 {
		t.Fatal("export failed")
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no --out", []string{"export", ck}, []string{"--out"}},
		{"missing checkpoint", []string{"export", "nope.onnx", "--out", t.TempDir()}, []string{"nope.onnx"}},
		{"exported model", []string{"export", filepath.Join(exported, "cardseg.onnx"), "--out", t.TempDir()}, []string{"cardseg.onnx", "without training state"}},
		{"opset", []string{"export", ck, "--out", t.TempDir(), "--opset", "12"}, []string{"opset 12", "14 to 21"}},
		{"int8 without images", []string{"export", ck, "--out", t.TempDir(), "--int8"}, []string{"--calib"}},
		{"fp16 with safetensors only", []string{"export", ck, "--out", t.TempDir(), "--format", "safetensors", "--fp16"}, []string{"--fp16 apply to ONNX"}},
		{"bad size", []string{"export", ck, "--out", t.TempDir(), "--size", "big"}, []string{"--size", "HEIGHTxWIDTH"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, nil, tc.args...)
			if code == 0 {
				t.Fatalf("exited 0:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("panicked:\n%s", out)
			}
		})
	}
}
