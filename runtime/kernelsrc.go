package runtime

import (
	"embed"
	"os"
)

// customops.c includes kernels/cpu.h (and its act.h) and kernels/launch.h (and its pack.h) from the
// subdirectory. The go command hashes only the files of a package's own directory into its
// build, so an edit to those headers alone would leave a stale customops.o in the build cache;
// embedding them makes their contents part of this package's build. (bn_ptx.h, the compiled
// kernels, is in this directory.)
//
//go:embed kernels/cpu.h kernels/launch.h kernels/act.h kernels/pack.h
var kernelHeaders embed.FS

// EnvCUDAKernels picks the CUDA kernels of our custom operators: "auto" (or unset) the current
// ones, "scalar" the first ones (one float16 value per load, one thread per element), kept for
// comparison. customops.c reads it when it loads the kernels.
const EnvCUDAKernels = "CARDSEG_CUDA_KERNELS"

// CUDAKernels is the kernel set EnvCUDAKernels asks for: "auto" or "scalar" (anything else is
// reported when a CUDA session with custom operators is created).
func CUDAKernels() string {
	if v := os.Getenv(EnvCUDAKernels); v != "" {
		return v
	}
	return "auto"
}
