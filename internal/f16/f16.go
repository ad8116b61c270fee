// Package f16 converts between float32 and IEEE 754 binary16 (float16) bits: the one place
// graphs (float16 constants), graphs/safetensors (float16 files) and runtime (float16
// tensors) get the conversion from. It imports only the standard library.
package f16

import "math"

// FromFloat32 rounds f to the nearest binary16 value (ties to even), overflowing to ±Inf and
// underflowing gradually through the subnormals, as IEEE 754 and CUDA's __float2half_rn do.
// NaN stays a quiet NaN.
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf, or NaN kept quiet and non-zero
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127+15 >= 0x1f: // too large: Inf
		return sign | 0x7c00
	case exp-127+15 <= 0: // a binary16 subnormal or zero
		e := exp - 127 + 15
		if e < -10 {
			return sign
		}
		m := mant | 0x800000 // the implicit bit
		shift := uint32(14 - e)
		h := m >> shift
		rem, half := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp-127+15)<<10 | mant>>13
	if rem := mant & 0x1fff; rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is still the right rounding, up to Inf
	}
	return sign | uint16(h)
}

// ToFloat32 widens binary16 bits to float32 exactly (every binary16 value is a float32);
// Inf and NaN keep their sign and payload.
func ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal: rebias the exponent from 15 to 127
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0:
		return math.Float32frombits(sign)
	}
	v := float32(frac) * (1.0 / (1 << 24)) // subnormal: frac · 2^-24, a normal float32
	if sign != 0 {
		v = -v
	}
	return v
}
