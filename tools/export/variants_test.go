package export

import (
	"context"
	"errors"
	"image"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

func exportOrFail(t *testing.T, src *Source, o Options) *Report {
	t.Helper()
	if o.Out == "" {
		o.Out = t.TempDir()
	}
	o.Session = cpu()
	rep, err := Export(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func loadShared(t *testing.T) *Source {
	t.Helper()
	src, err := LoadSource(sharedRandomCheckpoint(t), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func dimStrings(v *onnxpb.ValueInfoProto) []string {
	var out []string
	for _, d := range v.GetType().GetTensorType().GetShape().GetDim() {
		if p := d.GetDimParam(); p != "" {
			out = append(out, p)
		} else {
			out = append(out, strconv.FormatInt(d.GetDimValue(), 10))
		}
	}
	return out
}

// TestOpsetsAndBatch: the FP32 network in every opset export writes, with batch 1 or a
// symbolic batch, declares what it should, loads in ORT and computes the same logits.
func TestOpsetsAndBatch(t *testing.T) {
	src := loadShared(t)
	img := syntheticPictures(3, testH, testW)
	var ref [][]float32
	for _, tc := range []struct {
		opset   int
		dynamic bool
	}{{17, false}, {14, false}, {18, false}, {21, true}, {17, true}} {
		t.Run(strings.Join([]string{"opset", strconv.Itoa(tc.opset), map[bool]string{false: "batch1", true: "dynamic"}[tc.dynamic]}, " "), func(t *testing.T) {
			out := t.TempDir()
			rep := exportOrFail(t, src, Options{Out: out, Opset: tc.opset, DynamicBatch: tc.dynamic, EmbedPreprocess: true})
			m := readModel(t, filepath.Join(out, "cardseg.onnx"))
			if v := m.OpsetImport[0].GetVersion(); v != int64(tc.opset) || m.GetIrVersion() != irVersion(tc.opset) {
				t.Fatalf("opset %d, IR %d", v, m.GetIrVersion())
			}
			wantBatch := "1"
			if tc.dynamic {
				wantBatch = "batch"
			}
			if d := dimStrings(m.Graph.Input[0]); strings.Join(d, ",") != wantBatch+",3,64,96" {
				t.Fatalf("input dims %v", d)
			}
			if d := dimStrings(m.Graph.Output[0]); strings.Join(d, ",") != wantBatch+",2,64,96" {
				t.Fatalf("output dims %v", d)
			}
			for _, n := range m.Graph.Node {
				if n.GetOpType() == "ReduceMean" && (findAttr(n, "axes") != nil) == (tc.opset >= 18) {
					t.Fatalf("opset %d: ReduceMean %s has axes attribute %v", tc.opset, n.GetName(), findAttr(n, "axes") != nil)
				}
			}
			rgb := readModel(t, filepath.Join(out, "cardseg.rgb.onnx"))
			for _, n := range rgb.Graph.Node {
				if n.GetOpType() == "Resize" && (findAttr(n, "antialias") != nil) != (tc.opset >= 18) {
					t.Fatalf("opset %d: Resize %s antialias %v", tc.opset, n.GetName(), findAttr(n, "antialias") != nil)
				}
			}
			if d := rep.Model(FP32, false).Parity.MaxAbsDiff; d > FP32MaxAbsDiff {
				t.Fatalf("max diff %.2e", d)
			}
			s, err := runtime.NewSessionFromFile(filepath.Join(out, "cardseg.onnx"), cpu())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := runLogits(s, img, testH, testW)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = got
			}
			for i := range got {
				if d, _ := maxAbsDiff(got[i], ref[i]); d > 1e-5 {
					t.Fatalf("image %d: logits differ from opset 17's by %.2e", i, d)
				}
			}
			if tc.dynamic {
				// One run of three images equals three runs of one.
				x := append(append(append([]float32{}, img[0].input...), img[1].input...), img[2].input...)
				res, err := s.Run(map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{3, 3, testH, testW}, x)})
				if err != nil {
					t.Fatal(err)
				}
				all := runtime.Data[float32](res[step.OutLogits])
				n := 2 * testH * testW
				for i := range got {
					if d, _ := maxAbsDiff(all[i*n:(i+1)*n], got[i]); d > 1e-5 {
						t.Fatalf("batch of 3, image %d: differs by %.2e from its own run", i, d)
					}
				}
			}
		})
	}
}

// TestFP16 checks the float16 model: float16 initializers only, float32 I/O joined by Casts by
// default, float16 I/O with FP16IO, and both run and agree with FP32.
func TestFP16(t *testing.T) {
	src := loadShared(t)
	for _, io16 := range []bool{false, true} {
		t.Run(map[bool]string{false: "float32 I/O", true: "float16 I/O"}[io16], func(t *testing.T) {
			out := t.TempDir()
			rep := exportOrFail(t, src, Options{Out: out, FP16: true, FP16IO: io16, EmbedPreprocess: true})
			m := readModel(t, filepath.Join(out, "cardseg.fp16.onnx"))
			wantIO := elemFloat
			if io16 {
				wantIO = elemFloat16
			}
			if elemType(m.Graph.Input[0]) != wantIO || elemType(m.Graph.Output[0]) != wantIO {
				t.Fatalf("I/O types %d, %d; want %d", elemType(m.Graph.Input[0]), elemType(m.Graph.Output[0]), wantIO)
			}
			casts := 0
			for _, n := range m.Graph.Node {
				if n.GetOpType() == "Cast" {
					casts++
				}
			}
			if (casts == 2) == io16 {
				t.Fatalf("%d Cast nodes with float16 I/O %v", casts, io16)
			}
			for _, init := range m.Graph.Initializer {
				if init.GetDataType() == elemFloat {
					t.Fatalf("float32 initializer %s", init.GetName())
				}
			}
			h := rep.Model(FP16, false)
			if h.FP16 == nil || h.FP16.Tensors == 0 || h.FP16.MaxRelError > 1e-3 {
				t.Fatalf("fp16 stats %+v", h.FP16)
			}
			// Random weights give random masks; the logits must still be close.
			if h.Parity.MaxRelDiff > 0.02 || h.Parity.MaskAgreement < 0.98 {
				t.Fatalf("FP16 parity %+v", h.Parity)
			}
			if r := rep.Model(FP16, true); r == nil || r.Parity.MaskAgreement < 0.98 {
				t.Fatalf("FP16 RGB variant parity %+v", r)
			}
			if io16 && metadata(m)["cardseg.input_layout"] != "NCHW float16 RGB" {
				t.Fatalf("input layout metadata %q", metadata(m)["cardseg.input_layout"])
			}
		})
	}
}

// TestRGBVariant feeds the RGB variant camera-like pixels of other sizes than the network's and
// checks its outputs against the network run through Go preprocessing; with a dynamic batch it
// takes [N,H,W,3].
func TestRGBVariant(t *testing.T) {
	src := loadShared(t)
	out := t.TempDir()
	exportOrFail(t, src, Options{Out: out, EmbedPreprocess: true})
	dyn := t.TempDir()
	exportOrFail(t, src, Options{Out: dyn, EmbedPreprocess: true, DynamicBatch: true})
	net, err := runtime.NewSessionFromFile(filepath.Join(out, "cardseg.onnx"), cpu())
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	rgb, err := runtime.NewSessionFromFile(filepath.Join(out, "cardseg.rgb.onnx"), cpu())
	if err != nil {
		t.Fatal(err)
	}
	defer rgb.Close()
	in := rgb.Inputs()[0]
	if in.Name != InputRGB || in.DType != runtime.Uint8 || len(in.Shape) != 3 || in.Shape[2] != 3 {
		t.Fatalf("RGB variant input %v", in)
	}
	pics := syntheticPictures(2, 3*testH/2, 3*testW/2) // 144×96: resized inside to 96×64
	for _, p := range pics {
		h, w := 3*testH/2, 3*testW/2
		res, err := runRGB(rgb, p.orig, h, w)
		if err != nil {
			t.Fatal(err)
		}
		if err := res.consistent(); err != nil {
			t.Fatal(err)
		}
		// The network on the same pixels resized (bilinear; no antialiasing below 2×, so
		// Go's resize and ONNX's agree closely), its margin resized back to the picture.
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for i := 0; i < w*h; i++ {
			copy(img.Pix[4*i:4*i+3], p.orig[3*i:3*i+3])
			img.Pix[4*i+3] = 255
		}
		small, _, err := augment.Resize(img, nil, testW, testH)
		if err != nil {
			t.Fatal(err)
		}
		x := make([]float32, 3*testH*testW)
		normalize(x, small)
		l, err := runLogits(net, []sample{{input: x}}, testH, testW)
		if err != nil {
			t.Fatal(err)
		}
		want := resizeBilinear(margin(l[0]), testH, testW, h, w)
		var worst float64
		for i, v := range want {
			worst = math.Max(worst, math.Abs(float64(res.prob[i]-sigmoid(v))))
		}
		// Go resizes 8-bit pixels and rounds them; the model interpolates in float.
		if worst > 0.05 {
			t.Fatalf("card probability differs by %.3f from the network on Go-resized pixels", worst)
		}
	}
	d, err := runtime.NewSessionFromFile(filepath.Join(dyn, "cardseg.rgb.onnx"), cpu())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if in := d.Inputs()[0]; len(in.Shape) != 4 {
		t.Fatalf("dynamic-batch RGB input %v, want [N,H,W,3]", in)
	}
	both := append(append([]uint8{}, pics[0].orig...), pics[1].orig...)
	res, err := d.Run(map[string]*runtime.Tensor{InputRGB: runtime.MustNew([]int64{2, 3 * testH / 2, 3 * testW / 2, 3}, both)})
	if err != nil {
		t.Fatal(err)
	}
	if s := res[OutputMask].Shape; len(s) != 3 || s[0] != 2 || s[1] != 3*testH/2 || s[2] != 3*testW/2 {
		t.Fatalf("batched mask shape %v", s)
	}
	for i, p := range pics {
		one, _ := runRGB(rgb, p.orig, 3*testH/2, 3*testW/2)
		n := len(one.prob)
		if dd, _ := maxAbsDiff(runtime.Data[float32](res[OutputProbability])[i*n:(i+1)*n], one.prob); dd > 1e-5 {
			t.Fatalf("batched image %d differs from its own run by %.2e", i, dd)
		}
	}
}

// TestVerificationCatchesDivergence: an export whose network does not compute what the
// checkpoint computes is written for inspection but fails with the check named.
func TestVerificationCatchesDivergence(t *testing.T) {
	src := loadShared(t)
	broken := *src
	broken.Weights = src.Weights.Clone()
	w := broken.Weights.Tensors["backbone.0.1.running_mean"]
	w[0] += 0.5 // the checkpoint file (the reference) still holds the original
	out := t.TempDir()
	rep, err := Export(context.Background(), &broken, Options{Out: out, Session: cpu()})
	var verr *VerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("got %v, want a verification error", err)
	}
	if len(verr.Failed) != 1 || verr.Failed[0].Name != "fp32_max_abs_diff" || !strings.Contains(err.Error(), "cardseg.onnx") {
		t.Fatalf("failed checks %+v (%v)", verr.Failed, err)
	}
	if rep == nil || rep.Model(FP32, false) == nil {
		t.Fatal("no report with the failure")
	}
	for _, f := range []string{"cardseg.onnx", ReportName} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s not kept for inspection: %v", f, err)
		}
	}
}

// TestSafetensorsSource: the exported safetensors file is a source too (its configuration
// travels in its metadata) and exports the same network; a file from PyTorch needs --size.
func TestSafetensorsSource(t *testing.T) {
	src := loadShared(t)
	out := t.TempDir()
	exportOrFail(t, src, Options{Out: out, Formats: []string{FormatONNX, FormatSafetensors}})
	back, err := LoadSource(filepath.Join(out, "cardseg.safetensors"), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if back.Config.Height != testH || back.Config.WidthMult != testWidthMult || back.Weights.BatchesTracked != src.Weights.BatchesTracked {
		t.Fatalf("configuration from metadata: %dx%d width %g, tracked %d", back.Config.Height, back.Config.Width, back.Config.WidthMult, back.Weights.BatchesTracked)
	}
	for k, v := range src.Weights.Tensors {
		for i := range v {
			if back.Weights.Tensors[k][i] != v[i] {
				t.Fatalf("%s[%d] read back as %g, want %g", k, i, back.Weights.Tensors[k][i], v[i])
			}
		}
	}
	again := t.TempDir()
	rep := exportOrFail(t, back, Options{Out: again})
	if rep.Source.Kind != "safetensors" || rep.Model(FP32, false).Parity.MaxAbsDiff > FP32MaxAbsDiff {
		t.Fatalf("export from safetensors: %+v", rep.Source)
	}
	a, b := readModel(t, filepath.Join(out, "cardseg.onnx")), readModel(t, filepath.Join(again, "cardseg.onnx"))
	ia, ib := initializers(a.Graph), initializers(b.Graph)
	if len(ia) != len(ib) {
		t.Fatalf("%d vs %d initializers", len(ia), len(ib))
	}
	for name, ta := range ia {
		if tb := ib[name]; tb == nil || string(ta.RawData) != string(tb.RawData) {
			t.Fatalf("initializer %s differs between the exports from the checkpoint and from safetensors", name)
		}
	}

	// Weights as PyTorch saves them: no cardseg metadata.
	plain := filepath.Join(t.TempDir(), "torch.safetensors")
	if err := src.StepConfig().Arch.SaveWeights(plain, src.Weights, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSource(plain, 0, 0); err == nil || !strings.Contains(err.Error(), "--size") || !strings.Contains(err.Error(), plain) {
		t.Fatalf("safetensors without metadata or --size: %v", err)
	}
	// Without metadata the width is torchvision's 1.0; the narrow weights do not fit it.
	if _, err := LoadSource(plain, testH, testW); err == nil || !strings.Contains(err.Error(), "does not fit the architecture") {
		t.Fatalf("narrow weights read as width 1: %v", err)
	}
}

// TestCalibrationSources: a plain folder of images calibrates; no images at all is an error
// naming the flag.
func TestCalibrationSources(t *testing.T) {
	src := loadShared(t)
	flat := t.TempDir()
	for i, p := range syntheticPictures(4, testH, testW) {
		img := image.NewRGBA(image.Rect(0, 0, testW, testH))
		for k := 0; k < testW*testH; k++ {
			copy(img.Pix[4*k:4*k+3], p.orig[3*k:3*k+3])
			img.Pix[4*k+3] = 255
		}
		writePNG(t, filepath.Join(flat, "pic"+strconv.Itoa(i)+".png"), img)
	}
	rep := exportOrFail(t, src, Options{Int8: true, Calib: flat, CalibImages: 3})
	q := rep.Model(INT8, false).Quantization
	if q.Images != 3 || q.ImageDir != flat || rep.Samples.Dir != flat || rep.TestSplit != nil {
		t.Fatalf("calibration %+v, samples %+v, test split %+v", q, rep.Samples, rep.TestSplit)
	}
	found := false
	for _, w := range rep.Warnings {
		found = found || strings.Contains(w, "INT8 card-IoU drop was not measured")
	}
	if !found {
		t.Fatalf("no warning that the INT8 drop was not measured: %v", rep.Warnings)
	}
	_, err := Export(context.Background(), src, Options{Out: t.TempDir(), Int8: true, Session: cpu()})
	if err == nil || !strings.Contains(err.Error(), "--calib") {
		t.Fatalf("INT8 without images: %v", err)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no output", Options{}, "--out"},
		{"opset too old", Options{Out: "x", Opset: 13}, "opset 13"},
		{"opset too new", Options{Out: "x", Opset: 22}, "opset 22"},
		{"unknown format", Options{Out: "x", Formats: []string{"torchscript"}}, `format "torchscript"`},
		{"fp16 without onnx", Options{Out: "x", Formats: []string{FormatSafetensors}, FP16: true, CreatePackage: true}, "--create-package, --fp16 apply to ONNX"},
		{"fp16-io alone", Options{Out: "x", FP16IO: true}, "--fp16-io needs --fp16"},
		{"calibration method", Options{Out: "x", CalibMethod: "entropy"}, `method "entropy"`},
		{"percentile", Options{Out: "x", Percentile: 40}, "percentile 40"},
		{"weight bits", Options{Out: "x", Int8WeightBits: 4}, "--int8-weight-bits 4"},
		{"name with a path", Options{Out: "x", Name: "../m"}, `name "../m"`},
		{"calibration images", Options{Out: "x", CalibImages: -1}, "--calib-images -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.setDefaults()
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSourceErrors(t *testing.T) {
	ck := sharedRandomCheckpoint(t)
	exported := t.TempDir()
	src := loadShared(t)
	exportOrFail(t, src, Options{Out: exported})
	garbage := filepath.Join(t.TempDir(), "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		h, w       int
		want       []string
	}{
		{"missing", filepath.Join(exported, "nope.onnx"), 0, 0, []string{"nope.onnx", "no such file"}},
		{"exported model", filepath.Join(exported, "cardseg.onnx"), 0, 0, []string{"cardseg.onnx", "without training state", "checkpoint"}},
		{"not ONNX", garbage, 0, 0, []string{"garbage.onnx", "not an ONNX model"}},
		{"checkpoint at another size", ck, 128, 192, []string{"trained at 64x96", "128x192"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadSource(tc.path, tc.h, tc.w)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestStaleFilesWarned: files of an earlier export that this one did not write are named.
func TestStaleFilesWarned(t *testing.T) {
	src := loadShared(t)
	out := t.TempDir()
	exportOrFail(t, src, Options{Out: out, FP16: true})
	rep := exportOrFail(t, src, Options{Out: out})
	if len(rep.Warnings) == 0 || !strings.Contains(strings.Join(rep.Warnings, "\n"), "cardseg.fp16.onnx") {
		t.Fatalf("warnings %v do not name the stale FP16 model", rep.Warnings)
	}
}

// TestSyntheticSamples: with no images anywhere the parity checks run on synthetic pictures,
// and the report says so; the checkpoint's progress reaches the report.
func TestSyntheticSamples(t *testing.T) {
	src := loadShared(t)
	if _, err := os.Stat(src.Config.Data); err == nil {
		t.Skip("the checkpoint's data folder exists here")
	}
	rep := exportOrFail(t, src, Options{})
	if !rep.Samples.Synthetic || rep.Samples.Count != 8 || len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "--data") {
		t.Fatalf("samples %+v, warnings %v", rep.Samples, rep.Warnings)
	}
	if rep.Source.Epoch != 3 || rep.Source.ValIoU != 0.5 {
		t.Fatalf("source %+v", rep.Source)
	}
}
