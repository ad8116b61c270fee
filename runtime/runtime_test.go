package runtime_test

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

func requireORT(t testing.TB) {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Fatalf("ONNX Runtime: %v (run `just setup`)", err)
	}
}

func valueInfo(name string, elem onnxpb.TensorProto_DataType, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		switch v := d.(type) {
		case int:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(v)}})
		case string:
			shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: v}})
		}
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(elem)), Shape: shape}}}}
}

func intsAttr(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// depthwiseHardSwish builds x[N,4,5,5] -> Conv(group=2, 3x3, pad 1, W=initializer) -> HardSwish.
func depthwiseHardSwish(w []float32) []byte {
	graph := &onnxpb.GraphProto{
		Name:   proto.String("grouped_conv_hardswish"),
		Input:  []*onnxpb.ValueInfoProto{valueInfo("x", onnxpb.TensorProto_FLOAT, "N", 4, 5, 5)},
		Output: []*onnxpb.ValueInfoProto{valueInfo("y", onnxpb.TensorProto_FLOAT, "N", 4, 5, 5)},
		Initializer: []*onnxpb.TensorProto{{
			Name: proto.String("w"), Dims: []int64{4, 2, 3, 3},
			DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: w,
		}},
		Node: []*onnxpb.NodeProto{
			{OpType: proto.String("Conv"), Input: []string{"x", "w"}, Output: []string{"c"}, Name: proto.String("conv"),
				Attribute: []*onnxpb.AttributeProto{intAttr("group", 2), intsAttr("kernel_shape", 3, 3), intsAttr("pads", 1, 1, 1, 1)}},
			{OpType: proto.String("HardSwish"), Input: []string{"c"}, Output: []string{"y"}, Name: proto.String("hswish")},
		},
	}
	m := &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("cardseg-ort-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph:        graph,
	}
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// reference computes the same function directly.
func reference(x, w []float32, n int) []float32 {
	const C, H, W, G = 4, 5, 5, 2
	cpg := C / G
	y := make([]float32, n*C*H*W)
	for b := 0; b < n; b++ {
		for oc := 0; oc < C; oc++ {
			g := oc / cpg
			for i := 0; i < H; i++ {
				for j := 0; j < W; j++ {
					var s float64
					for ic := 0; ic < cpg; ic++ {
						for ki := 0; ki < 3; ki++ {
							for kj := 0; kj < 3; kj++ {
								ii, jj := i+ki-1, j+kj-1
								if ii < 0 || jj < 0 || ii >= H || jj >= W {
									continue
								}
								s += float64(x[((b*C+g*cpg+ic)*H+ii)*W+jj]) * float64(w[((oc*cpg+ic)*3+ki)*3+kj])
							}
						}
					}
					hs := s * math.Min(math.Max(s+3, 0), 6) / 6
					y[((b*C+oc)*H+i)*W+j] = float32(hs)
				}
			}
		}
	}
	return y
}

func TestGroupedConvHardSwishOnCPU(t *testing.T) {
	requireORT(t)
	w := make([]float32, 4*2*3*3)
	for i := range w {
		w[i] = float32(math.Sin(float64(i))) * 0.7
	}
	model := depthwiseHardSwish(w)
	s, err := runtime.NewSession("grouped_conv_hardswish", model, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{1, 3} {
		x := make([]float32, n*4*5*5)
		for i := range x {
			x[i] = float32(math.Cos(float64(i)*0.37)) * 2
		}
		out, err := s.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{int64(n), 4, 5, 5}, x)})
		if err != nil {
			t.Fatal(err)
		}
		got := out["y"]
		if want := []int64{int64(n), 4, 5, 5}; !equalShape(got.Shape, want) {
			t.Fatalf("shape %v, want %v", got.Shape, want)
		}
		want := reference(x, w, n)
		for i, g := range got.Float32s() {
			if math.Abs(float64(g-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("batch %d: y[%d] = %g, want %g", n, i, g, want[i])
			}
		}
	}
}

func TestModelPassesONNXChecker(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import onnx").Run(); err != nil {
		t.Skip("Debian python3-onnx not installed")
	}
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(path, depthwiseHardSwish(make([]float32, 72)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); print('ok')", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("onnx.checker: %v\n%s", err, out)
	}
}

func TestRunRejectsBadInputs(t *testing.T) {
	requireORT(t)
	s, err := runtime.NewSession("m", depthwiseHardSwish(make([]float32, 72)), runtime.SessionOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := []struct {
		name   string
		inputs map[string]*runtime.Tensor
		want   string
	}{
		{"missing", map[string]*runtime.Tensor{}, "missing input x"},
		{"unknown", map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{1, 4, 5, 5}, make([]float32, 100)), "z": runtime.Scalar[float32](1)}, "unknown input(s) z"},
		{"dtype", map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{1, 4, 5, 5}, make([]int64, 100))}, "is int64, the model wants float32"},
		{"shape", map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{1, 3, 5, 5}, make([]float32, 75))}, "has shape [1 3 5 5]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(tc.inputs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// castModel builds x float32 [N,K] -> Cast(to) -> y, to exercise FP16 outputs.
func castModel(to onnxpb.TensorProto_DataType, k int) []byte {
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String("cast"),
			Input:  []*onnxpb.ValueInfoProto{valueInfo("x", onnxpb.TensorProto_FLOAT, "N", k)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y", to, "N", k)},
			Node: []*onnxpb.NodeProto{{OpType: proto.String("Cast"), Input: []string{"x"}, Output: []string{"y"},
				Attribute: []*onnxpb.AttributeProto{intAttr("to", int64(to))}}},
		},
	}
	b, _ := proto.Marshal(m)
	return b
}

// TestFloat16OutputsComplete guards against onnxruntime_go copying only half the bytes of
// float16 outputs that ORT allocates: every element, the last half included, must arrive.
func TestFloat16OutputsComplete(t *testing.T) {
	requireORT(t)
	s, err := runtime.NewSession("cast16", castModel(onnxpb.TensorProto_FLOAT16, 7), runtime.SessionOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := make([]float32, 3*7)
	for i := range x {
		x[i] = float32(i+1) * 0.5
	}
	out, err := s.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{3, 7}, x)})
	if err != nil {
		t.Fatal(err)
	}
	y := out["y"]
	if y.DType != runtime.Float16 || !equalShape(y.Shape, []int64{3, 7}) {
		t.Fatalf("got %v %v", y.DType, y.Shape)
	}
	for i, v := range y.Float32s() {
		if v != x[i] {
			t.Fatalf("y[%d] = %g, want %g (float16 output truncated?)", i, v, x[i])
		}
	}
	// And float16 inputs: cast back to float32.
	s2, err := runtime.NewSession("cast16to32", castBack(), runtime.SessionOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	out2, err := s2.Run(map[string]*runtime.Tensor{"x": runtime.MustNew([]int64{2, 3}, runtime.ToFloat16([]float32{1, -2, 0.5, 65504, 1e-7, -0}))})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, -2, 0.5, 65504, runtime.HalfFromFloat32(1e-7).Float32(), 0}
	for i, v := range runtime.Data[float32](out2["y"]) {
		if v != want[i] {
			t.Fatalf("y[%d] = %g, want %g", i, v, want[i])
		}
	}
}

func castBack() []byte {
	m := &onnxpb.ModelProto{
		IrVersion:   proto.Int64(8),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String("castback"),
			Input:  []*onnxpb.ValueInfoProto{valueInfo("x", onnxpb.TensorProto_FLOAT16, 2, 3)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y", onnxpb.TensorProto_FLOAT, 2, 3)},
			Node: []*onnxpb.NodeProto{{OpType: proto.String("Cast"), Input: []string{"x"}, Output: []string{"y"},
				Attribute: []*onnxpb.AttributeProto{intAttr("to", int64(onnxpb.TensorProto_FLOAT))}}},
		},
	}
	b, _ := proto.Marshal(m)
	return b
}

func TestHalfConversion(t *testing.T) {
	cases := []struct {
		in   float32
		bits uint16
	}{
		{0, 0x0000}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, // rounds to Inf
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, // smallest subnormal
		{6.103515625e-05, 0x0400}, {0.333333343, 0x3555}, {1.0009765625, 0x3c01},
		{1.00048828125, 0x3c00}, // tie -> even
		{1.00146484375, 0x3c02}, // tie -> even (up)
		{2.9802322e-08, 0x0000}, // half of the smallest subnormal: tie to even -> 0
	}
	for _, tc := range cases {
		if got := runtime.HalfFromFloat32(tc.in); uint16(got) != tc.bits {
			t.Errorf("HalfFromFloat32(%g) = %#04x, want %#04x", tc.in, uint16(got), tc.bits)
		}
	}
	// Every finite half round-trips exactly through float32.
	for b := 0; b < 1<<16; b++ {
		h := runtime.Half(b)
		f := h.Float32()
		if math.IsNaN(float64(f)) {
			continue
		}
		if back := runtime.HalfFromFloat32(f); back != h {
			t.Fatalf("half %#04x -> %g -> %#04x", b, f, uint16(back))
		}
	}
}

func TestLibraryPathErrors(t *testing.T) {
	t.Setenv("ORT_LIB", "/nonexistent/libonnxruntime.so")
	_, src, err := runtime.LibraryPath()
	if err == nil || src != runtime.SourceEnv || !strings.Contains(err.Error(), "/nonexistent/libonnxruntime.so") {
		t.Fatalf("got %v from %v", err, src)
	}
	t.Setenv("ORT_LIB", "")
	t.Setenv("CARDSEG_ORT_DIR", t.TempDir())
	_, src, err = runtime.LibraryPath()
	if err == nil || src != runtime.SourceCache || !strings.Contains(err.Error(), "just setup") {
		t.Fatalf("got %v from %v", err, src)
	}
}

func TestCUDAReportNamesMissingFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("ORT_LIB", filepath.Join(dir, runtime.CoreLibraryName))
	if err := os.WriteFile(filepath.Join(dir, runtime.CoreLibraryName), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runtime.CheckCUDA()
	if r.Usable {
		t.Skip("a CUDA setup is visible; this test checks the report on machines without one")
	}
	if !strings.Contains(r.Problem, filepath.Join(dir, runtime.CUDAProviderName)) {
		t.Fatalf("problem %q does not name the provider library", r.Problem)
	}
	if _, err := runtime.ResolveProvider(runtime.ProviderCUDA); err == nil {
		t.Fatal("cuda resolved without a provider library")
	}
	if p, err := runtime.ResolveProvider(runtime.ProviderAuto); err != nil || p != runtime.ProviderCPU {
		t.Fatalf("auto -> %v, %v", p, err)
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
