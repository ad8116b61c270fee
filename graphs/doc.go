// Package graphs builds ONNX graphs (opset 17, IR 8) from Go and differentiates them.
//
// Operators are plain functions over *Value; each operator's builder and its gradient rule (a
// vector-Jacobian product written in standard ONNX operators) live side by side in one file,
// and one table (gradRules) maps the ONNX op type to its rule. Grad runs reverse-mode autodiff:
// a topological order and a reverse loop that sums fan-out. Shapes are static and checked as
// the graph is built; building panics on programmer error and Build/ToModel turn that into an
// error at the boundary.
//
// One exception to standard ONNX, opt-in per graph: with Graph.NCHWcBlock set, depthwise
// convolutions are built on ONNX Runtime's blocked CPU kernels (operator set NCHWcDomain), with
// their own gradient rules. Only graphs for in-process ORT CPU sessions use it; files written
// for others (graphs build, checkpoints, exports) never do. Likewise our own operator set
// (CardsegDomain: fused batch norm and depthwise convolution kernels for the FP16 train step on
// the GPU, ops_fused.go), which only sessions that register it (runtime's CustomOps) can run.
//
// Sub-packages (model, step, safetensors) hold the network, the step graphs and the weight
// files. This package may import only its generated protobuf package (graphs/onnxpb), the
// protobuf runtime, internal/f16 and the standard library.
package graphs
