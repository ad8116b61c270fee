package export

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// maxHalf is the largest finite binary16 value.
const maxHalf = 65504

// FP16Stats says what the float16 conversion did to the weights.
type FP16Stats struct {
	Tensors int `json:"tensors"` // initializers converted
	Values  int `json:"values"`
	// Flushed counts non-zero weights that became zero (below binary16's smallest subnormal,
	// 6e-8): harmless in number, but a sign of badly scaled layers when many.
	Flushed int `json:"flushed_to_zero"`
	// MaxRelError is the largest |w16 − w32| / max|w32| over the tensors (rounding error).
	MaxRelError float64 `json:"max_rel_error"`
}

// toFloat16 rewrites an FP32 model in place so that its weights and computation are float16:
// every float32 initializer becomes float16, Cast nodes to float32 cast to float16 instead,
// and float32 value declarations follow. With float32 I/O (keepIO) the graph inputs and
// outputs stay float32 and a Cast joins each to the float16 body; otherwise they become
// float16 too. A weight beyond binary16's range (±65504) is an error naming it, not a silent
// infinity.
func toFloat16(m *onnxpb.ModelProto, keepIO bool) (FP16Stats, error) {
	var st FP16Stats
	g := m.Graph
	for _, t := range g.Initializer {
		if t.GetDataType() != elemFloat {
			continue
		}
		v, err := tensorFloats(t)
		if err != nil {
			return st, err
		}
		raw := make([]byte, 2*len(v))
		var maxAbs, maxErr float64
		for i, f := range v {
			if math.Abs(float64(f)) > maxHalf {
				return st, fmt.Errorf("float16: initializer %s holds %g, beyond float16's range (±%d)", t.GetName(), f, maxHalf)
			}
			h := runtime.HalfFromFloat32(f)
			binary.LittleEndian.PutUint16(raw[2*i:], uint16(h))
			if f != 0 && h.Float32() == 0 {
				st.Flushed++
			}
			maxAbs = math.Max(maxAbs, math.Abs(float64(f)))
			maxErr = math.Max(maxErr, math.Abs(float64(h.Float32())-float64(f)))
		}
		if maxAbs > 0 {
			st.MaxRelError = math.Max(st.MaxRelError, maxErr/maxAbs)
		}
		t.DataType = proto.Int32(elemFloat16)
		t.RawData, t.FloatData = raw, nil
		st.Tensors++
		st.Values += len(v)
	}
	for _, n := range g.Node {
		if n.GetOpType() == "Cast" {
			if a := findAttr(n, "to"); a != nil && a.GetI() == int64(elemFloat) {
				a.I = proto.Int64(int64(elemFloat16))
			}
		}
	}
	for _, v := range g.ValueInfo {
		if elemType(v) == elemFloat {
			setElemType(v, elemFloat16)
		}
	}
	var casts []*onnxpb.NodeProto
	for _, in := range g.Input {
		if elemType(in) != elemFloat {
			continue
		}
		if !keepIO {
			setElemType(in, elemFloat16)
			continue
		}
		inner := in.GetName() + "_fp16"
		renameUses(g, in.GetName(), inner)
		casts = append(casts, nodeProto("Cast", "fp16/cast_"+in.GetName(), []string{in.GetName()}, []string{inner}, attrInt("to", int64(elemFloat16))))
	}
	g.Node = append(casts, g.Node...)
	for _, out := range g.Output {
		if elemType(out) != elemFloat {
			continue
		}
		if !keepIO {
			setElemType(out, elemFloat16)
			continue
		}
		inner := out.GetName() + "_fp16"
		if !renameProducer(g, out.GetName(), inner) {
			return st, fmt.Errorf("float16: no node produces output %s", out.GetName())
		}
		renameUses(g, out.GetName(), inner)
		g.Node = append(g.Node, nodeProto("Cast", "fp16/cast_"+out.GetName(), []string{inner}, []string{out.GetName()}, attrInt("to", int64(elemFloat))))
	}
	return st, nil
}
