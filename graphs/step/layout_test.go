package step

import (
	"fmt"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/internal/gradcheck"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestRowLayout: pack, unpack, fromFlat and toFlat agree with laying the tensors end to end,
// for size mixes that exercise single-tensor blocks, joined runs, and end padding.
func TestRowLayout(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	cases := [][]graphs.Shape{
		{{16}, {2, 4}, {8, 1, 3, 3}},               // every tensor whole rows, one block each
		{{3}, {5}, {16}, {2}, {6}, {40}, {2}, {2}}, // runs joined until they fill rows; padded end
		{{432}, {16}, {16}, {80}, {2}, {256}, {2}}, // the classifier's tail, as in MobileNetV3
		{{7}}, // a single padded tensor
		{{1}, {1}, {1}, {1}, {1}, {1}, {1}, {1}, {9}}, // one joined block, then a padded one
	}
	for ci, shapes := range cases {
		t.Run(fmt.Sprint(ci), func(t *testing.T) {
			l := newRowLayout(shapes, false)
			g := graphs.New("layout")
			var ins []*graphs.Value
			var flat []float32
			feeds := map[string]*runtime.Tensor{}
			for i, s := range shapes {
				name := fmt.Sprintf("t%d", i)
				ins = append(ins, g.Input(name, graphs.Float, s))
				data := make([]float32, s.Size())
				for j := range data {
					data[j] = float32(len(flat) + 1)
					flat = append(flat, data[j])
				}
				tt, err := runtime.New([]int64(s), data)
				if err != nil {
					t.Fatal(err)
				}
				feeds[name] = tt
			}
			fv := g.Input("flat", graphs.Float, graphs.Shape{int64(len(flat))})
			ft, err := runtime.New([]int64{int64(len(flat))}, flat)
			if err != nil {
				t.Fatal(err)
			}
			feeds["flat"] = ft
			err = graphs.Build(func() error {
				m := l.pack(ins)
				g.Output("packed", m)
				g.Output("from_flat", l.fromFlat(fv))
				g.Output("to_flat", l.toFlat(m))
				for i, v := range l.unpack(graphs.Mul(m, graphs.Scalar(g, 2))) {
					g.Output(fmt.Sprintf("u%d", i), v)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			out, err := gradcheck.Session(t, g).Run(feeds)
			if err != nil {
				t.Fatal(err)
			}
			want := append(append([]float32(nil), flat...), make([]float32, l.pad())...)
			if l.rows*rowWidth != int64(len(want)) || (l.pad() < 0 || l.pad() >= rowWidth) {
				t.Fatalf("rows %d for %d elements", l.rows, len(flat))
			}
			for _, name := range []string{"packed", "from_flat"} {
				if got := out[name].Float32s(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			if got := out["to_flat"].Float32s(); fmt.Sprint(got) != fmt.Sprint(flat) {
				t.Errorf("to_flat = %v, want %v", got, flat)
			}
			off := 0
			for i, sh := range shapes {
				got := out[fmt.Sprintf("u%d", i)]
				if fmt.Sprint(got.Shape) != fmt.Sprint([]int64(sh)) {
					t.Errorf("tensor %d: shape %v, want %v", i, got.Shape, sh)
				}
				for j, x := range got.Float32s() {
					if x != 2*flat[off+j] {
						t.Fatalf("tensor %d element %d = %v, want %v", i, j, x, 2*flat[off+j])
					}
				}
				off += int(sh.Size())
			}
		})
	}
}

// TestFusedPackGraphs: with FusedPack the train step has no Concat, Split or per-tensor Cast
// left around the optimizer (one UnpackRows16 feeds the forward), and the gradient graph still
// outputs every gradient in float32 under the same names and shapes as without it.
func TestFusedPackGraphs(t *testing.T) {
	c := Config{Arch: model.MobileNetV3Large(1, 2), Batch: 2, Height: 64, Width: 96, Loss: DefaultLoss, Adam: DefaultAdamW, FP16: true}
	count := func(g *graphs.Graph) map[string]int {
		h := map[string]int{}
		for _, n := range g.Nodes() {
			h[n.Op]++
		}
		return h
	}
	plain, err := TrainStep(c)
	if err != nil {
		t.Fatal(err)
	}
	p := c
	p.FusedPack = true
	packed, err := TrainStep(p)
	if err != nil {
		t.Fatal(err)
	}
	hp, hk := count(plain), count(packed)
	if hk["Concat"] != 0 || hk["Split"] != 0 || hk["UnpackRows16"] != 1 || hk["PackRows"] != 4 || hk["UnpackRows"] != 2 {
		t.Errorf("packed step: %d Concat, %d Split, %d PackRows, %d UnpackRows, %d UnpackRows16", hk["Concat"], hk["Split"], hk["PackRows"], hk["UnpackRows"], hk["UnpackRows16"])
	}
	half := 0
	for _, s := range c.Arch.Params() {
		if halfInForward(s.Kind) {
			half++
		}
	}
	// Two Casts per float16 weight or bias (its forward copy, its gradient back) go.
	if hp["Cast"]-hk["Cast"] != 2*half {
		t.Errorf("Casts: %d without packing operators, %d with (%d float16 tensors)", hp["Cast"], hk["Cast"], half)
	}
	if len(packed.Outputs()) != len(plain.Outputs()) {
		t.Fatalf("packed step has %d outputs, want %d", len(packed.Outputs()), len(plain.Outputs()))
	}
	for i, o := range plain.Outputs() {
		if q := packed.Outputs()[i]; q.Name() != o.Name() || q.DType() != o.DType() || !q.Shape().Equal(o.Shape()) {
			t.Errorf("train output %d: %v, want %v", i, q, o)
		}
	}
	gPlain, err := GradGraph(c)
	if err != nil {
		t.Fatal(err)
	}
	gPacked, err := GradGraph(p)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range gPlain.Outputs() {
		if q := gPacked.Outputs()[i]; q.Name() != o.Name() || q.DType() != graphs.Float || !q.Shape().Equal(o.Shape()) {
			t.Errorf("gradient output %d: %v, want %v", i, q, o)
		}
	}
}
