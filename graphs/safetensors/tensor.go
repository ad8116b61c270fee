package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// Element types, spelled as in the header's "dtype" field.
const (
	F64  = "F64"
	F32  = "F32"
	F16  = "F16"
	BF16 = "BF16"
	I64  = "I64"
	I32  = "I32"
	U8   = "U8"
	BOOL = "BOOL"
)

// DTypeSize returns the size in bytes of one element of dtype, and false for an unknown dtype.
func DTypeSize(dtype string) (int, bool) {
	switch dtype {
	case F64, I64:
		return 8, true
	case F32, I32:
		return 4, true
	case F16, BF16:
		return 2, true
	case U8, BOOL:
		return 1, true
	}
	return 0, false
}

// Tensor is one named array of a file: its dtype, shape and row-major little-endian bytes.
type Tensor struct {
	DType string
	Shape []int64
	Data  []byte
}

// New returns a tensor over data after checking that data holds exactly the elements of shape.
func New(dtype string, shape []int64, data []byte) (Tensor, error) {
	t := Tensor{DType: dtype, Shape: append([]int64{}, shape...), Data: data}
	return t, t.Validate()
}

// Elements returns the number of elements of shape (1 for a scalar's empty shape), or an
// error for a negative dimension or a count that overflows int64.
func Elements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that the dtype is known and that Data holds exactly the elements of Shape.
func (t Tensor) Validate() error {
	size, ok := DTypeSize(t.DType)
	if !ok {
		return fmt.Errorf("unknown dtype %q", t.DType)
	}
	n, err := Elements(t.Shape)
	if err != nil {
		return err
	}
	if n > math.MaxInt64/int64(size) || n*int64(size) != int64(len(t.Data)) {
		return fmt.Errorf("%s %v needs %d elements of %d bytes, have %d bytes", t.DType, t.Shape, n, size, len(t.Data))
	}
	return nil
}

// FromFloat32 returns an F32 tensor of the given shape holding values.
func FromFloat32(values []float32, shape ...int64) (Tensor, error) {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return New(F32, shape, data)
}

// FromInt64 returns an I64 tensor of the given shape holding values.
func FromInt64(values []int64, shape ...int64) (Tensor, error) {
	data := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(v))
	}
	return New(I64, shape, data)
}

// FromUint8 returns a U8 tensor of the given shape holding a copy of values.
func FromUint8(values []uint8, shape ...int64) (Tensor, error) {
	return New(U8, shape, append([]byte{}, values...))
}

// Float32s returns the elements of a floating-point tensor (F32, F16, BF16, F64) as float32;
// F64 values are rounded to the nearest float32.
func (t Tensor) Float32s() ([]float32, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	size, _ := DTypeSize(t.DType)
	out := make([]float32, len(t.Data)/size)
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = f16.ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	case BF16:
		for i := range out {
			// bfloat16 is the upper half of a float32.
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16)
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
	default:
		return nil, fmt.Errorf("%s tensor is not floating point", t.DType)
	}
	return out, nil
}

// Int64s returns the elements of an integer or boolean tensor (I64, I32, U8, BOOL) as int64.
func (t Tensor) Int64s() ([]int64, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	size, _ := DTypeSize(t.DType)
	out := make([]int64, len(t.Data)/size)
	switch t.DType {
	case I64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	case I32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(t.Data[4*i:])))
		}
	case U8, BOOL:
		for i, b := range t.Data {
			out[i] = int64(b)
		}
	default:
		return nil, fmt.Errorf("%s tensor is not integer", t.DType)
	}
	return out, nil
}
