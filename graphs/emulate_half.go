package graphs

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
)

const (
	onnxFloat   = 1
	onnxFloat16 = 10
)

// dataMovement ops copy or rearrange elements: their float16 outputs are already rounded.
var dataMovement = map[string]bool{"Reshape": true, "Transpose": true, "Slice": true, "Concat": true, "Split": true,
	"Gather": true, "Pad": true, "Expand": true, "Identity": true, "Squeeze": true, "Unsqueeze": true, "Flatten": true}

// MarshalEmulatingHalf serialises a float16 graph as a float32 one that rounds every computed
// float16 value to float16's 11 significant bits (Veltkamp splitting with 2^13+1: three exact
// float32 ops), for ONNX Runtime's CPU provider, which otherwise computes float16 nodes in
// float32 and drops the casts between them. It models what the CUDA provider does (float32
// arithmetic inside a kernel, float16 storage between kernels), but neither float16's range
// (no overflow to Inf, no subnormals) nor a kernel that accumulates in float16. Inputs and
// outputs keep their names; float16 ones become float32. round, when not nil, picks the nodes
// whose outputs are rounded (for locating where float16 loses precision).
func (g *Graph) MarshalEmulatingHalf(round func(*Node) bool) ([]byte, error) {
	half := map[string]bool{}
	for _, n := range g.nodes {
		for _, o := range n.Outputs {
			if o.dtype == Float16 && !dataMovement[n.Op] && (round == nil || round(n)) {
				half[o.name] = true
			}
		}
	}
	m, err := g.ToModel()
	if err != nil {
		return nil, err
	}
	gp := m.GetGraph()
	for _, init := range gp.Initializer {
		halfTensorToFloat(init)
	}
	for _, vi := range append(append(append([]*onnxpb.ValueInfoProto{}, gp.Input...), gp.Output...), gp.ValueInfo...) {
		if tt := vi.GetType().GetTensorType(); tt != nil && tt.GetElemType() == onnxFloat16 {
			tt.ElemType = proto.Int32(onnxFloat)
		}
	}
	split := "emulate_half_split"
	gp.Initializer = append(gp.Initializer, &onnxpb.TensorProto{Name: proto.String(split), DataType: proto.Int32(onnxFloat),
		RawData: binary.LittleEndian.AppendUint32(nil, math.Float32bits(8193))})
	node := func(op, name string, in []string, out string) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: in, Output: []string{out}}
	}
	var nodes []*onnxpb.NodeProto
	for _, n := range gp.Node {
		for _, a := range n.Attribute {
			if n.GetOpType() == "Cast" && a.GetName() == "to" && a.GetI() == onnxFloat16 {
				a.I = proto.Int64(onnxFloat)
			}
			if a.T != nil {
				halfTensorToFloat(a.T)
			}
			if a.GetType() == onnxpb.AttributeProto_TENSORS || a.GetType() == onnxpb.AttributeProto_GRAPH || a.GetType() == onnxpb.AttributeProto_GRAPHS {
				return nil, fmt.Errorf("graphs: emulating float16: node %s has a %v attribute", n.GetName(), a.GetType())
			}
		}
		var after []*onnxpb.NodeProto
		for i, out := range n.Output {
			if !half[out] {
				continue
			}
			f, s, u := out+"__f", out+"__s", out+"__u"
			n.Output[i] = f
			after = append(after, // s = 8193·f; u = s − f; out = s − u (f to 11 significant bits)
				node("Mul", f+"_mul", []string{f, split}, s), node("Sub", f+"_sub1", []string{s, f}, u), node("Sub", f+"_sub2", []string{s, u}, out))
		}
		nodes = append(append(nodes, n), after...)
	}
	gp.Node = nodes
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func halfTensorToFloat(tp *onnxpb.TensorProto) {
	if tp.GetDataType() != onnxFloat16 {
		return
	}
	var vals []float32
	if len(tp.RawData) > 0 {
		for i := 0; i+1 < len(tp.RawData); i += 2 {
			vals = append(vals, f16.ToFloat32(binary.LittleEndian.Uint16(tp.RawData[i:])))
		}
	} else {
		for _, v := range tp.Int32Data {
			vals = append(vals, f16.ToFloat32(uint16(v)))
		}
	}
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	tp.DataType, tp.RawData, tp.Int32Data = proto.Int32(onnxFloat), raw, nil
}
