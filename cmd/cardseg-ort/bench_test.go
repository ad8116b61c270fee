package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// benchJSON runs `bench train` at a tiny size and decodes its JSON line.
func benchJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	base := []string{"bench", "train", "--batch", "1", "--height", "32", "--width", "48", "--threads", "1", "--steps", "2", "--warmup", "1", "--json", "--log-level", "error"}
	out, code := runCLI(t, nil, append(base, args...)...)
	if code != 0 {
		t.Fatalf("bench train %v exited %d:\n%s", args, code, out)
	}
	var m map[string]any
	line := out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("bench train %v printed %q", args, out)
	}
	return m
}

// TestBenchTrainSessions times both the resident session (what training uses) and the
// host-memory one, and reports the same step.
func TestBenchTrainSessions(t *testing.T) {
	for _, args := range [][]string{nil, {"--no-resident"}} {
		m := benchJSON(t, args...)
		if ms, _ := m["step_ms_median"].(float64); ms <= 0 {
			t.Errorf("bench train %v: step_ms_median %v", args, m["step_ms_median"])
		}
		if l, _ := m["final_loss"].(float64); l <= 0 || l > 10 {
			t.Errorf("bench train %v: final_loss %v", args, m["final_loss"])
		}
	}
}

// TestBenchTrainCompareTorch runs the interleaved comparison when Debian's PyTorch is there:
// both sides must have run the asked steps, segment by segment.
func TestBenchTrainCompareTorch(t *testing.T) {
	if _, err := os.Stat("/usr/lib/python3/dist-packages/torchvision"); err != nil {
		t.Skip("needs Debian's python3-torch and python3-torchvision")
	}
	m := benchJSON(t, "--compare-torch", "--segment", "1")
	torch, _ := m["pytorch"].(map[string]any)
	segs, _ := m["segments"].([]any)
	steps, _ := torch["step_ms"].([]any)
	if len(segs) != 2 || len(steps) != 2 {
		t.Fatalf("want 2 segments and 2 PyTorch steps, got %d and %d: %v", len(segs), len(steps), m)
	}
	if r, _ := m["ratio_vs_pytorch"].(float64); r <= 0 {
		t.Errorf("ratio_vs_pytorch %v", m["ratio_vs_pytorch"])
	}
}

// TestBenchTrainFusedFromEnvironment: without --fused, `bench train` takes its fused operators
// from CARDSEG_FUSED_OPS as training does (the GPU check script narrows the set there when a
// kernel fails on the device), and an explicit --fused wins over it.
func TestBenchTrainFusedFromEnvironment(t *testing.T) {
	base := []string{"bench", "train", "--batch", "1", "--height", "32", "--width", "48", "--steps", "1", "--warmup", "0", "--json", "--log-level", "error"}
	out, code := runCLI(t, []string{"CARDSEG_FUSED_OPS=bn,bogus"}, base...)
	if code == 0 || !strings.Contains(out, "CARDSEG_FUSED_OPS") || !strings.Contains(out, `"bogus"`) {
		t.Errorf("CARDSEG_FUSED_OPS=bn,bogus: exit %d, output:\n%s", code, out)
	}
	out, code = runCLI(t, []string{"CARDSEG_FUSED_OPS=bn,bogus"}, append(base, "--fused", "none")...)
	if code != 0 {
		t.Errorf("--fused none with CARDSEG_FUSED_OPS=bn,bogus: exit %d, output:\n%s", code, out)
	}
}
