package runtime

/*
#cgo LDFLAGS: -ldl -lm -lpthread
#include <stdlib.h>
#include <string.h>
#include "ortc.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// A DeviceSession keeps a model's inputs and outputs in the memory of the device it runs on
// (GPU memory with the CUDA provider, host memory with the CPU provider) and runs through
// ONNX Runtime's I/O binding, so state such as parameters and optimizer moments stays there
// across runs: only what the caller uploads or downloads crosses PCIe. With CUDAGraph the
// CUDA provider captures each binding's first runs into a CUDA graph and then replays it
// (one launch per step); a binding's tensors must then never change address, which is why
// bindings are built once and reused. Keep to one captured graph per session with ONNX
// Runtime 1.29: see pipeline.DeviceTrainSession for why two graphs in one session misread
// state; NewTensorBlock lays state out so that it is copied back in one transfer.
//
// onnxruntime_go, which the rest of this package uses, has no device memory or I/O binding,
// so this part calls the C API through a small cgo layer (ortc.c) on the same library.
type DeviceSession struct {
	name     string
	provider Provider
	device   int
	graphs   bool
	multi    bool // more than one captured graph allowed
	sess     *C.OrtSession
	alloc    *C.OrtAllocator
	mem      *C.OrtMemoryInfo
	stream   unsafe.Pointer // CUDA stream for asynchronous uploads (nil on the CPU)
	inputs   []IOInfo
	outputs  []IOInfo
	tensors  []*DeviceTensor
	bindings []*Binding
	closed   bool
	mu       sync.Mutex
	memBase  uint64 // device memory in use before the session existed (CUDA)
}

// DeviceOptions configures a DeviceSession.
type DeviceOptions struct {
	Provider       Provider // cpu or cuda (auto resolves to one of them)
	CUDADevice     int
	IntraOpThreads int  // CPU provider threads (0: ORT's default)
	CUDAGraph      bool // capture and replay CUDA graphs (CUDA provider; static shapes)
	// MultipleGraphs lets a session with CUDAGraph have more than one binding, each with its
	// own captured graph. Unsafe with ONNX Runtime 1.29 when a Concat, Split or batched MatMul
	// reads tensors that differ between the bindings: a later capture recycles the pinned host
	// blocks in which the earlier graph's pointer tables live (onnxruntime#32121).
	MultipleGraphs bool
	// CUDAOptions are extra CUDA provider options (e.g. "prefer_nhwc": "1",
	// "cudnn_conv_algo_search": "HEURISTIC"); device_id and enable_cuda_graph are set from
	// the fields above.
	CUDAOptions          map[string]string
	DisableOptimizations bool
	// DisableMemPattern turns off ORT's memory-pattern planning (see SessionOptions).
	DisableMemPattern bool
	ProfilePrefix     string
	// ConfigEntries are session configuration entries (e.g.
	// "session.disable_cpu_ep_fallback": "1" makes a node without a CUDA kernel an error).
	ConfigEntries map[string]string
	// LogSeverity is the session's log level (0 verbose … 4 fatal; the environment variable
	// CARDSEG_ORT_LOG_SEVERITY overrides it); nil keeps the process default (errors).
	LogSeverity *int
	// CustomOps registers our operator domain (graphs.CardsegDomain: fused batch norm for the
	// FP16 train step) with CPU and CUDA kernels; graphs that use it need it.
	CustomOps bool
}

var (
	ortcOnce sync.Once
	ortcErr  error
)

func cerr(e *C.char) error {
	if e == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(e))
	return errors.New(C.GoString(e))
}

// initDevice loads the C API table from the library Init loaded.
func initDevice() error {
	if err := Init(); err != nil {
		return err
	}
	ortcOnce.Do(func() {
		p := C.CString(LoadedLibrary())
		defer C.free(unsafe.Pointer(p))
		if err := cerr(C.ortc_load(p)); err != nil {
			ortcErr = fmt.Errorf("ONNX Runtime C API from %s: %w", LoadedLibrary(), err)
			return
		}
		if err := cerr(C.ortc_env()); err != nil {
			ortcErr = fmt.Errorf("ONNX Runtime environment: %w", err)
		}
	})
	return ortcErr
}

// cudaRuntime loads libcudart for copies and pinned memory.
func cudaRuntime() error {
	if err := cerr(C.cudac_load()); err != nil {
		return fmt.Errorf("CUDA runtime: %w (add its folder to LD_LIBRARY_PATH)", err)
	}
	return nil
}

// CUDADeviceCount asks the CUDA runtime how many devices it sees (0 and an error when the
// runtime cannot be loaded).
func CUDADeviceCount() (int, error) {
	if err := cudaRuntime(); err != nil {
		return 0, err
	}
	var n C.int
	if err := cerr(C.cudac_device_count(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// NewDeviceSession opens model (name is used in errors) on the device opts names.
func NewDeviceSession(name string, model []byte, opts DeviceOptions) (*DeviceSession, error) {
	if err := initDevice(); err != nil {
		return nil, err
	}
	prov, err := ResolveProvider(opts.Provider)
	if err != nil {
		return nil, fmt.Errorf("device session for %s: %w", name, err)
	}
	if opts.CUDAGraph && prov != ProviderCUDA {
		return nil, fmt.Errorf("device session for %s: CUDA graphs need the CUDA provider, not %s", name, prov)
	}
	s := &DeviceSession{name: name, provider: prov, device: opts.CUDADevice, graphs: opts.CUDAGraph, multi: opts.MultipleGraphs}
	if opts.CustomOps {
		// ORT's inspection session would not know our operators.
		var err error
		if s.inputs, s.outputs, err = modelIO(model); err != nil {
			return nil, fmt.Errorf("read model %s: %w", name, err)
		}
	} else {
		ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
		if err != nil {
			return nil, fmt.Errorf("read model %s: %w", name, err)
		}
		for _, i := range ins {
			s.inputs = append(s.inputs, ioInfo(i))
		}
		for _, o := range outs {
			s.outputs = append(s.outputs, ioInfo(o))
		}
	}
	var keys, vals []string
	if prov == ProviderCUDA {
		if err := cudaRuntime(); err != nil {
			return nil, err
		}
		halfGemmFP32Reductions()
		if err := cerr(C.cudac_set_device(C.int(opts.CUDADevice))); err != nil {
			return nil, fmt.Errorf("device session for %s: %w", name, err)
		}
		if free, total, err := cudaMemInfo(); err == nil {
			s.memBase = total - free
		}
		o := map[string]string{"device_id": fmt.Sprint(opts.CUDADevice)}
		if opts.CUDAGraph {
			o["enable_cuda_graph"] = "1"
		}
		for k, v := range opts.CUDAOptions {
			o[k] = v
		}
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			vals = append(vals, o[k])
		}
	}
	ck, cv, freeC := cStrings(keys, vals)
	defer freeC()
	var ckeys, cvals []string
	for k := range opts.ConfigEntries {
		ckeys = append(ckeys, k)
	}
	sort.Strings(ckeys)
	for _, k := range ckeys {
		cvals = append(cvals, opts.ConfigEntries[k])
	}
	sk, sv, freeS := cStrings(ckeys, cvals)
	defer freeS()
	severity := -1
	if opts.LogSeverity != nil {
		severity = *opts.LogSeverity
	}
	if v, err := strconv.Atoi(os.Getenv("CARDSEG_ORT_LOG_SEVERITY")); err == nil {
		severity = v
	}
	level := 99 // ORT_ENABLE_ALL
	if opts.DisableOptimizations {
		level = 0
	}
	prof := C.CString(opts.ProfilePrefix)
	defer C.free(unsafe.Pointer(prof))
	provID := C.int(0)
	if prov == ProviderCUDA {
		provID = 1
	}
	// Keep the model bytes in C memory for the call (cgo forbids passing Go memory that the
	// callee might retain; ORT copies what it needs before returning).
	cm := C.CBytes(model)
	defer C.free(cm)
	memPattern := 1
	if opts.DisableMemPattern {
		memPattern = 0
	}
	customOps := 0
	if opts.CustomOps {
		customOps = 1
	}
	if err := cerr(C.ortc_session(cm, C.size_t(len(model)), provID, C.int(opts.IntraOpThreads), C.int(memPattern), C.int(level), C.int(severity), prof,
		ck, cv, C.int(len(keys)), sk, sv, C.int(len(ckeys)), C.int(customOps), &s.sess)); err != nil {
		hint := ""
		if opts.CUDAGraph && strings.Contains(err.Error(), "CUDA Graph") {
			hint = " (CUDA graphs need every node on the CUDA provider and static shapes)"
		}
		return nil, fmt.Errorf("create device session for %s: %w%s", name, err, hint)
	}
	isCUDA := C.int(0)
	if prov == ProviderCUDA {
		isCUDA = 1
	}
	if err := cerr(C.ortc_allocator(s.sess, isCUDA, C.int(opts.CUDADevice), &s.alloc, &s.mem)); err != nil {
		C.ortc_release_session(s.sess)
		return nil, fmt.Errorf("device session for %s: %w", name, err)
	}
	if prov == ProviderCUDA {
		var st unsafe.Pointer
		if err := cerr(C.cudac_stream(&st)); err != nil {
			s.Close()
			return nil, fmt.Errorf("device session for %s: %w", name, err)
		}
		s.stream = st
	}
	return s, nil
}

// cStrings copies two parallel string lists into C arrays.
func cStrings(keys, vals []string) (**C.char, **C.char, func()) {
	if len(keys) == 0 {
		return nil, nil, func() {}
	}
	n := len(keys)
	size := C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))
	ka := (*[1 << 20]*C.char)(C.malloc(size))[:n:n]
	va := (*[1 << 20]*C.char)(C.malloc(size))[:n:n]
	for i := range keys {
		ka[i] = C.CString(keys[i])
		va[i] = C.CString(vals[i])
	}
	return &ka[0], &va[0], func() {
		for i := range ka {
			C.free(unsafe.Pointer(ka[i]))
			C.free(unsafe.Pointer(va[i]))
		}
		C.free(unsafe.Pointer(&ka[0]))
		C.free(unsafe.Pointer(&va[0]))
	}
}

func cudaMemInfo() (free, total uint64, err error) {
	var f, t C.size_t
	if err := cerr(C.cudac_mem_info(&f, &t)); err != nil {
		return 0, 0, err
	}
	return uint64(f), uint64(t), nil
}

// CUDAProfiler starts (on) or stops CUDA's profiler data collection: a profiler run with
// collection off at the start (ncu --profile-from-start off) then sees only what runs
// between the two calls. CUDA must have been loaded by a CUDA device session.
func CUDAProfiler(on bool) error {
	if err := cerr(C.cudac_load()); err != nil {
		return err
	}
	flag := C.int(0)
	if on {
		flag = 1
	}
	return cerr(C.cudac_profiler(flag))
}

// Provider is the execution provider the session runs on.
func (s *DeviceSession) Provider() Provider { return s.provider }

// Inputs and Outputs describe the model's inputs and outputs.
func (s *DeviceSession) Inputs() []IOInfo  { return s.inputs }
func (s *DeviceSession) Outputs() []IOInfo { return s.outputs }

// MemoryInUse is the device memory in use now minus what was in use before the session was
// created (CUDA; the CUDA provider's arena only grows, so after a run this is the peak the
// session has needed). It is 0 on the CPU.
func (s *DeviceSession) MemoryInUse() uint64 {
	if s.provider != ProviderCUDA {
		return 0
	}
	free, total, err := cudaMemInfo()
	if err != nil || total-free < s.memBase {
		return 0
	}
	return total - free - s.memBase
}

// Close releases the bindings, tensors and the session.
func (s *DeviceSession) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, b := range s.bindings {
		C.ortc_release_binding(b.b)
		C.ortc_release_run_options(b.opts)
	}
	for _, t := range s.tensors {
		C.ortc_release_value(t.v)
		t.v = nil
	}
	if s.stream != nil {
		C.cudac_stream_destroy(s.stream)
	}
	C.ortc_release_allocator(s.alloc, s.mem)
	C.ortc_release_session(s.sess)
	return nil
}

// EndProfiling stops the profiler (ProfilePrefix) and returns the file it wrote.
func (s *DeviceSession) EndProfiling() (string, error) {
	var p *C.char
	if err := cerr(C.ortc_end_profiling(s.sess, &p)); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(p))
	return C.GoString(p), nil
}

// DeviceTensor is a tensor in the session's device memory, allocated by the session's
// allocator. Its address is fixed for its lifetime (what CUDA-graph replay needs).
type DeviceTensor struct {
	s     *DeviceSession
	v     *C.OrtValue
	ptr   unsafe.Pointer
	DType DType
	Shape []int64
	bytes int
}

func elemSize(d DType) (int, error) {
	switch d {
	case Float32, Int32:
		return 4, nil
	case Uint8, Int8, Bool:
		return 1, nil
	case Int64, Float64:
		return 8, nil
	case Float16:
		return 2, nil
	}
	return 0, fmt.Errorf("unsupported tensor element type %v", d)
}

// cShape copies a shape (rank 16 at most) into C memory for the C API; free releases it.
func cShape(shape []int64) (*C.int64_t, func(), error) {
	if len(shape) > 16 {
		return nil, nil, fmt.Errorf("tensor rank %d is over 16", len(shape))
	}
	cs := (*[16]C.int64_t)(C.malloc(C.size_t(8 * max(len(shape), 1))))
	for i, d := range shape {
		cs[i] = C.int64_t(d)
	}
	return &cs[0], func() { C.free(unsafe.Pointer(cs)) }, nil
}

// NewTensor allocates an uninitialised tensor on the session's device.
func (s *DeviceSession) NewTensor(dt DType, shape []int64) (*DeviceTensor, error) {
	es, err := elemSize(dt)
	if err != nil {
		return nil, err
	}
	cshape, freeShape, err := cShape(shape)
	if err != nil {
		return nil, err
	}
	defer freeShape()
	t := &DeviceTensor{s: s, DType: dt, Shape: append([]int64(nil), shape...), bytes: es * int(NumElements(shape))}
	var data unsafe.Pointer
	if err := cerr(C.ortc_tensor(s.alloc, cshape, C.size_t(len(shape)), C.int(dt), &t.v, &data)); err != nil {
		return nil, fmt.Errorf("%s: allocate %v%v on %s: %w", s.name, dt, shape, s.provider, err)
	}
	t.ptr = data
	s.mu.Lock()
	s.tensors = append(s.tensors, t)
	s.mu.Unlock()
	return t, nil
}

// blockAlign is the alignment of each tensor in a block (what cudaMalloc guarantees).
const blockAlign = 256

// NewTensorBlock allocates tensors of the given types and shapes in one allocation on the
// session's device, each at an offset aligned to 256 bytes, and returns the whole block (a
// uint8 tensor) with them: copying a block into another of the same layout (CopyFromAsync)
// moves every tensor in one transfer. The tensors are views: they live as long as the block.
func (s *DeviceSession) NewTensorBlock(specs []IOInfo) (*DeviceTensor, []*DeviceTensor, error) {
	offsets := make([]int, len(specs))
	sizes := make([]int, len(specs))
	total := 0
	for i, sp := range specs {
		es, err := elemSize(sp.DType)
		if err != nil {
			return nil, nil, err
		}
		n := NumElements(sp.Shape)
		if n < 0 {
			return nil, nil, fmt.Errorf("%s: %s has a symbolic dimension", s.name, sp)
		}
		offsets[i], sizes[i] = total, es*int(n)
		total += (sizes[i] + blockAlign - 1) / blockAlign * blockAlign
	}
	block, err := s.NewTensor(Uint8, []int64{int64(max(total, 1))})
	if err != nil {
		return nil, nil, err
	}
	views := make([]*DeviceTensor, len(specs))
	for i, sp := range specs {
		t := &DeviceTensor{s: s, DType: sp.DType, Shape: append([]int64(nil), sp.Shape...), bytes: sizes[i],
			ptr: unsafe.Add(block.ptr, offsets[i])}
		cshape, freeShape, err := cShape(sp.Shape)
		if err != nil {
			return nil, nil, err
		}
		err = cerr(C.ortc_tensor_over(s.mem, t.ptr, C.size_t(sizes[i]), cshape, C.size_t(len(sp.Shape)), C.int(sp.DType), &t.v))
		freeShape()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: view %v%v in a tensor block: %w", s.name, sp.DType, sp.Shape, err)
		}
		s.mu.Lock()
		s.tensors = append(s.tensors, t)
		s.mu.Unlock()
		views[i] = t
	}
	return block, views, nil
}

// NewTensorFor allocates a tensor with the type and shape of the model input or output name.
func (s *DeviceSession) NewTensorFor(name string) (*DeviceTensor, error) {
	for _, l := range [][]IOInfo{s.inputs, s.outputs} {
		for _, i := range l {
			if i.Name == name {
				for _, d := range i.Shape {
					if d < 0 {
						return nil, fmt.Errorf("%s: %s has a symbolic dimension; allocate it with NewTensor", s.name, i)
					}
				}
				return s.NewTensor(i.DType, i.Shape)
			}
		}
	}
	return nil, fmt.Errorf("%s: no input or output named %q", s.name, name)
}

// Bytes is the tensor's size in bytes.
func (t *DeviceTensor) Bytes() int { return t.bytes }

// Memcpy kinds (cudaMemcpyKind).
const (
	hostToDevice   = 1
	deviceToHost   = 2
	deviceToDevice = 3
)

func (t *DeviceTensor) copyIn(src unsafe.Pointer, n int, stream unsafe.Pointer) error {
	if n != t.bytes {
		return fmt.Errorf("%s: upload of %d bytes into a %v%v tensor of %d bytes", t.s.name, n, t.DType, t.Shape, t.bytes)
	}
	if n == 0 {
		return nil
	}
	if t.s.provider != ProviderCUDA {
		C.memcpy(t.ptr, src, C.size_t(n))
		return nil
	}
	return cerr(C.cudac_copy(t.ptr, src, C.size_t(n), hostToDevice, stream))
}

func hostBytes(src *Tensor) (unsafe.Pointer, int, error) {
	es, err := elemSize(src.DType)
	if err != nil {
		return nil, 0, err
	}
	n := int(NumElements(src.Shape))
	if n == 0 {
		return nil, 0, nil
	}
	var p unsafe.Pointer
	switch d := src.data.(type) {
	case []float32:
		p = unsafe.Pointer(&d[0])
	case []uint8:
		p = unsafe.Pointer(&d[0])
	case []int8:
		p = unsafe.Pointer(&d[0])
	case []int32:
		p = unsafe.Pointer(&d[0])
	case []int64:
		p = unsafe.Pointer(&d[0])
	case []bool:
		p = unsafe.Pointer(&d[0])
	case []Half:
		p = unsafe.Pointer(&d[0])
	case []float64:
		p = unsafe.Pointer(&d[0])
	default:
		return nil, 0, fmt.Errorf("unsupported tensor data %T", d)
	}
	return p, es * n, nil
}

func (t *DeviceTensor) check(src *Tensor) error {
	if src.DType != t.DType || !sameDims(src.Shape, t.Shape) {
		return fmt.Errorf("%s: cannot copy %v%v into a device tensor %v%v", t.s.name, src.DType, src.Shape, t.DType, t.Shape)
	}
	return nil
}

func sameDims(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Upload copies a host tensor of the same type and shape into the device tensor and waits
// for the copy.
func (t *DeviceTensor) Upload(src *Tensor) error {
	if err := t.check(src); err != nil {
		return err
	}
	p, n, err := hostBytes(src)
	if err != nil {
		return err
	}
	return t.copyIn(p, n, nil)
}

// Download copies the device tensor into dst (same type and shape), waiting for the copy.
func (t *DeviceTensor) Download(dst *Tensor) error {
	if err := t.check(dst); err != nil {
		return err
	}
	p, n, err := hostBytes(dst)
	if err != nil || n == 0 {
		return err
	}
	if t.s.provider != ProviderCUDA {
		C.memcpy(p, t.ptr, C.size_t(n))
		return nil
	}
	return cerr(C.cudac_copy(p, t.ptr, C.size_t(n), deviceToHost, nil))
}

// Fetch downloads the tensor into a new host tensor.
func (t *DeviceTensor) Fetch() (*Tensor, error) {
	h, err := Zeros(t.DType, t.Shape)
	if err != nil {
		return nil, err
	}
	return h, t.Download(h)
}

// CopyFromAsync queues a copy of another device tensor of the session into t on the upload
// stream (WaitUploads waits for it); on the CPU it copies at once.
func (t *DeviceTensor) CopyFromAsync(src *DeviceTensor) error { return t.copyDevice(src, t.s.stream) }

// CopyFrom copies another device tensor of the same session, type and shape into t.
func (t *DeviceTensor) CopyFrom(src *DeviceTensor) error { return t.copyDevice(src, nil) }

func (t *DeviceTensor) copyDevice(src *DeviceTensor, stream unsafe.Pointer) error {
	if src.DType != t.DType || !sameDims(src.Shape, t.Shape) {
		return fmt.Errorf("%s: cannot copy device tensor %v%v into %v%v", t.s.name, src.DType, src.Shape, t.DType, t.Shape)
	}
	if t.bytes == 0 {
		return nil
	}
	if t.s.provider != ProviderCUDA {
		C.memcpy(t.ptr, src.ptr, C.size_t(t.bytes))
		return nil
	}
	return cerr(C.cudac_copy(t.ptr, src.ptr, C.size_t(t.bytes), deviceToDevice, stream))
}

// HostBuffer is host memory for asynchronous uploads: page-locked (pinned) with CUDA, so the
// copy engine reads it while the GPU computes; plain C memory on the CPU.
type HostBuffer struct {
	s     *DeviceSession
	ptr   unsafe.Pointer
	bytes int
}

// NewHostBuffer allocates n bytes of upload staging memory.
func (s *DeviceSession) NewHostBuffer(n int) (*HostBuffer, error) {
	if n <= 0 {
		return nil, fmt.Errorf("host buffer of %d bytes", n)
	}
	b := &HostBuffer{s: s, bytes: n}
	if s.provider == ProviderCUDA {
		if err := cerr(C.cudac_host_alloc(C.size_t(n), &b.ptr)); err != nil {
			return nil, err
		}
	} else {
		b.ptr = C.calloc(C.size_t(n), 1)
		if b.ptr == nil {
			return nil, fmt.Errorf("host buffer of %d bytes: out of memory", n)
		}
	}
	return b, nil
}

// Float32s and Int64s view the buffer's memory as elements (valid until Free).
func (b *HostBuffer) Float32s() []float32 { return unsafe.Slice((*float32)(b.ptr), b.bytes/4) }
func (b *HostBuffer) Int64s() []int64     { return unsafe.Slice((*int64)(b.ptr), b.bytes/8) }
func (b *HostBuffer) Halves() []Half      { return unsafe.Slice((*Half)(b.ptr), b.bytes/2) }

// Free releases the buffer (no upload from it may be in flight).
func (b *HostBuffer) Free() {
	if b.ptr == nil {
		return
	}
	if b.s.provider == ProviderCUDA {
		C.cudac_host_free(b.ptr)
	} else {
		C.free(b.ptr)
	}
	b.ptr = nil
}

// UploadAsync starts copying the first t.Bytes() bytes of b into t and returns at once (on
// the CPU it copies before returning). Neither b nor t may be touched until WaitUploads.
func (t *DeviceTensor) UploadAsync(b *HostBuffer) error {
	if b.bytes < t.bytes {
		return fmt.Errorf("%s: upload from a %d-byte buffer into a %d-byte tensor", t.s.name, b.bytes, t.bytes)
	}
	return t.copyIn(b.ptr, t.bytes, t.s.stream)
}

// WaitUploads waits for every UploadAsync started so far.
func (s *DeviceSession) WaitUploads() error {
	if s.stream == nil {
		return nil
	}
	return cerr(C.cudac_sync(s.stream))
}

// Binding is a fixed assignment of device tensors to a model's inputs and outputs, with its
// run options (its CUDA graph id when graphs are on). Build one per distinct assignment
// and reuse it: with CUDA graphs the first runs of a binding capture its graph.
type Binding struct {
	s       *DeviceSession
	b       *C.OrtIoBinding
	opts    *C.OrtRunOptions
	id      int
	inputs  map[string]*DeviceTensor
	outputs map[string]*DeviceTensor
}

// NewBinding binds every input and output of the model; all must be given. graphID names
// the CUDA graph the binding replays (distinct per binding; ignored without CUDA graphs).
func (s *DeviceSession) NewBinding(graphID int, inputs, outputs map[string]*DeviceTensor) (*Binding, error) {
	if err := s.checkBound("input", s.inputs, inputs); err != nil {
		return nil, err
	}
	if err := s.checkBound("output", s.outputs, outputs); err != nil {
		return nil, err
	}
	s.mu.Lock()
	n := len(s.bindings)
	s.mu.Unlock()
	if s.graphs && !s.multi && n > 0 {
		return nil, fmt.Errorf("%s: a second binding would capture a second CUDA graph in the session, which ONNX Runtime 1.29 does not keep apart (DeviceOptions.MultipleGraphs)", s.name)
	}
	b := &Binding{s: s, id: graphID, inputs: inputs, outputs: outputs}
	if err := cerr(C.ortc_binding(s.sess, &b.b)); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	id := C.int(-1)
	if s.graphs {
		id = C.int(graphID)
	}
	if err := cerr(C.ortc_run_options(id, 0, &b.opts)); err != nil {
		C.ortc_release_binding(b.b)
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	bind := func(out int, m map[string]*DeviceTensor) error {
		for name, t := range m {
			cn := C.CString(name)
			err := cerr(C.ortc_bind(b.b, C.int(out), cn, t.v))
			C.free(unsafe.Pointer(cn))
			if err != nil {
				return fmt.Errorf("%s: bind %s: %w", s.name, name, err)
			}
		}
		return nil
	}
	err := bind(0, inputs)
	if err == nil {
		err = bind(1, outputs)
	}
	if err != nil {
		C.ortc_release_binding(b.b)
		C.ortc_release_run_options(b.opts)
		return nil, err
	}
	s.mu.Lock()
	s.bindings = append(s.bindings, b)
	s.mu.Unlock()
	return b, nil
}

func (s *DeviceSession) checkBound(kind string, infos []IOInfo, m map[string]*DeviceTensor) error {
	for _, i := range infos {
		t, ok := m[i.Name]
		if !ok {
			return fmt.Errorf("%s: %s %s is not bound", s.name, kind, i.Name)
		}
		if t.s != s {
			return fmt.Errorf("%s: %s %s is bound to a tensor of another session", s.name, kind, i.Name)
		}
		if t.DType != i.DType || len(t.Shape) != len(i.Shape) {
			return fmt.Errorf("%s: %s %s wants %v, bound %v%v", s.name, kind, i, i.DType, t.DType, t.Shape)
		}
		for k, d := range i.Shape {
			if d >= 0 && t.Shape[k] != d {
				return fmt.Errorf("%s: %s %s wants shape %v, bound %v", s.name, kind, i, i.Shape, t.Shape)
			}
		}
	}
	if len(m) != len(infos) {
		for n := range m {
			if !hasName(infos, n) {
				return fmt.Errorf("%s: the model has no %s %q; it has %s", s.name, kind, n, describe(infos))
			}
		}
	}
	return nil
}

// Input and Output return the tensor bound to a name.
func (b *Binding) Input(name string) *DeviceTensor  { return b.inputs[name] }
func (b *Binding) Output(name string) *DeviceTensor { return b.outputs[name] }

// Run runs the model on the binding and waits for it to finish.
func (s *DeviceSession) Run(b *Binding) error {
	if b.s != s {
		return fmt.Errorf("%s: binding of another session", s.name)
	}
	if err := cerr(C.ortc_run(s.sess, b.opts, b.b)); err != nil {
		return fmt.Errorf("run %s: %w", s.name, err)
	}
	return nil
}
