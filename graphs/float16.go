package graphs

import (
	"encoding/binary"
	"fmt"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// Float16Bits rounds f to the nearest IEEE 754 binary16 value (ties to even), overflowing to
// ±Inf and underflowing gradually through the subnormals, as CUDA's __float2half_rn.
func Float16Bits(f float32) uint16 { return f16.FromFloat32(f) }

func float16Raw(data []float32) []byte {
	raw := make([]byte, 2*len(data))
	for i, f := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], Float16Bits(f))
	}
	return raw
}

// InitFloat16 adds a float16 initializer with an exact name, rounding data from float32.
func (g *Graph) InitFloat16(name string, shape Shape, data []float32) *Value {
	checkInitSize(name, shape, len(data))
	return g.InitRaw(name, Float16, shape, float16Raw(data))
}

// ConstFloat16 returns a float16 constant rounded from float32 data (shared when small). A
// stored constant needs no Cast node, so nothing about it is left for an execution provider
// to place.
func (g *Graph) ConstFloat16(shape Shape, data ...float32) *Value {
	key := ""
	if len(data) <= 16 {
		key = fmt.Sprintf("h%v%v", shape, data)
		if v, ok := g.constant[key]; ok {
			return v
		}
	}
	name := g.uniqueName("const")
	checkInitSize(name, shape, len(data))
	v := g.initRaw(name, Float16, shape, float16Raw(data))
	if key != "" {
		g.constant[key] = v
	}
	return v
}

// ConstLike returns a constant with v's element type (float32 or float16) from float32 data.
func ConstLike(v *Value, shape Shape, data ...float32) *Value {
	switch v.dtype {
	case Float:
		return v.g.ConstFloat(shape, data...)
	case Float16:
		return v.g.ConstFloat16(shape, data...)
	}
	return Cast(v.g.ConstFloat(shape, data...), v.dtype)
}
