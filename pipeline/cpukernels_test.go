package pipeline

import (
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
