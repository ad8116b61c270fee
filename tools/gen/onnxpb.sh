#!/usr/bin/env bash
# Regenerate graphs/onnxpb/onnx.pb.go from Debian's onnx.proto (package libonnx-dev) with Debian's
# protoc and a pinned protoc-gen-go. Comments are stripped first so the generated file carries
# no upstream prose, only the schema. Run from the repository root: `just gen`.
set -euo pipefail
PROTOC_GEN_GO_VERSION=v1.36.12
proto=${ONNX_PROTO:-/usr/include/onnx/onnx.proto}
if [ ! -f "$proto" ] || ! command -v protoc >/dev/null; then
  echo "gen: need $proto and protoc: apt-get install -y libonnx-dev protobuf-compiler" >&2
  exit 1
fi
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
GOBIN="$work/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
# Drop whole-line and trailing // comments (onnx.proto has no string literal containing //),
# then collapse the blank lines they leave.
sed -e 's#[[:space:]]*//.*$##' "$proto" | cat -s > "$work/onnx.proto"
PATH="$work/bin:$PATH" protoc -I "$work" \
  --go_out="$work" --go_opt=paths=source_relative \
  --go_opt=Monnx.proto=github.com/cardseg-ort/cardseg-ort/graphs/onnxpb \
  "$work/onnx.proto"
cp "$work/onnx.pb.go" "$root/graphs/onnxpb/onnx.pb.go"
gofmt -l graphs/onnxpb
echo "gen: wrote graphs/onnxpb/onnx.pb.go from $proto (protoc $(protoc --version | cut -d' ' -f2), protoc-gen-go $PROTOC_GEN_GO_VERSION)"
