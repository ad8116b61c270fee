package runtime

import (
	"os"
	"testing"
)

// The CUDA sessions ask ORT for float32 split-K reductions in float16 GEMMs unless the user
// chose otherwise.
func TestHalfGemmFP32Reductions(t *testing.T) {
	t.Setenv("ORT_CUDA_GEMM_OPTIONS", "5")
	halfGemmFP32Reductions()
	if v := os.Getenv("ORT_CUDA_GEMM_OPTIONS"); v != "5" {
		t.Fatalf("a user's ORT_CUDA_GEMM_OPTIONS=5 became %q", v)
	}
	os.Unsetenv("ORT_CUDA_GEMM_OPTIONS")
	halfGemmFP32Reductions()
	if v := os.Getenv("ORT_CUDA_GEMM_OPTIONS"); v != "2" {
		t.Fatalf("ORT_CUDA_GEMM_OPTIONS = %q, want 2", v)
	}
}
