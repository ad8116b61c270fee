package runtime

import (
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// DType is a tensor element type; the values are ONNX's TensorProto.DataType codes.
type DType int32

const (
	Float32 DType = 1
	Uint8   DType = 2
	Int8    DType = 3
	Int32   DType = 6
	Int64   DType = 7
	Bool    DType = 9
	Float16 DType = 10
	Float64 DType = 11
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Bool:
		return "bool"
	case Float16:
		return "float16"
	case Float64:
		return "float64"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Half is an IEEE 754 binary16 value, stored as its bits.
type Half uint16

// Element is a Go type a Tensor can hold.
type Element interface {
	float32 | uint8 | int8 | int32 | int64 | bool | Half | float64
}

func dtypeOf[T Element]() DType {
	var z T
	switch any(z).(type) {
	case float32:
		return Float32
	case uint8:
		return Uint8
	case int8:
		return Int8
	case int32:
		return Int32
	case int64:
		return Int64
	case bool:
		return Bool
	case Half:
		return Float16
	case float64:
		return Float64
	}
	panic("unreachable")
}

// Tensor is the one tensor type at the boundary to ONNX Runtime: a shape, an element type and
// a Go slice holding the elements in row-major order.
type Tensor struct {
	Shape []int64
	DType DType
	data  any
}

// NumElements is the product of the shape (1 for a scalar).
func NumElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// New wraps data (not copied) as a tensor of the given shape.
func New[T Element](shape []int64, data []T) (*Tensor, error) {
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("tensor shape %v has a negative dimension", shape)
		}
	}
	if n := NumElements(shape); int64(len(data)) != n {
		return nil, fmt.Errorf("tensor shape %v needs %d elements, got %d", shape, n, len(data))
	}
	return &Tensor{Shape: append([]int64(nil), shape...), DType: dtypeOf[T](), data: data}, nil
}

// MustNew is New for shapes and data the caller built together; it panics on a mismatch.
func MustNew[T Element](shape []int64, data []T) *Tensor {
	t, err := New(shape, data)
	if err != nil {
		panic(err)
	}
	return t
}

// Scalar is a rank-0 tensor.
func Scalar[T Element](v T) *Tensor { return MustNew([]int64{}, []T{v}) }

// Zeros allocates a tensor of the given type and shape.
func Zeros(dtype DType, shape []int64) (*Tensor, error) {
	n := NumElements(shape)
	var data any
	switch dtype {
	case Float32:
		data = make([]float32, n)
	case Uint8:
		data = make([]uint8, n)
	case Int8:
		data = make([]int8, n)
	case Int32:
		data = make([]int32, n)
	case Int64:
		data = make([]int64, n)
	case Bool:
		data = make([]bool, n)
	case Float16:
		data = make([]Half, n)
	case Float64:
		data = make([]float64, n)
	default:
		return nil, fmt.Errorf("unsupported tensor element type %v", dtype)
	}
	return &Tensor{Shape: append([]int64(nil), shape...), DType: dtype, data: data}, nil
}

// Data returns the tensor's elements as []T; it panics if T is not the tensor's type (a
// programmer error: the graph declares every type).
func Data[T Element](t *Tensor) []T {
	d, ok := t.data.([]T)
	if !ok {
		var z T
		panic(fmt.Sprintf("tensor of %v read as %T", t.DType, z))
	}
	return d
}

// Float32s returns the elements of a float32 tensor, or of a float16 tensor converted.
func (t *Tensor) Float32s() []float32 {
	switch d := t.data.(type) {
	case []float32:
		return d
	case []Half:
		out := make([]float32, len(d))
		for i, h := range d {
			out[i] = h.Float32()
		}
		return out
	}
	panic(fmt.Sprintf("tensor of %v read as float32", t.DType))
}

// ToFloat16 converts a float32 slice to binary16 (round to nearest even).
func ToFloat16(src []float32) []Half {
	out := make([]Half, len(src))
	for i, f := range src {
		out[i] = HalfFromFloat32(f)
	}
	return out
}

// HalfFromFloat32 rounds f to the nearest binary16 value (ties to even), with overflow to ±Inf
// and gradual underflow to subnormals, as IEEE 754 and CUDA's __float2half_rn do.
func HalfFromFloat32(f float32) Half { return Half(f16.FromFloat32(f)) }

// Float32 widens a binary16 value exactly.
func (h Half) Float32() float32 { return f16.ToFloat32(uint16(h)) }

// ortValue makes an ONNX Runtime value that shares the tensor's memory.
func (t *Tensor) ortValue() (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	switch d := t.data.(type) {
	case []float32:
		return newOrt(shape, d)
	case []uint8:
		return newOrt(shape, d)
	case []int8:
		return newOrt(shape, d)
	case []int32:
		return newOrt(shape, d)
	case []int64:
		return newOrt(shape, d)
	case []bool:
		return newOrt(shape, d)
	case []float64:
		return newOrt(shape, d)
	case []Half:
		if len(t.Shape) == 0 {
			return nil, fmt.Errorf("rank-0 float16 tensors are not supported; use shape [1]")
		}
		if len(d) == 0 {
			return nil, fmt.Errorf("empty float16 tensor %v is not supported", t.Shape)
		}
		raw := unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 2*len(d))
		return ort.NewCustomDataTensor(shape, raw, ort.TensorElementDataTypeFloat16)
	}
	return nil, fmt.Errorf("unsupported tensor element type %v", t.DType)
}

func newOrt[T ort.TensorData](shape ort.Shape, d []T) (ort.Value, error) {
	if len(shape) == 0 {
		// onnxruntime_go's tensors reject rank 0; its Scalar type is the rank-0 tensor. It holds
		// its own copy, so outputs are read back through scalarResult.
		return ort.NewScalar(d[0])
	}
	if len(d) == 0 {
		// ORT accepts zero-element tensors; onnxruntime_go needs a non-nil backing array.
		d = make([]T, 0, 1)
	}
	return ort.NewTensor(shape, d)
}

// fromOrtValue copies a value ORT allocated into a Tensor. FP16 is never taken this way:
// onnxruntime_go copies only half the bytes of such outputs, so Session.Run pre-allocates them.
func fromOrtValue(v ort.Value) (*Tensor, error) {
	shape := []int64(v.GetShape())
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		return New(shape, append([]float32(nil), x.GetData()...))
	case *ort.Tensor[uint8]:
		return New(shape, append([]uint8(nil), x.GetData()...))
	case *ort.Tensor[int8]:
		return New(shape, append([]int8(nil), x.GetData()...))
	case *ort.Tensor[int32]:
		return New(shape, append([]int32(nil), x.GetData()...))
	case *ort.Tensor[int64]:
		return New(shape, append([]int64(nil), x.GetData()...))
	case *ort.Tensor[bool]:
		return New(shape, append([]bool(nil), x.GetData()...))
	case *ort.Tensor[float64]:
		return New(shape, append([]float64(nil), x.GetData()...))
	}
	return nil, fmt.Errorf("unsupported output value %T", v)
}

// copyScalarBack copies a rank-0 output that ORT wrote into an ort.Scalar back into t.
func copyScalarBack(v ort.Value, t *Tensor) {
	switch x := v.(type) {
	case *ort.Scalar[float32]:
		Data[float32](t)[0] = x.GetData()
	case *ort.Scalar[uint8]:
		Data[uint8](t)[0] = x.GetData()
	case *ort.Scalar[int8]:
		Data[int8](t)[0] = x.GetData()
	case *ort.Scalar[int32]:
		Data[int32](t)[0] = x.GetData()
	case *ort.Scalar[int64]:
		Data[int64](t)[0] = x.GetData()
	case *ort.Scalar[bool]:
		Data[bool](t)[0] = x.GetData()
	case *ort.Scalar[float64]:
		Data[float64](t)[0] = x.GetData()
	}
}
