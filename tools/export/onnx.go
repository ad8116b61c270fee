package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
)

// ONNX element types used here (TensorProto.DataType codes).
const (
	elemFloat   = int32(onnxpb.TensorProto_FLOAT)
	elemUint8   = int32(onnxpb.TensorProto_UINT8)
	elemInt8    = int32(onnxpb.TensorProto_INT8)
	elemInt32   = int32(onnxpb.TensorProto_INT32)
	elemInt64   = int32(onnxpb.TensorProto_INT64)
	elemFloat16 = int32(onnxpb.TensorProto_FLOAT16)
)

// Opset range export writes. 14 is the first with HardSwish; 21 the newest this code has been
// run against. The default is 18, the first whose Resize antialiases: the RGB variants shrink
// camera photos inside the model, and without antialiasing a 480×640 photo fed to a 144×192
// network gave masks with IoU 0.75 against the training pipeline's preprocessing, 0.95 with it.
// ONNX Runtime (Mobile too) reads opset 18 since 1.14.
const (
	MinOpset     = 14
	MaxOpset     = 21
	DefaultOpset = 18
)

// irVersion is the lowest ONNX IR version that may declare opset (onnx's VERSION_TABLE), so a
// model loads in the oldest runtime that knows its operators.
func irVersion(opset int) int64 {
	switch {
	case opset <= 14:
		return 7
	case opset <= 18:
		return 8
	case opset <= 20:
		return 9
	default:
		return 10
	}
}

// cloneModel deep-copies a model so that each variant can be rewritten independently.
func cloneModel(m *onnxpb.ModelProto) *onnxpb.ModelProto {
	return proto.Clone(m).(*onnxpb.ModelProto)
}

func marshalModel(m *onnxpb.ModelProto) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// nodeProto is a NodeProto under construction.
func nodeProto(op, name string, inputs, outputs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: inputs, Output: outputs, Attribute: attrs}
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrString(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

func findAttr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.Attribute {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

func removeAttr(n *onnxpb.NodeProto, name string) {
	out := n.Attribute[:0]
	for _, a := range n.Attribute {
		if a.GetName() != name {
			out = append(out, a)
		}
	}
	n.Attribute = out
}

// Tensor constructors (little-endian raw data, as graphs writes them).

func floatTensor(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(elemFloat), RawData: raw}
}

func int64Tensor(name string, dims []int64, v []int64) *onnxpb.TensorProto {
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(x))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(elemInt64), RawData: raw}
}

func int32Tensor(name string, dims []int64, v []int32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(elemInt32), RawData: raw}
}

func int8Tensor(name string, dims []int64, v []int8) *onnxpb.TensorProto {
	raw := make([]byte, len(v))
	for i, x := range v {
		raw[i] = byte(x)
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(elemInt8), RawData: raw}
}

func uint8Tensor(name string, dims []int64, v []uint8) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(elemUint8), RawData: append([]byte{}, v...)}
}

// tensorFloats decodes a float32 initializer (raw or float_data).
func tensorFloats(t *onnxpb.TensorProto) ([]float32, error) {
	if t.GetDataType() != elemFloat {
		return nil, fmt.Errorf("initializer %s has element type %d, want float32", t.GetName(), t.GetDataType())
	}
	n := elements(t.Dims)
	if t.RawData != nil {
		if int64(len(t.RawData)) != 4*n {
			return nil, fmt.Errorf("initializer %s: %d bytes for %d floats", t.GetName(), len(t.RawData), n)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
		}
		return out, nil
	}
	if int64(len(t.FloatData)) != n {
		return nil, fmt.Errorf("initializer %s: %d floats for shape %v", t.GetName(), len(t.FloatData), t.Dims)
	}
	return append([]float32(nil), t.FloatData...), nil
}

func elements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

// valueInfo declares a tensor; a negative dimension is symbolic, named by dimNames[axis] when
// given.
func valueInfo(name string, elem int32, dims []int64, dimNames ...string) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for k, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			p := fmt.Sprintf("d%d", k)
			if k < len(dimNames) && dimNames[k] != "" {
				p = dimNames[k]
			}
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: p}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(elem), Shape: shape}}}}
}

func elemType(v *onnxpb.ValueInfoProto) int32 {
	return v.GetType().GetTensorType().GetElemType()
}

func setElemType(v *onnxpb.ValueInfoProto, elem int32) {
	v.GetType().GetTensorType().ElemType = proto.Int32(elem)
}

// setBatch makes axis 0 of every graph input and output static 1 (batch 0) or symbolic,
// named "batch". graphs writes every symbolic dimension as "N"; only the batch is symbolic in
// the inference graph.
func setBatch(g *onnxpb.GraphProto, batch int64) {
	for _, vs := range [][]*onnxpb.ValueInfoProto{g.Input, g.Output} {
		for _, v := range vs {
			d := v.GetType().GetTensorType().GetShape().GetDim()
			if len(d) == 0 {
				continue
			}
			if batch > 0 {
				d[0].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: batch}
			} else {
				d[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}
			}
		}
	}
}

// renameUses points every node input named from at to instead.
func renameUses(g *onnxpb.GraphProto, from, to string) {
	for _, n := range g.Node {
		for i, in := range n.Input {
			if in == from {
				n.Input[i] = to
			}
		}
	}
}

// renameProducer renames the node output from to to.
func renameProducer(g *onnxpb.GraphProto, from, to string) bool {
	for _, n := range g.Node {
		for i, out := range n.Output {
			if out == from {
				n.Output[i] = to
				return true
			}
		}
	}
	return false
}

// setMetadata sets (replaces or adds) metadata entries, keeping the list sorted by key.
func setMetadata(m *onnxpb.ModelProto, kv map[string]string) {
	have := map[string]string{}
	for _, e := range m.MetadataProps {
		have[e.GetKey()] = e.GetValue()
	}
	for k, v := range kv {
		have[k] = v
	}
	keys := make([]string, 0, len(have))
	for k := range have {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m.MetadataProps = m.MetadataProps[:0]
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(have[k])})
	}
}

func metadata(m *onnxpb.ModelProto) map[string]string {
	out := map[string]string{}
	for _, e := range m.MetadataProps {
		out[e.GetKey()] = e.GetValue()
	}
	return out
}

// setOpset rewrites the model for opset (MinOpset..MaxOpset). Every operator export writes
// keeps its meaning across that range except the Reduce family, whose axes moved from an
// attribute to an input in opset 18 (ReduceSum in 13, already an input).
func setOpset(m *onnxpb.ModelProto, opset int) error {
	if opset < MinOpset || opset > MaxOpset {
		return fmt.Errorf("opset %d: export writes opsets %d to %d", opset, MinOpset, MaxOpset)
	}
	g := m.Graph
	reduce := map[string]bool{"ReduceMean": true, "ReduceMax": true, "ReduceMin": true, "ReduceProd": true,
		"ReduceL1": true, "ReduceL2": true, "ReduceLogSum": true, "ReduceLogSumExp": true, "ReduceSumSquare": true}
	for _, n := range g.Node {
		if !reduce[n.GetOpType()] {
			continue
		}
		a := findAttr(n, "axes")
		switch {
		case opset >= 18 && a != nil:
			name := n.GetName() + "/axes"
			g.Initializer = append(g.Initializer, int64Tensor(name, []int64{int64(len(a.Ints))}, a.Ints))
			n.Input = append(n.Input, name)
			removeAttr(n, "axes")
		case opset < 18 && a == nil && len(n.Input) > 1:
			return fmt.Errorf("opset %d: %s %s takes its axes as an input", opset, n.GetOpType(), n.GetName())
		}
	}
	m.OpsetImport = []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(int64(opset))}}
	m.IrVersion = proto.Int64(irVersion(opset))
	return nil
}

// initializers indexes a graph's initializers by name.
func initializers(g *onnxpb.GraphProto) map[string]*onnxpb.TensorProto {
	out := make(map[string]*onnxpb.TensorProto, len(g.Initializer))
	for _, t := range g.Initializer {
		out[t.GetName()] = t
	}
	return out
}

// consumers lists, for every tensor name, the nodes reading it.
func consumers(g *onnxpb.GraphProto) map[string][]*onnxpb.NodeProto {
	out := map[string][]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		for _, in := range n.Input {
			out[in] = append(out[in], n)
		}
	}
	return out
}

func isGraphOutput(g *onnxpb.GraphProto, name string) bool {
	for _, o := range g.Output {
		if o.GetName() == name {
			return true
		}
	}
	return false
}
