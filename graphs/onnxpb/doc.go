// Package onnxpb holds the ONNX protobuf types (ModelProto, GraphProto, TensorProto, ...),
// generated from Debian's /usr/include/onnx/onnx.proto by tools/gen/onnxpb.sh (`just gen`).
// onnx.pb.go is generated and committed; do not edit it by hand. It may import only the
// protobuf runtime.
package onnxpb
