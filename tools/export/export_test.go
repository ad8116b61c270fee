package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/metrics"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

func readModel(t testing.TB, path string) *onnxpb.ModelProto {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &m
}

// TestExportPackage exports a trained model every way at once and checks the result as a user
// would: every file is there with the size and hash the report gives and runs on ORT's CPU
// provider with the declared inputs and outputs; FP32 matches the checkpoint within 1e-4; FP16
// and INT8 masks agree with FP32's; INT8 loses at most 0.01 card IoU on the test split
// (recomputed here independently); the README carries these numbers; the example program
// builds from the package alone and writes the model's mask.
func TestExportPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model first (about 15 s)")
	}
	ck, data := trainedCheckpoint(t)
	src, err := LoadSource(ck, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rep, err := Export(context.Background(), src, Options{Out: out, FP16: true, Int8: true, Calib: data, EmbedPreprocess: true,
		CreatePackage: true, Formats: []string{FormatONNX, FormatSafetensors}, LatencyRuns: 5, Session: cpu(), ToolVersion: "test",
		Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("files", func(t *testing.T) {
		var want []string
		for _, p := range []string{FP32, FP16, INT8} {
			for _, rgb := range []bool{false, true} {
				want = append(want, (&Options{Name: "cardseg"}).fileName(p, rgb))
			}
		}
		if len(rep.Models) != len(want) {
			t.Fatalf("report lists %d models, want %d", len(rep.Models), len(want))
		}
		files := append([]FileReport{*rep.Weights}, func() (fs []FileReport) {
			for _, m := range rep.Models {
				fs = append(fs, m.FileReport)
			}
			return
		}()...)
		for i, f := range files {
			if i > 0 && f.File != want[i-1] {
				t.Errorf("model %d is %s, want %s", i-1, f.File, want[i-1])
			}
			b, err := os.ReadFile(filepath.Join(out, f.File))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			if int64(len(b)) != f.Bytes || hex.EncodeToString(sum[:]) != f.SHA256 {
				t.Errorf("%s: %d bytes sha256 %x; report says %d, %s", f.File, len(b), sum, f.Bytes, f.SHA256)
			}
		}
		fp32, fp16, int8 := rep.Model(FP32, false).Bytes, rep.Model(FP16, false).Bytes, rep.Model(INT8, false).Bytes
		if !(fp16 < fp32*6/10 && int8 < fp32*4/10) {
			t.Errorf("sizes fp32 %d, fp16 %d, int8 %d: FP16 should be about half, INT8 about a quarter", fp32, fp16, int8)
		}
		var onDisk Report
		b, err := os.ReadFile(filepath.Join(out, ReportName))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &onDisk); err != nil {
			t.Fatalf("%s: %v", ReportName, err)
		}
		if len(onDisk.Models) != len(rep.Models) || *onDisk.Model(INT8, false).TestIoUDrop != *rep.Model(INT8, false).TestIoUDrop {
			t.Errorf("%s differs from the returned report", ReportName)
		}
	})

	// Every model runs on ORT CPU on a real test image (twice the network's size) with the
	// declared types and shapes.
	t.Run("run on ORT CPU", func(t *testing.T) {
		img, _, err := augment.ReadImage(filepath.Join(data, "test", "image", "test_002.png"))
		if err != nil {
			t.Fatal(err)
		}
		small, _, _ := augment.Resize(img, nil, testW, testH)
		x := make([]float32, 3*testH*testW)
		normalize(x, small)
		for _, m := range rep.Models {
			s, err := runtime.NewSessionFromFile(filepath.Join(out, m.File), cpu())
			if err != nil {
				t.Fatal(err)
			}
			if m.Preprocess {
				r, err := runRGB(s, hwc(img), img.Rect.Dy(), img.Rect.Dx())
				if err != nil {
					t.Fatalf("%s: %v", m.File, err)
				}
				if err := r.consistent(); err != nil {
					t.Fatalf("%s: %v", m.File, err)
				}
			} else {
				in := s.Inputs()[0]
				if in.Name != step.InputImage || in.DType != runtime.Float32 || fmt.Sprint(in.Shape) != fmt.Sprint([]int64{1, 3, testH, testW}) {
					t.Errorf("%s: input %v, want image float32 [1,3,%d,%d]", m.File, in, testH, testW)
				}
				if _, err := runLogits(s, []sample{{name: "test_002", input: x}}, testH, testW); err != nil {
					t.Fatalf("%s: %v", m.File, err)
				}
			}
			s.Close()
		}
	})

	t.Run("parity", func(t *testing.T) {
		for _, m := range rep.Models {
			t.Logf("%-24s max|diff| %.2e  mask IoU %.4f  test IoU %s drop %s", m.File, m.Parity.MaxAbsDiff, m.Parity.MaskIoU,
				fmtOpt(m.TestIoU), fmtOpt(m.TestIoUDrop))
		}
		if d := rep.Model(FP32, false).Parity.MaxAbsDiff; d > FP32MaxAbsDiff {
			t.Errorf("FP32 logits differ from the checkpoint's by %.2e", d)
		}
		if d := rep.Model(FP32, true).Parity.MaxAbsDiff; d > RGBMaxProbDiff {
			t.Errorf("FP32 RGB variant's probability differs from its network's by %.2e", d)
		}
		for _, c := range []struct {
			precision string
			minIoU    float64
		}{{FP32, 0.9999}, {FP16, 0.99}, {INT8, 0.95}} {
			for _, rgb := range []bool{false, true} {
				if iou := rep.Model(c.precision, rgb).Parity.MaskIoU; iou < c.minIoU {
					t.Errorf("%s (rgb %v): mask IoU with the FP32 checkpoint %.4f < %.2f", c.precision, rgb, iou, c.minIoU)
				}
			}
		}
		if rep.TestSplit == nil || rep.TestSplit.Images != 12 {
			t.Fatalf("test split %+v, want the 12 test images", rep.TestSplit)
		}
		m := rep.Model(INT8, false)
		if m.TestIoUDrop == nil || *m.TestIoUDrop > DefaultMaxInt8IoUDrop {
			t.Fatalf("INT8 test-split card-IoU drop %s > %g", fmtOpt(m.TestIoUDrop), DefaultMaxInt8IoUDrop)
		}
		// The same numbers, computed independently of the report.
		ds, err := pipeline.OpenDataset(context.Background(), data, pipeline.DatasetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		iou := map[string]float64{}
		for _, p := range []string{FP32, INT8} {
			sm, err := pipeline.OpenSegModel(filepath.Join(out, rep.Model(p, false).File), pipeline.ModelOptions{Session: cpu()})
			if err != nil {
				t.Fatal(err)
			}
			res, err := pipeline.Evaluate(context.Background(), sm, ds.Test, pipeline.EvalOptions{Batch: 1})
			sm.Close()
			if err != nil {
				t.Fatal(err)
			}
			iou[p] = res.Card.IoU
		}
		if d := iou[FP32] - iou[INT8]; fmt.Sprintf("%.6f", d) != fmt.Sprintf("%.6f", *m.TestIoUDrop) || d > DefaultMaxInt8IoUDrop {
			t.Errorf("independent evaluation: FP32 %.4f, INT8 %.4f (drop %.4f); report says drop %.4f", iou[FP32], iou[INT8], d, *m.TestIoUDrop)
		}
	})

	t.Run("README", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(out, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		readme := string(b)
		for _, m := range rep.Models {
			row := fmt.Sprintf("| `%s` | %.1e", m.File, m.Parity.MaxAbsDiff)
			if !strings.Contains(readme, row) || !strings.Contains(readme, fmt.Sprintf("%.4f", m.Parity.MaskIoU)) {
				t.Errorf("README lacks %s's parity row (%q, mask IoU %.4f)", m.File, row, m.Parity.MaskIoU)
			}
			if !strings.Contains(readme, fmt.Sprintf("| `%s` | %s | %.1f ms", m.File, m.Latency.Input, m.Latency.MedianMS)) {
				t.Errorf("README lacks %s's latency", m.File)
			}
			if !strings.Contains(readme, fmt.Sprintf("%.2f MB", float64(m.Bytes)/1e6)) {
				t.Errorf("README lacks %s's size", m.File)
			}
		}
		for _, p := range []string{FP16, INT8} {
			m := rep.Model(p, false)
			if !strings.Contains(readme, fmt.Sprintf("| %.4f | %.4f |", *m.TestIoU, *m.TestIoUDrop)) {
				t.Errorf("README lacks %s's test IoU and drop", p)
			}
		}
		for _, want := range []string{"### Android", "### iOS", "### Desktop: Go", "OnnxJavaType.UINT8", "ORTValue(tensorData:",
			"mean = (0.485, 0.456, 0.406)", "width_mult=0.35", "strict=True", "QuantizeLinear"} {
			if !strings.Contains(readme, want) {
				t.Errorf("README lacks %q", want)
			}
		}
	})

	t.Run("metadata", func(t *testing.T) {
		m := readModel(t, filepath.Join(out, "cardseg.onnx"))
		md := metadata(m)
		var cfg pipeline.TrainConfig
		if err := json.Unmarshal([]byte(md[MetaTrainingConfig]), &cfg); err != nil || cfg.Height != testH || cfg.WidthMult != testWidthMult {
			t.Errorf("training config metadata %q: %v", md[MetaTrainingConfig], err)
		}
		var val pipeline.EpochRecord
		if err := json.Unmarshal([]byte(md[MetaValidation]), &val); err != nil || val.Val.IoU != src.Progress.LastMetrics.Val.IoU {
			t.Errorf("validation metadata %q: %v", md[MetaValidation], err)
		}
		for k, v := range map[string]string{MetaPrecision: FP32, MetaBatch: "1", "cardseg.input": "image", "cardseg.output": "logits",
			"cardseg.input_size": "[64,96]", "cardseg.classes": `["background","card"]`} {
			if md[k] != v {
				t.Errorf("metadata %s = %q, want %q", k, md[k], v)
			}
		}
		for _, n := range m.Graph.Node {
			if n.GetOpType() == "BatchNormalization" {
				t.Fatalf("FP32 export keeps batch norm %s unfolded", n.GetName())
			}
		}
		q := readModel(t, filepath.Join(out, "cardseg.int8.onnx"))
		var qr QuantReport
		if err := json.Unmarshal([]byte(metadata(q)[MetaQuantization]), &qr); err != nil || qr.Images != 32 || qr.Nodes["Conv"] == 0 {
			t.Errorf("quantization metadata %q: %v", metadata(q)[MetaQuantization], err)
		}
		counts := map[string]int{}
		for _, n := range q.Graph.Node {
			counts[n.GetOpType()]++
		}
		if counts["QuantizeLinear"] != qr.Tensors || counts["DequantizeLinear"] < qr.Tensors+qr.Nodes["Conv"] {
			t.Errorf("INT8 model has %d QuantizeLinear and %d DequantizeLinear for %d tensors and %d convs",
				counts["QuantizeLinear"], counts["DequantizeLinear"], qr.Tensors, qr.Nodes["Conv"])
		}
		for _, init := range q.Graph.Initializer {
			if init.GetDataType() == elemFloat && elements(init.Dims) > 1024 && !strings.HasPrefix(init.GetName(), "const") &&
				!strings.Contains(init.GetName(), "/const") {
				t.Errorf("INT8 model keeps float weight %s %v", init.GetName(), init.Dims)
			}
		}
		h := readModel(t, filepath.Join(out, "cardseg.fp16.onnx"))
		for _, init := range h.Graph.Initializer {
			if init.GetDataType() == elemFloat {
				t.Errorf("FP16 model keeps float32 initializer %s", init.GetName())
			}
		}
	})

	t.Run("example program", func(t *testing.T) { testExample(t, out, data) })
}

func fmtOpt(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *v)
}

// testExample builds the package's example program on its own (its go.mod and go.sum, no
// network) and runs it on an RGB variant and on the INT8 network.
func testExample(t *testing.T, pkg, data string) {
	lib, _, err := runtime.LibraryPath()
	if err != nil {
		t.Skip(err)
	}
	bin := filepath.Join(t.TempDir(), "cardseg-example")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(pkg, exampleDir)
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in the package's example folder: %v\n%s", err, msg)
	}
	photo := filepath.Join(data, "test", "image", "test_002.png") // 192×128: the models resize
	img, _, err := augment.ReadImage(photo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model, ref string  // the example runs model; ref, the same network with resizing inside, is run here
		minIoU     float64 // of the example's mask with ref's
	}{
		{"cardseg.rgb.onnx", "cardseg.rgb.onnx", 1}, // the same model on the same pixels
		// The example's own resizing and normalisation in front of the INT8 network, against
		// the INT8 network with both inside the graph: this checks the example's
		// preprocessing, not quantization error (which the IoU-drop check above bounds).
		{"cardseg.onnx", "cardseg.rgb.onnx", 0.99},
		{"cardseg.int8.onnx", "cardseg.int8.rgb.onnx", 0.95},
	} {
		t.Run(tc.model, func(t *testing.T) {
			s, err := runtime.NewSessionFromFile(filepath.Join(pkg, tc.ref), cpu())
			if err != nil {
				t.Fatal(err)
			}
			want, err := runRGB(s, hwc(img), img.Rect.Dy(), img.Rect.Dx())
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			mask, ov := filepath.Join(dir, "mask.png"), filepath.Join(dir, "overlay.png")
			cmd := exec.Command(bin, "-model", filepath.Join(pkg, tc.model), "-image", photo, "-mask", mask, "-overlay", ov, "-ort-lib", lib, "-threads", "2")
			msg, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(msg, []byte("card covers")) {
				t.Fatalf("example: %v\n%s", err, msg)
			}
			got, _, err := augment.ReadMask(mask)
			if err != nil {
				t.Fatal(err)
			}
			if got.Width != img.Rect.Dx() || got.Height != img.Rect.Dy() {
				t.Fatalf("mask is %dx%d, the photo %dx%d", got.Width, got.Height, img.Rect.Dx(), img.Rect.Dy())
			}
			ref := make([]uint8, len(want.mask))
			for i, v := range want.mask {
				ref[i] = v / 255
			}
			c := metrics.NewConfusion(2)
			if err := c.Add(ref, got.Pix); err != nil {
				t.Fatal(err)
			}
			if iou := c.IoU(metrics.Card); iou < tc.minIoU {
				t.Fatalf("example's mask has IoU %.4f with %s's, want >= %g", iou, tc.ref, tc.minIoU)
			}
			t.Logf("IoU %.4f", c.IoU(metrics.Card))
			o, _, err := augment.ReadImage(ov)
			if err != nil || o.Rect != img.Rect {
				t.Fatalf("overlay: %v, %v", err, o.Rect)
			}
			t.Logf("%s", bytes.TrimSpace(msg))
		})
	}
}

// TestExampleGoSum keeps the example's go.sum lines equal to the repository's.
func TestExampleGoSum(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(exampleGoSum), "\n") {
		if !strings.Contains(string(b), line+"\n") {
			t.Errorf("go.sum lacks the example's line %q: update exampleGoSum and exampleORTGoVersion", line)
		}
	}
	if !strings.Contains(string(b), "github.com/yalue/onnxruntime_go "+exampleORTGoVersion+" ") {
		t.Errorf("the repository no longer uses onnxruntime_go %s", exampleORTGoVersion)
	}
}
