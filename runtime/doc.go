// Package runtime is the only code in cardseg-ort that talks to ONNX Runtime: it finds the
// shared library (ORT_LIB, then the cache that `cardseg-ort setup` fills), initialises it once,
// chooses execution providers (auto, cpu, cuda), opens sessions from bytes or files and moves
// tensors in and out, FP16 included. DeviceSession keeps tensors in device memory across runs
// (I/O binding, CUDA graphs) through a small cgo layer over ONNX Runtime's C API (ortc.c).
//
// It may import github.com/yalue/onnxruntime_go, cgo, the standard library and internal/f16;
// nothing else in this module.
package runtime
