package runtime

import (
	"encoding/binary"
	"fmt"
)

// modelIO reads a model's inputs and outputs from its ONNX protobuf, as ONNX Runtime reports
// them (initializers are not inputs; a symbolic dimension is -1). It serves models that use
// our custom operators, which a plain ORT session (what onnxruntime_go's model inspection
// opens) cannot load. The package imports no protobuf library (DESIGN.md): this walks the
// few fields it needs (ModelProto.graph; GraphProto.initializer, input, output; the names,
// element types and dimensions below them) with the wire format's varints.
func modelIO(model []byte) (ins, outs []IOInfo, err error) {
	var graph []byte
	if err := pbFields(model, func(f int, v []byte, _ uint64) error {
		if f == 7 { // ModelProto.graph
			graph = v
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	if graph == nil {
		return nil, nil, fmt.Errorf("the model has no graph")
	}
	inits := map[string]bool{}
	var inVals, outVals [][]byte
	if err := pbFields(graph, func(f int, v []byte, _ uint64) error {
		switch f {
		case 5: // initializer: TensorProto, name = 8
			return pbFields(v, func(f int, v []byte, _ uint64) error {
				if f == 8 {
					inits[string(v)] = true
				}
				return nil
			})
		case 11:
			inVals = append(inVals, v)
		case 12:
			outVals = append(outVals, v)
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("graph: %w", err)
	}
	conv := func(vals [][]byte, skip map[string]bool) ([]IOInfo, error) {
		var out []IOInfo
		for _, b := range vals {
			info, err := valueInfo(b)
			if err != nil {
				return nil, err
			}
			if !skip[info.Name] {
				out = append(out, info)
			}
		}
		return out, nil
	}
	if ins, err = conv(inVals, inits); err != nil {
		return nil, nil, err
	}
	if outs, err = conv(outVals, nil); err != nil {
		return nil, nil, err
	}
	return ins, outs, nil
}

// valueInfo decodes a ValueInfoProto (name 1, type 2) holding a tensor type: TypeProto
// tensor_type 1 → elem_type 1, shape 2 → dim 1 → dim_value 1 or dim_param 2.
func valueInfo(b []byte) (IOInfo, error) {
	var info IOInfo
	tensor := false
	err := pbFields(b, func(f int, v []byte, _ uint64) error {
		switch f {
		case 1:
			info.Name = string(v)
		case 2:
			return pbFields(v, func(f int, v []byte, _ uint64) error {
				if f != 1 {
					return nil
				}
				tensor = true
				return pbFields(v, func(f int, v []byte, n uint64) error {
					switch f {
					case 1:
						info.DType = DType(n)
					case 2:
						return pbFields(v, func(f int, v []byte, _ uint64) error {
							if f != 1 {
								return nil
							}
							d := int64(-1)
							err := pbFields(v, func(f int, _ []byte, n uint64) error {
								if f == 1 {
									d = int64(n)
								}
								return nil
							})
							info.Shape = append(info.Shape, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	if err == nil && !tensor {
		err = fmt.Errorf("%s is not a tensor", info.Name)
	}
	return info, err
}

// pbFields calls fn for each field of a protobuf message: its number, and for length-delimited
// fields the bytes, for varints the value (fixed-width fields are skipped).
func pbFields(b []byte, fn func(field int, bytes []byte, varint uint64) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("bad field key")
		}
		b = b[n:]
		field, wire := int(key>>3), key&7
		switch wire {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return fmt.Errorf("bad varint in field %d", field)
			}
			b = b[n:]
			if err := fn(field, nil, v); err != nil {
				return err
			}
		case 1, 5:
			w := 8
			if wire == 5 {
				w = 4
			}
			if len(b) < w {
				return fmt.Errorf("truncated field %d", field)
			}
			b = b[w:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return fmt.Errorf("truncated field %d", field)
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := fn(field, v, 0); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unsupported wire type %d in field %d", wire, field)
		}
	}
	return nil
}
