// Package graphs builds ONNX graphs (opset 17, IR 8) from Go and differentiates them.
//
// Operators are plain functions over *Value; each operator's builder and its gradient rule (a
// vector-Jacobian product written in standard ONNX operators) live side by side in one file,
// and one table (gradRules) maps the ONNX op type to its rule. Grad runs reverse-mode autodiff:
// a topological order and a reverse loop that sums fan-out. Shapes are static and checked as
// the graph is built; building panics on programmer error and Build/ToModel turn that into an
// error at the boundary.
//
// Sub-packages (model, step, safetensors) hold the network, the step graphs and the weight
// files. This package may import only its generated protobuf package (graphs/onnxpb), the
// protobuf runtime, internal/f16 and the standard library.
package graphs
