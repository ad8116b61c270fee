package pipeline

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
)

// Tiny hand-built ONNX models whose predictions are known exactly, so eval's numbers can be
// checked against hand-computed confusion matrices. With ImageNet normalisation, the "red"
// models score each pixel by its normalised red channel r = (R/255 − 0.485)/0.229: card
// where r > 0, that is where R ≥ 124.

const (
	tFloat   = int32(onnxpb.TensorProto_FLOAT)
	tFloat16 = int32(onnxpb.TensorProto_FLOAT16)
	tUint8   = int32(onnxpb.TensorProto_UINT8)
	tInt64   = int32(onnxpb.TensorProto_INT64)
)

// onnxBuilder assembles a model graph node by node.
type onnxBuilder struct {
	g    *onnxpb.GraphProto
	meta map[string]string
	n    int
}

func newONNX() *onnxBuilder { return &onnxBuilder{g: &onnxpb.GraphProto{Name: proto.String("tiny")}} }

func tinyValueInfo(name string, elem int32, shape []int64) *onnxpb.ValueInfoProto {
	sp := &onnxpb.TensorShapeProto{}
	for i, d := range shape {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: []string{"N", "C", "H", "W", "X"}[i]}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		sp.Dim = append(sp.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{
		Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(elem), Shape: sp}}}}
}

func (b *onnxBuilder) input(name string, elem int32, shape ...int64) string {
	b.g.Input = append(b.g.Input, tinyValueInfo(name, elem, shape))
	return name
}

func (b *onnxBuilder) output(name string, elem int32, shape ...int64) {
	b.g.Output = append(b.g.Output, tinyValueInfo(name, elem, shape))
}

func (b *onnxBuilder) ints(vals ...int64) string {
	b.n++
	name := "c" + string(rune('a'+b.n%26)) + string(rune('0'+b.n/26))
	b.g.Initializer = append(b.g.Initializer, &onnxpb.TensorProto{Name: proto.String(name),
		DataType: proto.Int32(tInt64), Dims: []int64{int64(len(vals))}, Int64Data: vals})
	return name
}

func (b *onnxBuilder) scalar(v float32) string {
	b.n++
	name := "s" + string(rune('a'+b.n%26)) + string(rune('0'+b.n/26))
	b.g.Initializer = append(b.g.Initializer, &onnxpb.TensorProto{Name: proto.String(name),
		DataType: proto.Int32(tFloat), FloatData: []float32{v}})
	return name
}

// node adds op on inputs with int attributes, writing to out (a fresh name when "").
func (b *onnxBuilder) node(op, out string, inputs []string, attrs map[string]int64) string {
	if out == "" {
		b.n++
		out = op + "_" + string(rune('a'+b.n%26)) + string(rune('0'+b.n/26))
	}
	n := &onnxpb.NodeProto{OpType: proto.String(op), Input: inputs, Output: []string{out}}
	for k, v := range attrs {
		n.Attribute = append(n.Attribute, &onnxpb.AttributeProto{Name: proto.String(k),
			Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)})
	}
	b.g.Node = append(b.g.Node, n)
	return out
}

func (b *onnxBuilder) nodeInts(op string, inputs []string, name string, vals []int64) string {
	b.n++
	out := op + "_" + string(rune('a'+b.n%26)) + string(rune('0'+b.n/26))
	b.g.Node = append(b.g.Node, &onnxpb.NodeProto{OpType: proto.String(op), Input: inputs, Output: []string{out},
		Attribute: []*onnxpb.AttributeProto{{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: vals}}})
	return out
}

func (b *onnxBuilder) write(t *testing.T, dir, name string) string {
	t.Helper()
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph:       b.g,
	}
	for k, v := range b.meta {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(v)})
	}
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// red slices the red channel: [N,1,H,W].
func (b *onnxBuilder) red(x string) string {
	return b.node("Slice", "", []string{x, b.ints(0), b.ints(1), b.ints(1)}, nil)
}

// redLogits returns [N,2,H,W] logits (0, r).
func (b *onnxBuilder) redLogits(x string) string {
	r := b.red(x)
	zero := b.node("Mul", "", []string{r, b.scalar(0)}, nil)
	return b.node("Concat", "", []string{zero, r}, map[string]int64{"axis": 1})
}

// redModel is a model of the given output layout over an image input of shape in.
func redModel(t *testing.T, dir, kind string, in []int64, meta map[string]string) string {
	t.Helper()
	b := newONNX()
	b.meta = meta
	x := b.input("image", tFloat, in...)
	n, h, w := in[0], in[2], in[3]
	switch kind {
	case "fp16": // float16 in and out, as cardseg-ort's FP16 graphs
		x16 := b.g.Input[0]
		x16.Type.GetTensorType().ElemType = proto.Int32(tFloat16)
		x32 := b.node("Cast", "", []string{x}, map[string]int64{"to": int64(tFloat)})
		b.node("Cast", "logits", []string{b.redLogits(x32)}, map[string]int64{"to": int64(tFloat16)})
		b.output("logits", tFloat16, n, 2, h, w)
	case "logits2":
		b.node("Identity", "logits", []string{b.redLogits(x)}, nil)
		b.output("logits", tFloat, n, 2, h, w)
	case "softmax2":
		b.node("Softmax", "probs", []string{b.redLogits(x)}, map[string]int64{"axis": 1})
		b.output("probs", tFloat, n, 2, h, w)
	case "sigmoid1":
		b.node("Sigmoid", "prob", []string{b.node("Mul", "", []string{b.red(x), b.scalar(4)}, nil)}, nil)
		b.output("prob", tFloat, n, 1, h, w)
	case "logit1":
		b.node("Mul", "logit", []string{b.red(x), b.scalar(4)}, nil)
		b.output("logit", tFloat, n, 1, h, w)
	case "logit3d": // [N,H,W] card logit
		b.nodeIntsTo("Squeeze", "logit", []string{b.node("Mul", "", []string{b.red(x), b.scalar(4)}, nil), b.ints(1)})
		b.output("logit", tFloat, n, h, w)
	case "labels":
		b.node("ArgMax", "labels", []string{b.redLogits(x)}, map[string]int64{"axis": 1, "keepdims": 0})
		b.output("labels", tInt64, n, h, w)
	case "lowres": // logits at half the input resolution
		pooled := b.nodeInts("AveragePool", []string{b.redLogits(x)}, "kernel_shape", []int64{2, 2})
		b.g.Node[len(b.g.Node)-1].Attribute = append(b.g.Node[len(b.g.Node)-1].Attribute,
			&onnxpb.AttributeProto{Name: proto.String("strides"), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: []int64{2, 2}})
		b.node("Identity", "logits", []string{pooled}, nil)
		half := func(d int64) int64 {
			if d < 0 {
				return -1
			}
			return d / 2
		}
		b.output("logits", tFloat, n, 2, half(h), half(w))
	default:
		t.Fatalf("unknown model kind %s", kind)
	}
	return b.write(t, dir, kind)
}

// nodeIntsTo adds op with inputs writing to out.
func (b *onnxBuilder) nodeIntsTo(op, out string, inputs []string) {
	b.g.Node = append(b.g.Node, &onnxpb.NodeProto{OpType: proto.String(op), Input: inputs, Output: []string{out}})
}

// evalRect is a half-open pixel rectangle [X0,X1)×[Y0,Y1).
type evalRect struct{ X0, Y0, X1, Y1 int }

func (r evalRect) area() int { return max(0, r.X1-r.X0) * max(0, r.Y1-r.Y0) }

func (r evalRect) intersect(o evalRect) evalRect {
	return evalRect{max(r.X0, o.X0), max(r.Y0, o.Y0), min(r.X1, o.X1), min(r.Y1, o.Y1)}
}

func (r evalRect) scale(k int) evalRect { return evalRect{r.X0 * k, r.Y0 * k, r.X1 * k, r.Y1 * k} }

func (r evalRect) has(x, y int) bool { return x >= r.X0 && x < r.X1 && y >= r.Y0 && y < r.Y1 }

// Colours of the synthetic scenes: the card's red channel is above the red models' threshold,
// the background's below.
var (
	sceneBackground = color.RGBA{40, 90, 160, 255}
	sceneCard       = color.RGBA{230, 200, 60, 255}
)

// scene draws a w×h image with the card colour inside r (an empty evalRect: none).
func evalScene(w, h int, r evalRect) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if r.has(x, y) {
				img.SetRGBA(x, y, sceneCard)
			} else {
				img.SetRGBA(x, y, sceneBackground)
			}
		}
	}
	return img
}

// maskImage draws a w×h dataset mask: 255 inside r.
func evalMask(w, h int, r evalRect) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if r.has(x, y) {
				m.Pix[y*m.Stride+x] = 255
			}
		}
	}
	return m
}

func writePNGFile(t testing.TB, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
