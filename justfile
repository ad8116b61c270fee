# cardseg-ort tasks. `just` comes from the npm registry: npx --yes rust-just@1.57.0 <recipe>
# (or `npm install -g rust-just@1.57.0` once, then plain `just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := "bin/cardseg-ort"

# List the recipes.
default:
    @{{just_executable()}} --list --unsorted

# Fetch ONNX Runtime from the npm registry into the local cache (quick when already there). Pass --cuda for the GPU provider.
setup *FLAGS:
    go run ./cmd/cardseg-ort setup {{FLAGS}}

# Build the CLI into bin/cardseg-ort.
build:
    go build -o {{bin}} ./cmd/cardseg-ort

# ONNX Runtime, plus its CUDA provider when an NVIDIA GPU answers (then train picks the gpu preset).
[private]
setup-auto:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      go run ./cmd/cardseg-ort setup --cuda || { echo "CUDA provider set-up failed: training on the CPU" >&2; go run ./cmd/cardseg-ort setup; }
    else
      go run ./cmd/cardseg-ort setup
    fi

# Train (default: built-in synthetic dataset; CPU preset, or the GPU preset — FP16, CUDA graphs — when a CUDA GPU is usable). Extra flags pass through, e.g. just train --data DIR.
train *ARGS: setup-auto build
    {{bin}} train {{ARGS}}

# Evaluate a model on a dataset split (just eval MODEL --data DIR ...).
eval *ARGS: setup build
    {{bin}} eval {{ARGS}}

# Export a checkpoint for deployment (just export RUN/checkpoints/best.onnx --out DIR --fp16 --int8 --calib DATA --create-package).
export *ARGS: setup build
    {{bin}} export {{ARGS}}

# Prune a checkpoint (just prune CKPT --amount 0.3 --structured --fine-tune --out CKPT2).
prune *ARGS: setup build
    {{bin}} prune {{ARGS}}

# Run every test (sets up ONNX Runtime first). Without g++ the CPU emulation of the CUDA kernels (runtime/kernels) is skipped, with a warning.
test *FLAGS: setup
    #!/usr/bin/env bash
    set -euo pipefail
    pkgs=./...
    if ! command -v "${CXX:-g++}" >/dev/null 2>&1; then
      echo "warning: no C++ compiler (g++): skipping runtime/kernels, the CPU emulation of the CUDA kernels (apt-get install g++)" >&2
      pkgs=$(go list ./... | grep -v '/runtime/kernels$')
    fi
    go test -count=1 {{FLAGS}} $pkgs

# gofmt and go vet.
lint:
    #!/usr/bin/env bash
    set -euo pipefail
    bad=$(gofmt -l $(git ls-files '*.go'))
    if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi
    go vet ./...

# Run the benchmarks (go test -bench); results as JSON lines in bench.json.
bench PATTERN=".": setup
    go test -run '^$' -bench '{{PATTERN}}' -benchmem -json ./... | tee bench.json | go run ./tools/benchfmt

# Time the CPU training step against PyTorch's, alternating in 2-step segments (issue 3's measurement); JSON line.
bench-train *ARGS: setup build
    {{bin}} bench train --batch 8 --height 240 --width 320 --threads 2 --steps 12 --warmup 2 --segment 2 --compare-torch --json {{ARGS}}

# Regenerate generated code (ONNX protobuf types from Debian's onnx.proto).
gen:
    bash tools/gen/onnxpb.sh
    go run ./tools/gen/ortapi
    go run ./tools/gen/ptx

# Check the machine: ONNX Runtime, providers, CUDA, GPUs.
doctor: setup build
    {{bin}} doctor

# Summarise a GPU sitting's results (the $OUT folder of tools/gpu/device_check.sh, fetched here).
gpu-summary dir:
    python3 tools/gpu/summarize.py {{dir}}

# Build what a GPU host needs (CLI and test binaries; Go is not installed there) into .gpubin/bin.tar.xz for tools/gpu/device_check.sh.
gpu-pack:
    #!/usr/bin/env bash
    set -euo pipefail
    go build -ldflags="-s -w" -o bin/cardseg-ort ./cmd/cardseg-ort
    for p in runtime pipeline graphs/step graphs/model; do go test -c -ldflags="-s -w" -o "bin/$(basename $p).test" "./$p"; done
    mkdir -p .gpubin
    tar cf - bin/cardseg-ort bin/runtime.test bin/pipeline.test bin/step.test bin/model.test | xz -3 -T2 > .gpubin/bin.tar.xz
    ls -la .gpubin
