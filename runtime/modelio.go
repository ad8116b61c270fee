package runtime

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
)

// modelIO reads a model's inputs and outputs from its ONNX protobuf, as ONNX Runtime reports
// them (initializers are not inputs; a symbolic dimension is -1). It serves models that use
// our custom operators, which a plain ORT session (what onnxruntime_go's model inspection
// opens) cannot load.
func modelIO(model []byte) (ins, outs []IOInfo, err error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		return nil, nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	g := m.GetGraph()
	if g == nil {
		return nil, nil, fmt.Errorf("the model has no graph")
	}
	inits := map[string]bool{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = true
	}
	conv := func(vs []*onnxpb.ValueInfoProto, skip map[string]bool) ([]IOInfo, error) {
		var out []IOInfo
		for _, v := range vs {
			if skip[v.GetName()] {
				continue
			}
			tt := v.GetType().GetTensorType()
			if tt == nil {
				return nil, fmt.Errorf("%s is not a tensor", v.GetName())
			}
			info := IOInfo{Name: v.GetName(), DType: DType(tt.GetElemType())}
			for _, d := range tt.GetShape().GetDim() {
				if _, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
					info.Shape = append(info.Shape, d.GetDimValue())
				} else {
					info.Shape = append(info.Shape, -1)
				}
			}
			out = append(out, info)
		}
		return out, nil
	}
	if ins, err = conv(g.GetInput(), inits); err != nil {
		return nil, nil, err
	}
	if outs, err = conv(g.GetOutput(), nil); err != nil {
		return nil, nil, err
	}
	return ins, outs, nil
}
