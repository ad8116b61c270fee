package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

// packTensors is a layout like the optimizer's: more tensors than one table holds (so the
// plan launches several), float16 and float32 mixed, sizes from one element to one that
// dwarfs the rest, not multiples of 8.
func packTensors(r *rand.Rand) []Packed {
	var ts []Packed
	for j := 0; j < 2*96+7; j++ {
		n := 1 + r.IntN(300)
		if j == 50 {
			n = 40_003
		}
		if j%3 == 0 {
			ts = append(ts, Packed{Float: floats(r, n, -2, 2)})
		} else {
			ts = append(ts, Packed{Half: halves(r, n, 0, 1)})
		}
	}
	return ts
}

func packedLen(ts []Packed) int {
	n := 0
	for _, t := range ts {
		n += t.len()
	}
	return n
}

// TestPackKernels: pack_rows and unpack_rows, emulated through k_pack's tables, against the CPU
// kernels and against the concatenation itself, bit for bit.
func TestPackKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ts := packTensors(r)
	sum := packedLen(ts)
	total := (sum + 7) / 8 * 8
	if total == sum {
		total += 8
	}
	var want []float32
	for _, x := range ts {
		if x.Half != nil {
			for _, h := range x.Half {
				want = append(want, f16.ToFloat32(h))
			}
		} else {
			want = append(want, x.Float...)
		}
	}
	want = append(want, make([]float32, total-sum)...)
	before := Launches()
	for _, w := range []Where{CPU, GPU} {
		got, err := Pack(w, ts, total)
		if err != nil {
			t.Fatalf("%v: %v", w, err)
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("%v pack: element %d of %d is %g, want %g", w, i, total, got[i], want[i])
		}
	}
	// One launch per table: 199 tensors and the padding in tables of 96.
	if n := Launches()["pack_rows"] - before["pack_rows"]; n != 3 {
		t.Errorf("pack_rows launched %d times, want 3", n)
	}

	// Unpack values that float16 must round: ties, values past its range, subnormals.
	m := make([]float32, total)
	for i := range m {
		switch i % 5 {
		case 0:
			m[i] = float32(r.NormFloat64())
		case 1:
			m[i] = 1 + float32(2*r.IntN(1024)+1)/2048 // halfway between float16 neighbours
		case 2:
			m[i] = float32(r.NormFloat64() * 70000)
		case 3:
			m[i] = float32(r.NormFloat64() * 1e-6)
		default:
			m[i] = float32(-r.Float64())
		}
	}
	cpu, err := Unpack(CPU, m, ts)
	if err != nil {
		t.Fatal(err)
	}
	gpu, err := Unpack(GPU, m, ts)
	if err != nil {
		t.Fatal(err)
	}
	at := 0
	for j := range ts {
		if ts[j].Half != nil {
			if !slices.Equal(cpu[j].Half, gpu[j].Half) {
				t.Fatalf("unpack: float16 tensor %d differs between the kernels", j)
			}
			for i, h := range cpu[j].Half {
				if h != f16.FromFloat32(m[at+i]) && !(math.IsNaN(float64(m[at+i]))) {
					t.Fatalf("unpack: tensor %d element %d is %#04x, want %#04x (from %g)", j, i, h, f16.FromFloat32(m[at+i]), m[at+i])
				}
			}
		} else if !slices.Equal(cpu[j].Float, gpu[j].Float) || !slices.Equal(cpu[j].Float, m[at:at+len(ts[j].Float)]) {
			t.Fatalf("unpack: float32 tensor %d is not its slice of the matrix", j)
		}
		at += ts[j].len()
	}
}

// firstDiff is the first index where a and b differ bitwise, or −1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}
