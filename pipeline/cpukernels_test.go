package pipeline

import (
	"bytes"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestCPUKernels: CPU sessions get the probed NCHWc block unless the configuration or
// CARDSEG_STANDARD_OPS=1 keeps the graphs standard; other providers never get it.
func TestCPUKernels(t *testing.T) {
	block, err := NCHWcBlock()
	if err != nil {
		t.Logf("no NCHWc kernels here: %v", err)
		block = -1
	} else if block < 4 || block&(block-1) != 0 {
		t.Errorf("NCHWc block %d, want a power of two (8 with AVX2, 16 with AVX-512)", block)
	}
	if got := cpuKernels(step.Config{}, runtime.ProviderCPU).NCHWcBlock; got != block {
		t.Errorf("CPU: block %d, want %d", got, block)
	}
	if got := cpuKernels(step.Config{NCHWcBlock: -1}, runtime.ProviderCPU).NCHWcBlock; got != -1 {
		t.Errorf("CPU with the block set to -1: %d", got)
	}
	if got := cpuKernels(step.Config{NCHWcBlock: 8}, runtime.ProviderCUDA).NCHWcBlock; got != -1 {
		t.Errorf("CUDA: block %d, want -1", got)
	}
	t.Setenv(EnvStandardOps, "1")
	if got := cpuKernels(step.Config{}, runtime.ProviderCPU).NCHWcBlock; got != -1 {
		t.Errorf("CPU with %s=1: block %d, want -1", EnvStandardOps, got)
	}
}

// CARDSEG_EMULATE_HALF=1 makes FP16 graphs for the CPU emulate float16 rounding; FP32 graphs
// and other providers are unaffected.
func TestMarshalForEmulatesHalf(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width = 1, 32, 32
	sc := cfg.StepConfig()
	sc.FP16 = true
	g, err := step.EvalStep(sc)
	if err != nil {
		t.Fatal(err)
	}
	emulated := func(sc step.Config, p runtime.Provider) bool {
		b, err := marshalFor(g, sc, p)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(b, []byte("__h_to_float")) // the cast back from float16 after a rounded node
	}
	if emulated(sc, runtime.ProviderCPU) {
		t.Errorf("emulated without %s", EnvEmulateHalf)
	}
	t.Setenv(EnvEmulateHalf, "1")
	if !emulated(sc, runtime.ProviderCPU) {
		t.Errorf("%s=1: FP16 graph for the CPU not emulated", EnvEmulateHalf)
	}
	if emulated(sc, runtime.ProviderCUDA) {
		t.Errorf("%s=1: graph for CUDA emulated", EnvEmulateHalf)
	}
	sc.FP16 = false
	if emulated(sc, runtime.ProviderCPU) {
		t.Errorf("%s=1: FP32 graph emulated", EnvEmulateHalf)
	}
}
