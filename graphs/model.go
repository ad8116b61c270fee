package graphs

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
)

// Opset and IRVersion are what every model we write declares.
const (
	Opset     = 17
	IRVersion = 8
)

// Producer names us in every model.
const Producer = "cardseg-ort"

func valueInfo(v *Value) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range v.shape {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(v.name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(v.dtype)), Shape: shape,
		}}},
	}
}

func attrProto(a Attr) *onnxpb.AttributeProto {
	p := &onnxpb.AttributeProto{Name: proto.String(a.Name)}
	switch v := a.Value.(type) {
	case int64:
		p.Type, p.I = onnxpb.AttributeProto_INT.Enum(), proto.Int64(v)
	case float32:
		p.Type, p.F = onnxpb.AttributeProto_FLOAT.Enum(), proto.Float32(v)
	case string:
		p.Type, p.S = onnxpb.AttributeProto_STRING.Enum(), []byte(v)
	case []int64:
		p.Type, p.Ints = onnxpb.AttributeProto_INTS.Enum(), v
	case []float32:
		p.Type, p.Floats = onnxpb.AttributeProto_FLOATS.Enum(), v
	default:
		panic(fmt.Sprintf("graphs: attribute %s has unsupported type %T", a.Name, a.Value))
	}
	return p
}

// TensorProto encodes an initializer (little-endian raw data).
func (in *Initializer) TensorProto() *onnxpb.TensorProto {
	v := in.Value
	t := &onnxpb.TensorProto{Name: proto.String(v.name), Dims: v.shape.clone(), DataType: proto.Int32(int32(v.dtype))}
	switch {
	case in.Float32 != nil:
		raw := make([]byte, 4*len(in.Float32))
		for i, f := range in.Float32 {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
		}
		t.RawData = raw
	case in.Int64 != nil:
		raw := make([]byte, 8*len(in.Int64))
		for i, x := range in.Int64 {
			binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
		}
		t.RawData = raw
	default:
		t.RawData = in.Raw
	}
	if t.RawData == nil {
		t.RawData = []byte{}
	}
	return t
}

// ToModel converts the graph to an ONNX model (opset 17, IR 8) with the graph's metadata.
func (g *Graph) ToModel() (m *onnxpb.ModelProto, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("graph %s: %v", g.Name, r)
		}
	}()
	if len(g.outputs) == 0 {
		return nil, fmt.Errorf("graph %s has no outputs", g.Name)
	}
	gp := &onnxpb.GraphProto{Name: proto.String(g.Name)}
	if g.Doc != "" {
		gp.DocString = proto.String(g.Doc)
	}
	for _, v := range g.inputs {
		gp.Input = append(gp.Input, valueInfo(v))
	}
	for _, v := range g.outputs {
		gp.Output = append(gp.Output, valueInfo(v))
	}
	live := g.liveNodes()
	var domains []string // operator sets beyond the default one, each at version 1
	used := map[*Value]bool{}
	for _, n := range g.nodes {
		if !live[n] {
			continue
		}
		np := &onnxpb.NodeProto{OpType: proto.String(n.Op), Name: proto.String(n.Name)}
		if n.Domain != "" {
			np.Domain = proto.String(n.Domain)
			if !slices.Contains(domains, n.Domain) {
				domains = append(domains, n.Domain)
			}
		}
		for _, in := range n.Inputs {
			np.Input = append(np.Input, in.name)
			used[in] = true
		}
		for _, out := range n.Outputs {
			np.Output = append(np.Output, out.name)
		}
		for _, a := range n.Attrs {
			np.Attribute = append(np.Attribute, attrProto(a))
		}
		gp.Node = append(gp.Node, np)
	}
	for _, in := range g.inits {
		if used[in.Value] || g.isOutput(in.Value) {
			gp.Initializer = append(gp.Initializer, in.TensorProto())
		}
	}
	m = &onnxpb.ModelProto{
		IrVersion:    proto.Int64(IRVersion),
		ProducerName: proto.String(Producer),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		Graph:        gp,
	}
	for _, d := range domains {
		m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String(d), Version: proto.Int64(1)})
	}
	keys := make([]string, 0, len(g.Metadata))
	for k := range g.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(g.Metadata[k])})
	}
	return m, nil
}

// liveNodes marks the nodes that some output depends on; the rest (e.g. forward values no
// gradient needed) are dropped from the model.
func (g *Graph) liveNodes() map[*Node]bool {
	need := map[*Value]bool{}
	for _, o := range g.outputs {
		need[o] = true
	}
	live := map[*Node]bool{}
	for i := len(g.nodes) - 1; i >= 0; i-- {
		n := g.nodes[i]
		for _, out := range n.Outputs {
			if need[out] {
				live[n] = true
				break
			}
		}
		if live[n] {
			for _, in := range n.Inputs {
				need[in] = true
			}
		}
	}
	return live
}

// Marshal encodes the graph as ONNX model bytes, deterministically.
func (g *Graph) Marshal() ([]byte, error) {
	m, err := g.ToModel()
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}
