// Package kernels holds the C and CUDA sources of runtime's custom operators (ai.cardseg):
// bn.cu (the GPU kernels, compiled to PTX by tools/gen/ptx), cpu.h (the CPU kernels) and
// launch.h (which kernels each operator launches, on what grids). runtime/customops.c includes
// cpu.h and launch.h.
//
// The Go package itself is their test bench: it runs bn.cu's kernels on the CPU (emu.cc),
// through the same launch plans that runtime gives the CUDA driver, next to the CPU kernels.
// Tests use it to check the GPU kernels' indexing, reductions and grids on machines without a
// GPU; it reports kernels that write outside their outputs or into their inputs, leave
// outputs unwritten, or meet at barriers out of step. The GPU tests (graphs/model's *CUDA
// tests) remain the check of the real hardware.
//
// It compiles the kernels as C++ (g++; Debian: apt-get install g++).
package kernels

/*
#cgo CXXFLAGS: -O2 -std=c++17 -fno-strict-aliasing
#include <stdlib.h>
#include "emu.h"
*/
import "C"

import (
	_ "embed"
	"errors"
	"unsafe"
)

// emu.cc includes bn.cu, an extension the go command does not hash into the package's build:
// embedding it does, so an edit to the kernels rebuilds the emulation.
//
//go:embed bn.cu
var bnSource string

// Where runs an operator: the GPU's kernels (emulated) or the CPU reference.
type Where int

const (
	CPU Where = iota // runtime/kernels/cpu.h
	GPU              // runtime/kernels/bn.cu through runtime/kernels/launch.h, emulated
)

func (w Where) String() string {
	if w == GPU {
		return "gpu"
	}
	return "cpu"
}

// Geo is a depthwise layer: kernel k×k, strides, dilations, padding at the top and left, and
// the planes of x (H×W) and y (Ho×Wo).
type Geo struct {
	K, SH, SW, DH, DW, PH, PW int
	N, C, H, W, Ho, Wo        int
}

func (g Geo) c() C.EmuGeo {
	return C.EmuGeo{k: C.int(g.K), sh: C.int(g.SH), sw: C.int(g.SW), dh: C.int(g.DH), dw: C.int(g.DW), ph: C.int(g.PH), pw: C.int(g.PW),
		N: C.int(g.N), C: C.int(g.C), H: C.int(g.H), W: C.int(g.W), Ho: C.int(g.Ho), Wo: C.int(g.Wo)}
}

// BN is a batch-norm layer on x [N, C, HW] with Splits partial sums per channel on the GPU.
type BN struct {
	N, C, HW, Splits int
	Eps              float32
	Act              int // 0 none, 1 ReLU, 2 HardSwish
}

const errLen = 512

func call(f func(buf *C.char) C.int) error {
	buf := (*C.char)(C.malloc(errLen))
	defer C.free(unsafe.Pointer(buf))
	if f(buf) != 0 {
		return errors.New("emu: " + C.GoString(buf))
	}
	return nil
}

func u16p(s []uint16) *C.uint16_t { return (*C.uint16_t)(unsafe.Pointer(unsafe.SliceData(s))) }
func f32p(s []float32) *C.float   { return (*C.float)(unsafe.Pointer(unsafe.SliceData(s))) }

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (b BN) check(x []uint16, params ...[]float32) error {
	if b.N < 1 || b.C < 1 || b.HW < 1 || b.Splits < 1 || len(x) != b.N*b.C*b.HW {
		return errors.New("emu: batch norm: sizes do not match the layer")
	}
	for _, p := range params {
		if len(p) != b.C {
			return errors.New("emu: batch norm: a per-channel input does not have C entries")
		}
	}
	return nil
}

// BNForward runs BatchNormTrain16: y, the batch mean and the biased variance.
func BNForward(w Where, b BN, x []uint16, gamma, beta []float32) (y []uint16, mean, variance []float32, err error) {
	if err := b.check(x, gamma, beta); err != nil {
		return nil, nil, nil, err
	}
	y, mean, variance = make([]uint16, len(x)), make([]float32, b.C), make([]float32, b.C)
	err = call(func(e *C.char) C.int {
		return C.emu_bn_forward(b2i(w == GPU), u16p(x), f32p(gamma), f32p(beta), u16p(y), f32p(mean), f32p(variance), C.int(b.N), C.int(b.C),
			C.int(b.HW), C.int(b.Splits), C.float(b.Eps), C.int(b.Act), e, errLen)
	})
	return y, mean, variance, err
}

// BNBackward runs BatchNormTrain16Grad: dx, dγ, dβ.
func BNBackward(w Where, b BN, dy, x []uint16, gamma, beta, mean, variance []float32) (dx []uint16, dgamma, dbeta []float32, err error) {
	if err := b.check(x, gamma, beta, mean, variance); err != nil || len(dy) != len(x) {
		return nil, nil, nil, errors.Join(err, errors.New("emu: batch norm gradient: check the sizes"))
	}
	dx, dgamma, dbeta = make([]uint16, len(x)), make([]float32, b.C), make([]float32, b.C)
	err = call(func(e *C.char) C.int {
		return C.emu_bn_backward(b2i(w == GPU), u16p(dy), u16p(x), f32p(gamma), f32p(beta), f32p(mean), f32p(variance), u16p(dx), f32p(dgamma),
			f32p(dbeta), C.int(b.N), C.int(b.C), C.int(b.HW), C.int(b.Splits), C.float(b.Eps), C.int(b.Act), e, errLen)
	})
	return dx, dgamma, dbeta, err
}

func (g Geo) check(x, y int) error {
	if g.K != 3 && g.K != 5 || g.N < 1 || g.C < 1 || g.H < 1 || g.W < 1 || g.Ho < 1 || g.Wo < 1 || x != g.N*g.C*g.H*g.W || y != g.N*g.C*g.Ho*g.Wo {
		return errors.New("emu: depthwise: sizes do not match the geometry")
	}
	return nil
}

// DWGrad runs DepthwiseWeightGrad16 with splits partial sums per channel on the GPU.
func DWGrad(w Where, g Geo, splits int, x, dy []uint16) ([]uint16, error) {
	if err := g.check(len(x), len(dy)); err != nil {
		return nil, err
	}
	dW := make([]uint16, g.C*g.K*g.K)
	err := call(func(e *C.char) C.int {
		return C.emu_dw_grad(b2i(w == GPU), u16p(x), u16p(dy), u16p(dW), g.c(), C.int(splits), e, errLen)
	})
	return dW, err
}

// DWConv runs DepthwiseConv16 (in is x, the result y) or, with grad, DepthwiseConvGrad16 (in
// is dy, the result dx). filter is [C,1,K,K].
func DWConv(w Where, g Geo, grad bool, in, filter []uint16) ([]uint16, error) {
	nx, ny := g.N*g.C*g.H*g.W, g.N*g.C*g.Ho*g.Wo
	nin, nout := nx, ny
	if grad {
		nin, nout = ny, nx
	}
	if err := g.check(nx, ny); err != nil || len(in) != nin || len(filter) != g.C*g.K*g.K {
		return nil, errors.Join(err, errors.New("emu: depthwise: check the sizes"))
	}
	out := make([]uint16, nout)
	err := call(func(e *C.char) C.int {
		return C.emu_dw_conv(b2i(w == GPU), u16p(in), u16p(filter), u16p(out), g.c(), b2i(grad), e, errLen)
	})
	return out, err
}

// Packed is one tensor of PackRows and UnpackRows: float16 bits (Half) or float32 (Float).
type Packed struct {
	Half  []uint16
	Float []float32
}

func (p Packed) len() int {
	if p.Half != nil {
		return len(p.Half)
	}
	return len(p.Float)
}

// packCall runs emu_pack with the tensors copied to C memory (a table of Go pointers cannot
// cross into C): in pack mode ts are the inputs and m the result; in unpack mode m is the
// input and ts are overwritten.
func packCall(w Where, ts []Packed, m []float32, unpack bool) error {
	n := len(ts)
	ptrs := (*[1 << 20]unsafe.Pointer)(C.malloc(C.size_t(max(n, 1)) * C.size_t(unsafe.Sizeof(unsafe.Pointer(nil)))))[:n:n]
	sizes := make([]int64, n)
	half := make([]uint8, n)
	defer func() {
		for _, p := range ptrs {
			C.free(p)
		}
		C.free(unsafe.Pointer(unsafe.SliceData(ptrs)))
	}()
	for j, t := range ts {
		sizes[j] = int64(t.len())
		bytes := C.size_t(t.len()) * 4
		if t.Half != nil {
			half[j] = 1
			bytes = C.size_t(t.len()) * 2
		}
		ptrs[j] = C.malloc(max(bytes, 1))
		if t.Half != nil {
			copy(unsafe.Slice((*uint16)(ptrs[j]), t.len()), t.Half)
		} else {
			copy(unsafe.Slice((*float32)(ptrs[j]), t.len()), t.Float)
		}
	}
	err := call(func(e *C.char) C.int {
		return C.emu_pack(b2i(w == GPU), C.int(n), (*unsafe.Pointer)(unsafe.SliceData(ptrs)), (*C.int64_t)(unsafe.SliceData(sizes)),
			(*C.uchar)(unsafe.SliceData(half)), f32p(m), C.int64_t(len(m)), b2i(unpack), e, errLen)
	})
	if err == nil && unpack {
		for j, t := range ts {
			if t.Half != nil {
				copy(t.Half, unsafe.Slice((*uint16)(ptrs[j]), t.len()))
			} else {
				copy(t.Float, unsafe.Slice((*float32)(ptrs[j]), t.len()))
			}
		}
	}
	return err
}

// Pack runs PackRows: the tensors end to end in a float32 matrix of total elements (at least
// their sizes' sum), zeros after them.
func Pack(w Where, ts []Packed, total int) ([]float32, error) {
	sum := 0
	for _, t := range ts {
		sum += t.len()
	}
	if total < sum {
		return nil, errors.New("emu: pack: the matrix is smaller than the tensors")
	}
	m := make([]float32, total)
	return m, packCall(w, ts, m, false)
}

// Unpack runs UnpackRows: m's elements into new tensors of like's types and sizes.
func Unpack(w Where, m []float32, like []Packed) ([]Packed, error) {
	out := make([]Packed, len(like))
	sum := 0
	for j, t := range like {
		if t.Half != nil {
			out[j].Half = make([]uint16, len(t.Half))
		} else {
			out[j].Float = make([]float32, len(t.Float))
		}
		sum += t.len()
	}
	if len(m) < sum {
		return nil, errors.New("emu: unpack: the matrix is smaller than the tensors")
	}
	return out, packCall(w, out, m, true)
}

// Adam is one fused AdamW call: the packed p and g (Total elements), the flat moments M and V
// (P elements), the step's scalars (decay, step size, 1/√(1 − β2^t), gscale) and the skip flag.
type Adam struct {
	P, G, M, V        []float32
	Scalars           [4]float32
	Skip              bool
	Beta1, Beta2, Eps float32
}

// AdamW runs the fused AdamW and returns the new p, m and v.
func AdamW(w Where, a Adam) (p2, m2, v2 []float32, err error) {
	if len(a.G) != len(a.P) || len(a.M) != len(a.V) || len(a.M) > len(a.P) {
		return nil, nil, nil, errors.New("emu: adamw: p and g must match, and hold at least the moments' elements")
	}
	p2, m2, v2 = make([]float32, len(a.P)), make([]float32, len(a.M)), make([]float32, len(a.M))
	err = call(func(e *C.char) C.int {
		return C.emu_adamw(b2i(w == GPU), f32p(a.P), f32p(a.G), f32p(a.M), f32p(a.V), f32p(p2), f32p(m2), f32p(v2), f32p(a.Scalars[:]),
			b2i(a.Skip), C.int(len(a.P)), C.int(len(a.M)), C.float(a.Beta1), C.float(a.Beta2), C.float(a.Eps), e, errLen)
	})
	return p2, m2, v2, err
}

// SegLoss runs SegLoss16 on logits z [N,K,HW] (float16 bits) and labels y [N,HW] with splits
// partial sums per image, and returns the per-image sums: cross-entropy, p·t, p, t, pixels.
func SegLoss(w Where, z []uint16, y []int64, n, k, hw, splits int) (parts [5][]float32, err error) {
	if len(z) != n*k*hw || len(y) != n*hw || splits < 1 || splits > hw {
		return parts, errors.New("emu: seg loss: sizes do not match")
	}
	flat := make([]float32, 5*n)
	err = call(func(e *C.char) C.int {
		return C.emu_seg_loss(b2i(w == GPU), u16p(z), (*C.int64_t)(unsafe.SliceData(y)), f32p(flat), C.int(n), C.int(k), C.int(hw),
			C.int(splits), e, errLen)
	})
	for j := range parts {
		parts[j] = flat[j*n : (j+1)*n]
	}
	return parts, err
}

// SegLossGrad runs SegLoss16Grad: the logits' gradient given those of the cross-entropy, p·t
// and p sums (N each).
func SegLossGrad(w Where, z []uint16, y []int64, dce, dinter, dp []float32, n, k, hw int) ([]uint16, error) {
	if len(z) != n*k*hw || len(y) != n*hw || len(dce) != n || len(dinter) != n || len(dp) != n {
		return nil, errors.New("emu: seg loss gradient: sizes do not match")
	}
	d := append(append(append([]float32{}, dce...), dinter...), dp...)
	dz := make([]uint16, len(z))
	err := call(func(e *C.char) C.int {
		return C.emu_seg_grad(b2i(w == GPU), u16p(z), (*C.int64_t)(unsafe.SliceData(y)), f32p(d), u16p(dz), C.int(n), C.int(k), C.int(hw), e,
			errLen)
	})
	return dz, err
}

// ChannelScale runs ChannelScale16: y = x·s + t over p planes of hw elements (float16 bits; s
// and t one value per plane).
func ChannelScale(w Where, x, s, t []uint16, p, hw int) ([]uint16, error) {
	if len(x) != p*hw || len(s) != p || len(t) != p {
		return nil, errors.New("emu: channel scale: sizes do not match")
	}
	y := make([]uint16, len(x))
	err := call(func(e *C.char) C.int {
		return C.emu_channel_scale(b2i(w == GPU), u16p(x), u16p(s), u16p(t), u16p(y), C.int(p), C.int(hw), e, errLen)
	})
	return y, err
}

// ChannelDot runs ChannelDot16: Σ a·b over each of p planes of hw elements.
func ChannelDot(w Where, a, b []uint16, p, hw int) ([]uint16, error) {
	if len(a) != p*hw || len(b) != p*hw {
		return nil, errors.New("emu: channel dot: sizes do not match")
	}
	out := make([]uint16, p)
	err := call(func(e *C.char) C.int {
		return C.emu_channel_dot(b2i(w == GPU), u16p(a), u16p(b), u16p(out), C.int(p), C.int(hw), e, errLen)
	})
	return out, err
}

// selftest runs emu_selftest(which): nil for the correct kernel, the emulation's report for
// the faulty ones.
func selftest(which int) error {
	return call(func(e *C.char) C.int { return C.emu_selftest(C.int(which), e, errLen) })
}

// ScalarOnly keeps every operator on its first kernels (one float16 value per load, one
// thread per element) when on, as CARDSEG_CUDA_KERNELS=scalar does on the GPU.
func ScalarOnly(on bool) { C.emu_scalar_only(b2i(on)) }

// Launches returns how many times each kernel has been launched in this process, by name.
func Launches() map[string]int64 {
	out := map[string]int64{}
	for f := 0; f < int(C.emu_kernel_count()); f++ {
		out[C.GoString(C.emu_kernel_name(C.int(f)))] = int64(C.emu_launches(C.int(f)))
	}
	return out
}

// BlocksRun is the number of thread blocks the emulation has run in this process.
func BlocksRun() int64 { return int64(C.emu_blocks_run()) }
