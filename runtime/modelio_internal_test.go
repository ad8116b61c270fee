package runtime

import (
	"reflect"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// TestModelIOMatchesORT: the protobuf walk reports the same inputs and outputs as ONNX
// Runtime's own inspection, for a model with a symbolic batch, an initializer, a float16 and an
// int64 tensor.
func TestModelIOMatchesORT(t *testing.T) {
	if err := Init(); err != nil {
		t.Fatal(err)
	}
	g := graphs.New("io")
	err := graphs.Build(func() error {
		x := g.Input("x", graphs.Float, graphs.Shape{-1, 3})
		h := g.Input("h", graphs.Float16, graphs.Shape{2, 5, 7})
		k := g.Input("k", graphs.Int64, graphs.Shape{4})
		w := g.InitFloat("w", graphs.Shape{3}, []float32{1, 2, 3})
		g.Output("y", graphs.Mul(x, w))
		g.Output("h2", graphs.Add(h, h))
		g.Output("k2", graphs.Add(k, k))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ins, outs, err := modelIO(m)
	if err != nil {
		t.Fatal(err)
	}
	oi, oo, err := ort.GetInputOutputInfoWithONNXData(m)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(in []ort.InputOutputInfo) []IOInfo {
		var out []IOInfo
		for _, i := range in {
			out = append(out, ioInfo(i))
		}
		return out
	}
	if want := conv(oi); !reflect.DeepEqual(ins, want) {
		t.Errorf("inputs %v, ORT %v", ins, want)
	}
	if want := conv(oo); !reflect.DeepEqual(outs, want) {
		t.Errorf("outputs %v, ORT %v", outs, want)
	}
	if _, _, err := modelIO([]byte("not a model")); err == nil {
		t.Error("garbage accepted")
	}
}
