package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

const python = "/usr/bin/python3"

// needTorch skips the test unless Debian's python3 can import torch.
func needTorch(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Python; skipped in -short mode")
	}
	if _, err := os.Stat(python); err != nil {
		t.Skipf("no %s", python)
	}
	if out, err := exec.Command(python, "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import torch: %v %s", python, err, out)
	}
}

func runPython(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(python, append([]string{"-c", script}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	return out
}

// An independent reader: only struct, json and torch.frombuffer. It prints each tensor's
// torch dtype, shape and values as float64 so the test can compare them.
const torchReader = `
import json, struct, sys, torch
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
with open(sys.argv[1], "rb") as f:
    blob = f.read()
(n,) = struct.unpack("<Q", blob[:8])
header = json.loads(blob[8:8 + n].decode("utf-8"))
data = bytearray(blob[8 + n:])
out = {"metadata": header.pop("__metadata__", {}), "tensors": {}}
for name, info in header.items():
    begin, end = info["data_offsets"]
    dtype = DTYPES[info["dtype"]]
    if end == begin:
        t = torch.empty(info["shape"], dtype=dtype)
    else:
        t = torch.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"])
    out["tensors"][name] = {"dtype": str(t.dtype), "shape": list(t.shape),
                            "values": t.double().flatten().tolist()}
json.dump(out, sys.stdout)
`

// TestTorchReadsOurFile writes a file with every dtype and checks that PyTorch reads the
// same dtypes, shapes and values.
func TestTorchReadsOurFile(t *testing.T) {
	needTorch(t)
	f := sample(t)
	// JSON has no infinity; keep values finite for the comparison.
	f.Tensors["backbone.0.0.weight"] = must(FromFloat32([]float32{1, -2.5, 3, 0, 65504, 1e-30}, 2, 3))
	path := filepath.Join(t.TempDir(), "ours.safetensors")
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata map[string]string
		Tensors  map[string]struct {
			DType  string
			Shape  []int64
			Values []float64
		}
	}
	if err := json.Unmarshal(runPython(t, torchReader, path), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, f.Metadata) {
		t.Errorf("torch read metadata %v, want %v", got.Metadata, f.Metadata)
	}
	torchDType := map[string]string{F64: "torch.float64", F32: "torch.float32", F16: "torch.float16", BF16: "torch.bfloat16",
		I64: "torch.int64", I32: "torch.int32", U8: "torch.uint8", BOOL: "torch.bool"}
	if len(got.Tensors) != len(f.Tensors) {
		t.Errorf("torch read %d tensors, want %d", len(got.Tensors), len(f.Tensors))
	}
	for _, name := range f.Names() {
		want := f.Tensors[name]
		g, ok := got.Tensors[name]
		if !ok {
			t.Errorf("torch did not read %q", name)
			continue
		}
		var values []float64
		if want.DType == F64 { // Float32s would round
			for i := 0; i < len(want.Data); i += 8 {
				values = append(values, math.Float64frombits(binary.LittleEndian.Uint64(want.Data[i:])))
			}
		} else if floats, err := want.Float32s(); err == nil {
			for _, v := range floats {
				values = append(values, float64(v))
			}
		} else {
			ints, err := want.Int64s()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range ints {
				values = append(values, float64(v))
			}
		}
		if g.DType != torchDType[want.DType] || !reflect.DeepEqual(g.Shape, want.Shape) || len(g.Values) != len(values) {
			t.Errorf("%q: torch read %s %v with %d values, want %s %v with %d", name, g.DType, g.Shape, len(g.Values),
				torchDType[want.DType], want.Shape, len(values))
			continue
		}
		for i := range values {
			if g.Values[i] != values[i] {
				t.Errorf("%q[%d]: torch read %v, want %v", name, i, g.Values[i], values[i])
			}
		}
	}
}

// A writer laid out unlike ours (tensors in reverse name order, metadata last), with values
// that exercise every float16 and bfloat16 class: normals, subnormals, extremes, signed zero.
const torchWriter = `
import json, struct, sys, torch
g = torch.Generator().manual_seed(0)
special = [0.0, -0.0, 1.0, -2.0, 65504.0, 6.1e-5, 6e-8, 1e-7, 0.1, 1/3, -1e4]
tensors = {
    "conv.weight": torch.randn(4, 3, 2, 2, generator=g),
    "half": torch.tensor(special, dtype=torch.float16),
    "brain": torch.tensor(special + [3e38, 1e-39], dtype=torch.bfloat16),
    "double": torch.tensor([0.1, -1e-3, 2.5], dtype=torch.float64),
    "steps": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64),
}
header, chunks, offset = {}, [], 0
for name in sorted(tensors, reverse=True):
    t = tensors[name].contiguous()
    b = (t.view(torch.int16) if t.element_size() == 2 else t).numpy().tobytes()
    dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64"}[t.dtype]
    header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
    chunks.append(b)
    offset += len(b)
header["__metadata__"] = {"framework": "torch " + torch.__version__}
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
json.dump({name: {"shape": list(t.shape), "float32": t.float().flatten().tolist(),
                  "int64": t.flatten().tolist() if not t.is_floating_point() else None}
           for name, t in tensors.items()}, sys.stdout)
`

// TestReadsTorchFile reads a file written from PyTorch tensors and compares its values with
// PyTorch's own float32 (or int64) conversion of them, bit for bit.
func TestReadsTorchFile(t *testing.T) {
	needTorch(t)
	path := filepath.Join(t.TempDir(), "torch.safetensors")
	var want map[string]struct {
		Shape   []int64
		Float32 []float64
		Int64   []int64
	}
	if err := json.Unmarshal(runPython(t, torchWriter, path), &want); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["framework"] == "" {
		t.Errorf("metadata %v lacks the framework", f.Metadata)
	}
	if len(f.Tensors) != len(want) {
		t.Errorf("read %v, want %d tensors", f.Names(), len(want))
	}
	for name, w := range want {
		tensor, ok := f.Tensors[name]
		if !ok {
			t.Errorf("missing %q", name)
			continue
		}
		if !reflect.DeepEqual(tensor.Shape, w.Shape) {
			t.Errorf("%q: shape %v, want %v", name, tensor.Shape, w.Shape)
		}
		if w.Int64 != nil {
			got, err := tensor.Int64s()
			if err != nil || !reflect.DeepEqual(got, w.Int64) {
				t.Errorf("%q: %v (%v), want %v", name, got, err, w.Int64)
			}
			continue
		}
		got, err := tensor.Float32s()
		if err != nil || len(got) != len(w.Float32) {
			t.Errorf("%q: %d values (%v), want %d", name, len(got), err, len(w.Float32))
			continue
		}
		for i, v := range got {
			wv := float32(w.Float32[i])
			if math.Float32bits(v) != math.Float32bits(wv) {
				t.Errorf("%q[%d] = %v (%#08x), torch says %v (%#08x)", name, i, v, math.Float32bits(v), wv, math.Float32bits(wv))
			}
		}
	}
}
