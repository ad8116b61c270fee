package f16

import (
	"math"
	"testing"
)

// TestRoundTrip: every binary16 value widens exactly and rounds back to itself (NaNs stay NaN).
func TestRoundTrip(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := ToFloat32(h)
		back := FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
}

// TestRounding: ties go to even, overflow goes to Inf, tiny values to signed zero.
func TestRounding(t *testing.T) {
	cases := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00},
		{1 + 1.0/2048, 0x3c00},           // halfway between 1 and the next half: to even (1)
		{1 + 3.0/2048, 0x3c02},           // halfway, odd below: up
		{65504, 0x7bff},                  // the largest half
		{65520, 0x7c00},                  // rounds past it: Inf
		{-1e10, 0xfc00},                  // -Inf
		{1e-8, 0x0000},                   // below half the smallest subnormal
		{-1e-8, 0x8000},                  // signed zero
		{float32(math.Ldexp(1, -24)), 1}, // the smallest subnormal
	}
	for _, c := range cases {
		if got := FromFloat32(c.f); got != c.want {
			t.Errorf("FromFloat32(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}
