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
// float16 value to float16 (a Cast to float16 and back after each such node: nearest, ties to
// even, overflow to ±Inf, subnormals), for ONNX Runtime's CPU provider, which otherwise
// computes float16 nodes in float32 and drops the casts between them. It models what the
// CUDA provider does (float32 arithmetic inside a kernel, float16 storage between kernels),
// but not a kernel that accumulates in float16. ONNX Runtime keeps such cast pairs (its
// cast-chain elimination, which would fold them, is off unless asked for); the value test
// checks that. Inputs and outputs keep their names; float16 ones become float32. round, when
// not nil, picks the nodes whose outputs are rounded (for locating where float16 loses
// precision).
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
	cast := func(name, in, out string, to int64) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: proto.String("Cast"), Name: proto.String(name), Input: []string{in}, Output: []string{out},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(to)}}}
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
			f, h := out+"__f", out+"__h"
			n.Output[i] = f
			after = append(after, cast(f+"_to_half", f, h, onnxFloat16), cast(h+"_to_float", h, out, onnxFloat))
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
