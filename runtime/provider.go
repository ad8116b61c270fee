package runtime

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static const char *try_dlopen(const char *name) {
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		return e ? e : "dlopen failed";
	}
	dlclose(h);
	return NULL;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// Provider is an execution-provider choice.
type Provider string

const (
	ProviderAuto Provider = "auto"
	ProviderCPU  Provider = "cpu"
	ProviderCUDA Provider = "cuda"
)

// ParseProvider accepts auto, cpu or cuda.
func ParseProvider(s string) (Provider, error) {
	switch p := Provider(strings.ToLower(strings.TrimSpace(s))); p {
	case ProviderAuto, ProviderCPU, ProviderCUDA:
		return p, nil
	}
	return "", fmt.Errorf("unknown device %q: want auto, cpu or cuda", s)
}

// CUDALibraries are the shared libraries the ORT 1.29 CUDA provider needs at run time, besides
// the provider libraries themselves.
var CUDALibraries = []string{"libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9"}

// CUDAReport says whether the CUDA execution provider can be used, and if not, which file is
// missing.
type CUDAReport struct {
	ProviderLibrary string // path of libonnxruntime_providers_cuda.so looked for
	ProviderFound   bool   // both provider libraries are next to the core library
	Libraries       []LibraryCheck
	GPUs            []string // GPU names the NVIDIA driver reports
	Usable          bool
	Problem         string // why not usable, naming the file; empty when usable
}

// LibraryCheck is one dlopen attempt.
type LibraryCheck struct {
	Name  string
	Found bool
	Error string
}

// CheckCUDA inspects the CUDA provider's prerequisites without creating a session.
func CheckCUDA() CUDAReport {
	var r CUDAReport
	lib, _, libErr := LibraryPath()
	dir := filepath.Dir(lib)
	r.ProviderLibrary = filepath.Join(dir, CUDAProviderName)
	var missing []string
	if libErr != nil {
		missing = append(missing, libErr.Error())
	}
	r.ProviderFound = true
	for _, n := range []string{CUDAProviderName, SharedProviderName} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			r.ProviderFound = false
			missing = append(missing, fmt.Sprintf("%s not found (run `cardseg-ort setup --cuda`)", filepath.Join(dir, n)))
		}
	}
	for _, n := range CUDALibraries {
		c := LibraryCheck{Name: n}
		if msg := tryDlopen(n); msg != "" {
			c.Error = msg
			missing = append(missing, fmt.Sprintf("%s cannot be loaded (%s); add its folder to LD_LIBRARY_PATH", n, msg))
		} else {
			c.Found = true
		}
		r.Libraries = append(r.Libraries, c)
	}
	r.GPUs = nvidiaGPUs()
	if len(r.GPUs) == 0 && len(missing) == 0 {
		// Sandboxed kernels (gVisor, some containers) hide /proc/driver/nvidia: ask the CUDA
		// runtime instead.
		if n, err := CUDADeviceCount(); err == nil {
			for i := 0; i < n; i++ {
				r.GPUs = append(r.GPUs, fmt.Sprintf("CUDA device %d", i))
			}
		}
	}
	if len(r.GPUs) == 0 {
		missing = append(missing, "no NVIDIA GPU visible (/proc/driver/nvidia/gpus is empty or absent)")
	}
	r.Usable = len(missing) == 0
	r.Problem = strings.Join(missing, "; ")
	return r
}

func tryDlopen(name string) string {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if e := C.try_dlopen(cs); e != nil {
		return C.GoString(e)
	}
	return ""
}

func nvidiaGPUs() []string {
	entries, err := os.ReadDir("/proc/driver/nvidia/gpus")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc/driver/nvidia/gpus", e.Name(), "information"))
		name := e.Name()
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Model" {
					name = strings.TrimSpace(v)
				}
			}
		}
		names = append(names, name)
	}
	return names
}

// ResolveProvider turns auto into cpu or cuda, and checks that cuda can work.
func ResolveProvider(p Provider) (Provider, error) {
	switch p {
	case ProviderCPU:
		return ProviderCPU, nil
	case ProviderAuto, "":
		if CheckCUDA().Usable {
			return ProviderCUDA, nil
		}
		return ProviderCPU, nil
	case ProviderCUDA:
		if r := CheckCUDA(); !r.Usable {
			return "", fmt.Errorf("CUDA execution provider unavailable: %s", r.Problem)
		}
		return ProviderCUDA, nil
	}
	return "", fmt.Errorf("unknown provider %q", p)
}

// halfGemmFP32Reductions makes the CUDA provider's float16 matrix products keep float32
// partial sums when cuBLAS splits the inner dimension (split-K). By default ORT lets cuBLAS
// reduce the partial products in float16 ("reduced precision reduction"), and the training
// step's weight-gradient MatMuls, whose inner dimension is every pixel of the batch (up to
// 614,400 at batch 8, 480×640), then lose most of their precision. ORT reads the setting,
// bit 0x02 of ORT_CUDA_GEMM_OPTIONS, from the environment once, at its first float16 GEMM; a
// value the user has set is left alone.
func halfGemmFP32Reductions() {
	if _, set := os.LookupEnv("ORT_CUDA_GEMM_OPTIONS"); !set {
		os.Setenv("ORT_CUDA_GEMM_OPTIONS", "2")
	}
}
