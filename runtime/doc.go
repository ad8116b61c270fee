// Package runtime is the only code in cardseg-ort that talks to ONNX Runtime: it finds the
// shared library (ORT_LIB, then the cache that `cardseg-ort setup` fills), initialises it once,
// chooses execution providers (auto, cpu, cuda), opens sessions from bytes or files and moves
// tensors in and out, FP16 included. DeviceSession keeps tensors in device memory across runs
// (I/O binding, CUDA graphs) through a small cgo layer over ONNX Runtime's C API (ortc.c).
// With DeviceOptions.CustomOps a session also knows our operators (customops.c, domain
// ai.cardseg: fused batch norm and depthwise kernels for the FP16 train step), each with a CPU
// kernel and a CUDA kernel whose PTX (kernels/bn.cu → bn_ptx.h) runs through the CUDA driver on
// ONNX Runtime's stream.
//
// It may import github.com/yalue/onnxruntime_go, cgo, the standard library and internal/f16;
// nothing else in this module.
package runtime
