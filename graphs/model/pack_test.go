package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// packCase is a PackRows / UnpackRows model: n tensors of random shapes (every third float16,
// cast from its float32 input in the graph), more than one GPU table's 96 when n is large.
type packCase struct {
	shapes []graphs.Shape
	half   []bool
	rows   int64
}

func newPackCase(n int, seed uint64) packCase {
	r := rand.New(rand.NewPCG(seed, 3))
	var c packCase
	var total int64
	for j := 0; j < n; j++ {
		s := graphs.Shape{int64(1 + r.IntN(5)), int64(1 + r.IntN(40))}
		if j%4 == 1 {
			s = graphs.Shape{int64(1 + r.IntN(9))}
		}
		c.shapes = append(c.shapes, s)
		c.half = append(c.half, j%3 == 0)
		total += s.Size()
	}
	c.rows = (total+graphs.PackRowsWidth-1)/graphs.PackRowsWidth + 1 // a row of padding at least
	return c
}

// model: inputs t<j> (float32); outputs m = PackRows(tensors), u<j> = UnpackRows(m) and
// h<j> = UnpackRows16(m) cast to float32.
func (c packCase) model(t *testing.T) []byte {
	g := graphs.New("pack")
	return buildModel(t, g, func() error {
		var ins []*graphs.Value
		for j, s := range c.shapes {
			v := g.Input(fmt.Sprintf("t%d", j), graphs.Float, s)
			if c.half[j] {
				v = graphs.Cast(v, graphs.Float16)
			}
			ins = append(ins, v)
		}
		m := graphs.PackRows(c.rows, ins...)
		g.Output("m", m)
		for j, u := range graphs.UnpackRows(m, graphs.Float, c.shapes) {
			g.Output(fmt.Sprintf("u%d", j), u)
		}
		for j, h := range graphs.UnpackRows(m, graphs.Float16, c.shapes) {
			g.Output(fmt.Sprintf("h%d", j), graphs.Cast(h, graphs.Float))
		}
		return nil
	})
}

// inputs: normal values, some past float16's range, some that float16 rounds.
func (c packCase) inputs(seed uint64) map[string]*runtime.Tensor {
	r := rand.New(rand.NewPCG(seed, 4))
	in := map[string]*runtime.Tensor{}
	for j, s := range c.shapes {
		d := make([]float32, s.Size())
		for i := range d {
			d[i] = float32(r.NormFloat64())
			if i%7 == 3 {
				d[i] *= 1e5
			}
		}
		in[fmt.Sprintf("t%d", j)] = runtime.MustNew([]int64(s), d)
	}
	return in
}

func (c packCase) run(t *testing.T, p runtime.Provider, in map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	opts := runtime.DeviceOptions{Provider: p, IntraOpThreads: 1, CustomOps: true}
	if p == runtime.ProviderCUDA {
		opts.ConfigEntries = map[string]string{"session.disable_cpu_ep_fallback": "1"}
	}
	s, err := runtime.NewDeviceSession("pack", c.model(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := runDevice(s, in)
	if err != nil {
		t.Fatalf("%v: %v", p, err)
	}
	return out
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %g, want %g", what, i, got[i], want[i])
		}
	}
}

// TestPackRows: the packing operators' CPU kernels in ONNX Runtime against the concatenation
// they stand for: the matrix holds the tensors end to end (float16 ones as float32) and zeros
// after them; UnpackRows gives them back, UnpackRows16 rounds them to float16 as Cast does.
func TestPackRows(t *testing.T) {
	c := newPackCase(9, 1)
	in := c.inputs(2)
	out := c.run(t, runtime.ProviderCPU, in)
	var want []float32
	for j := range c.shapes {
		d := runtime.Data[float32](in[fmt.Sprintf("t%d", j)])
		for _, v := range d {
			if c.half[j] {
				v = f16.ToFloat32(f16.FromFloat32(v))
			}
			want = append(want, v)
		}
	}
	want = append(want, make([]float32, int(c.rows)*graphs.PackRowsWidth-len(want))...)
	if got := out["m"].Shape; len(got) != 2 || got[0] != c.rows || got[1] != graphs.PackRowsWidth {
		t.Fatalf("m has shape %v, want [%d %d]", got, c.rows, graphs.PackRowsWidth)
	}
	sameBits(t, "m", runtime.Data[float32](out["m"]), want)
	at := 0
	for j, s := range c.shapes {
		n := int(s.Size())
		sameBits(t, fmt.Sprintf("u%d", j), runtime.Data[float32](out[fmt.Sprintf("u%d", j)]), want[at:at+n])
		rounded := make([]float32, n)
		for i, v := range want[at : at+n] {
			rounded[i] = f16.ToFloat32(f16.FromFloat32(v))
		}
		sameBits(t, fmt.Sprintf("h%d", j), runtime.Data[float32](out[fmt.Sprintf("h%d", j)]), rounded)
		at += n
	}
}

// TestFusedPackRowsCUDA: the CUDA kernels against the CPU kernels, bit for bit, with more tensors
// than one launch takes.
func TestFusedPackRowsCUDA(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	if r := runtime.CheckCUDA(); !r.Usable {
		t.Skip("no usable CUDA: " + r.Problem)
	}
	c := newPackCase(230, 5)
	in := c.inputs(6)
	cpu := c.run(t, runtime.ProviderCPU, in)
	cuda := c.run(t, runtime.ProviderCUDA, in)
	for name, want := range cpu {
		sameBits(t, "CUDA "+name, runtime.Data[float32](cuda[name]), runtime.Data[float32](want))
	}
}
