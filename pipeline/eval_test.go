package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/metrics"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// The red models take 32×24 (W×H) images.
const evalW, evalH = 32, 24

// evalCase is one image of the synthetic test split: the card rectangle drawn in the image, the
// mask's size and card rectangle, and the confusion counts the red models must produce,
// worked out by hand from the rectangles (TP = |A∩B|, FP = |A|−TP, FN = |B|−TP).
type evalCase struct {
	name           string
	iw, ih         int
	card           evalRect // in image pixels
	mw, mh         int
	truth          evalRect // in mask pixels
	tp, fp, fn, tn int64
	iou            float64
}

var evalCases = []evalCase{
	// Prediction shifted 4 px left of the truth: 12×16 overlap, a 4×16 strip each side.
	{"a_partial", 32, 24, evalRect{8, 4, 24, 20}, 32, 24, evalRect{12, 4, 28, 20}, 192, 64, 64, 448, 0.6},
	// No card anywhere, none predicted: card IoU 0/0, scored 1.
	{"b_empty", 32, 24, evalRect{}, 32, 24, evalRect{}, 0, 0, 0, 768, 1},
	// All card.
	{"c_allcard", 32, 24, evalRect{0, 0, 32, 24}, 32, 24, evalRect{0, 0, 32, 24}, 768, 0, 0, 0, 1},
	// A card predicted where the mask has none.
	{"d_miss", 32, 24, evalRect{0, 0, 16, 12}, 32, 24, evalRect{}, 0, 192, 0, 576, 0},
	// A 64×48 image (box-filtered to 32×24) with a 128×96 mask; the card and the truth are
	// full-height strips, so only vertical edges are resampled: the card covers x in [32,96)
	// at mask resolution, the truth [40,112): overlap 56×96 = 5376, predicted 64×96, true
	// 72×96, of 128×96 = 12288 pixels.
	{"e_resized", 64, 48, evalRect{16, 0, 48, 48}, 128, 96, evalRect{40, 0, 112, 96}, 5376, 768, 1536, 4608, 0.7},
}

// Pooled over the five images, by hand: TP 192+768+5376, FP 64+192+768, FN 64+1536,
// TN 448+768+576+4608.
const (
	pooledTP, pooledFP, pooledFN, pooledTN = 6336, 1024, 1600, 6400
	perImageIoUMean                        = (0.6 + 1 + 1 + 0 + 0.7) / 5
)

// writeEvalDataset writes the cases as DIR/test/{image,mask}/NAME.png and returns DIR.
func writeEvalDataset(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range evalCases {
		writePNGFile(t, filepath.Join(dir, "test", "image", c.name+".png"), evalScene(c.iw, c.ih, c.card))
		writePNGFile(t, filepath.Join(dir, "test", "mask", c.name+".png"), evalMask(c.mw, c.mh, c.truth))
	}
	return dir
}

func cpuModel() ModelOptions {
	return ModelOptions{Session: runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1}}
}

func openModel(t *testing.T, path string, opts ModelOptions) *SegModel {
	t.Helper()
	m, err := OpenSegModel(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// checkCaseResults compares a result with the hand-computed cases.
func checkCaseResults(t *testing.T, res *EvalResult) {
	t.Helper()
	if res.Images != len(evalCases) || len(res.PerImage) != len(evalCases) {
		t.Fatalf("images = %d (%d per-image results), want %d", res.Images, len(res.PerImage), len(evalCases))
	}
	for i, c := range evalCases {
		r := res.PerImage[i]
		want := [][]int64{{c.tn, c.fp}, {c.fn, c.tp}}
		if r.Name != c.name || !equalCounts(r.Confusion, want) {
			t.Errorf("image %d %s: confusion %v, want %s %v", i, r.Name, r.Confusion, c.name, want)
		}
		if r.Width != c.mw || r.Height != c.mh {
			t.Errorf("%s scored at %d×%d, want the mask's %d×%d", c.name, r.Width, r.Height, c.mw, c.mh)
		}
		if math.Abs(r.IoU-c.iou) > 1e-12 {
			t.Errorf("%s: IoU %v, want %v", c.name, r.IoU, c.iou)
		}
	}
	want := [][]int64{{pooledTN, pooledFP}, {pooledFN, pooledTP}}
	if !equalCounts(res.Confusion.Counts, want) {
		t.Errorf("pooled confusion %v, want %v", res.Confusion.Counts, want)
	}
	tp, fp, fn, tn := float64(pooledTP), float64(pooledFP), float64(pooledFN), float64(pooledTN)
	checks := []struct {
		name      string
		got, want float64
	}{
		{"card IoU", res.Card.IoU, tp / (tp + fp + fn)},
		{"card Dice", res.Card.Dice, 2 * tp / (2*tp + fp + fn)},
		{"card precision", res.Card.Precision, tp / (tp + fp)},
		{"card recall", res.Card.Recall, tp / (tp + fn)},
		{"card F1", res.Card.F1, 2 * tp / (2*tp + fp + fn)},
		{"background IoU", res.Background.IoU, tn / (tn + fn + fp)},
		{"background precision", res.Background.Precision, tn / (tn + fn)},
		{"background recall", res.Background.Recall, tn / (tn + fp)},
		{"pixel accuracy", res.PixelAccuracy, (tp + tn) / (tp + fp + fn + tn)},
		{"mean IoU", res.MeanIoU, (tp/(tp+fp+fn) + tn/(tn+fn+fp)) / 2},
		{"per-image IoU mean", res.PerImageIoUMean, perImageIoUMean},
		{"per-image mean card IoU", res.PerImageMean.Card.IoU, perImageIoUMean},
		{"normalised [1][0]", res.Confusion.Normalized[1][0], fn / (fn + tp)},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > 1e-12 {
			t.Errorf("%s = %.12f, want %.12f", c.name, c.got, c.want)
		}
	}
}

func equalCounts(a, b [][]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

// Every output layout of the contract gives the hand-computed confusion matrices, at batch
// sizes that leave a short last batch.
func TestEvalOutputLayouts(t *testing.T) {
	data := writeEvalDataset(t)
	cases := []struct {
		kind     string
		in       []int64
		batch    int
		wantKind OutputKind
	}{
		{"logits2", []int64{-1, 3, evalH, evalW}, 2, OutputLogits},
		{"softmax2", []int64{-1, 3, evalH, evalW}, 3, OutputProbabilities},
		{"sigmoid1", []int64{-1, 3, evalH, evalW}, 1, OutputProbabilities},
		{"logit1", []int64{-1, 3, evalH, evalW}, 2, OutputLogits},
		{"logit3d", []int64{-1, 3, evalH, evalW}, 5, OutputLogits},
		{"labels", []int64{-1, 3, evalH, evalW}, 2, OutputLabels},
		{"lowres", []int64{-1, 3, evalH, evalW}, 2, OutputLogits},
		{"logits2", []int64{1, 3, evalH, evalW}, 3, OutputLogits}, // static batch 1
		{"logits2", []int64{2, 3, evalH, evalW}, 1, OutputLogits}, // static batch 2: the last of 5 padded
		{"fp16", []int64{-1, 3, evalH, evalW}, 2, OutputLogits},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+describeShape(tc.in), func(t *testing.T) {
			m := openModel(t, redModel(t, t.TempDir(), tc.kind, tc.in, nil), cpuModel())
			if tc.kind == "fp16" && (m.Input.DType != runtime.Float16 || m.Output.DType != runtime.Float16) {
				t.Fatalf("fp16 model reads as %s → %s", m.Input, m.Output)
			}
			res, err := EvaluateDataset(context.Background(), m, data, "test", EvalOptions{Batch: tc.batch})
			if err != nil {
				t.Fatal(err)
			}
			if res.Model.OutputKind != tc.wantKind {
				t.Errorf("output read as %s, want %s", res.Model.OutputKind, tc.wantKind)
			}
			checkCaseResults(t, res)
			if tc.wantKind == OutputLabels {
				if res.ConfHist != nil || res.PerImage[0].MeanConfidence != nil {
					t.Errorf("labels have no confidence, got a histogram or mean")
				}
			} else if res.ConfHist == nil {
				t.Errorf("no confidence histogram for %s", tc.wantKind)
			}
		})
	}
}

func describeShape(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.FormatInt(d, 10)
		if d < 0 {
			parts[i] = "N"
		}
	}
	return strings.Join(parts, "x")
}

// Models with symbolic height and width take their size from metadata or the caller, and a
// normalisation in the metadata replaces ImageNet's.
func TestEvalInputSizeAndNormalization(t *testing.T) {
	data := writeEvalDataset(t)
	dir := t.TempDir()
	symbolic := []int64{-1, 3, -1, -1}
	withSize := redModel(t, dir, "logits2", symbolic, map[string]string{MetaInputSize: "[24, 32]"})
	m := openModel(t, withSize, cpuModel())
	if m.Height != evalH || m.Width != evalW || m.SizeFrom != "metadata" {
		t.Fatalf("size %d×%d from %s, want 24×32 from metadata", m.Height, m.Width, m.SizeFrom)
	}
	res, err := EvaluateDataset(context.Background(), m, data, "test", EvalOptions{Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	checkCaseResults(t, res)

	bare := filepath.Join(t.TempDir(), "bare")
	os.MkdirAll(bare, 0o755)
	noMeta := redModel(t, bare, "logits2", symbolic, nil)
	if _, err := OpenSegModel(noMeta, cpuModel()); err == nil || !strings.Contains(err.Error(), "--size") {
		t.Errorf("symbolic size without metadata: error %v, want one asking for --size", err)
	}
	opts := cpuModel()
	opts.Height, opts.Width = evalH, evalW
	m2 := openModel(t, noMeta, opts)
	res, err = EvaluateDataset(context.Background(), m2, data, "test", EvalOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	checkCaseResults(t, res)

	static := redModel(t, t.TempDir(), "logits2", []int64{-1, 3, evalH, evalW}, nil)
	opts.Height, opts.Width = 48, 64
	if _, err := OpenSegModel(static, opts); err == nil || !strings.Contains(err.Error(), "64") {
		t.Errorf("size conflicting with the model's: error %v", err)
	}

	// Threshold R/255 > 0.95: the card colour (R = 230) is no longer card, so nothing is
	// predicted: TP = FP = 0, and only the empty image keeps IoU 1.
	strict := redModel(t, t.TempDir(), "logits2", []int64{-1, 3, evalH, evalW},
		map[string]string{MetaNormalization: `{"scale": 0.00392156862745098, "mean": [0.95, 0, 0], "std": [1, 1, 1]}`})
	m3 := openModel(t, strict, cpuModel())
	if m3.NormFrom != "metadata" {
		t.Fatalf("normalisation from %s, want metadata", m3.NormFrom)
	}
	res, err = EvaluateDataset(context.Background(), m3, data, "test", EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Confusion.Counts[0][1]+res.Confusion.Counts[1][1] != 0 {
		t.Errorf("with mean 0.95 nothing should be card, got %v", res.Confusion.Counts)
	}
	if want := (0 + 1 + 0 + 1 + 0) / 5.0; math.Abs(res.PerImageIoUMean-want) > 1e-12 {
		t.Errorf("per-image IoU mean %v, want %v (only the images without a card score 1)", res.PerImageIoUMean, want)
	}

	bad := redModel(t, t.TempDir(), "logits2", []int64{-1, 3, evalH, evalW},
		map[string]string{MetaNormalization: `{"scale": 1, "mean": [0, 0, 0], "std": [1, 0, 1]}`})
	if _, err := OpenSegModel(bad, cpuModel()); err == nil || !strings.Contains(err.Error(), "std[1]") {
		t.Errorf("zero std: error %v", err)
	}
}

// The --json object has the keys the issue names, pooled values under card and background.
func TestEvalJSONKeys(t *testing.T) {
	data := writeEvalDataset(t)
	m := openModel(t, redModel(t, t.TempDir(), "logits2", []int64{-1, 3, evalH, evalW}, nil), cpuModel())
	res, err := EvaluateDataset(context.Background(), m, data, "test", EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"card", "background", "pixel_accuracy", "mean_iou", "images", "per_image_iou_mean", "confusion", "per_image_mean"} {
		if _, ok := obj[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
	var card map[string]float64
	if err := json.Unmarshal(obj["card"], &card); err != nil {
		t.Fatal(err)
	}
	tp, fp, fn := float64(pooledTP), float64(pooledFP), float64(pooledFN)
	want := map[string]float64{"iou": tp / (tp + fp + fn), "dice": 2 * tp / (2*tp + fp + fn), "precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2*tp + fp + fn)}
	for k, v := range want {
		if math.Abs(card[k]-v) > 1e-12 {
			t.Errorf("card.%s = %v, want %v", k, card[k], v)
		}
	}
	var images int
	json.Unmarshal(obj["images"], &images)
	if images != len(evalCases) {
		t.Errorf("images = %d, want %d", images, len(evalCases))
	}
}

// Bad models, bad data and bad requests fail with an error that names the problem.
func TestEvalErrors(t *testing.T) {
	dir := t.TempDir()
	x := []int64{-1, 3, evalH, evalW}

	b := newONNX() // channels last
	in := b.input("image", tFloat, -1, evalH, evalW, 3)
	b.node("Identity", "logits", []string{b.redLogits(b.nodeInts("Transpose", []string{in}, "perm", []int64{0, 3, 1, 2}))}, nil)
	b.output("logits", tFloat, -1, 2, evalH, evalW)
	nhwc := b.write(t, dir, "nhwc")

	b = newONNX() // 21 classes
	in = b.input("image", tFloat, x...)
	r := b.red(in)
	rs := make([]string, 21)
	for i := range rs {
		rs[i] = r
	}
	b.node("Concat", "out", rs, map[string]int64{"axis": 1})
	b.output("out", tFloat, -1, 21, evalH, evalW)
	voc := b.write(t, dir, "voc")

	b = newONNX() // two inputs
	in = b.input("image", tFloat, x...)
	in2 := b.input("depth", tFloat, x...)
	b.node("Identity", "logits", []string{b.redLogits(b.node("Add", "", []string{in, in2}, nil))}, nil)
	b.output("logits", tFloat, -1, 2, evalH, evalW)
	twoIn := b.write(t, dir, "two_inputs")

	b = newONNX() // uint8 input
	in = b.input("image", tUint8, x...)
	b.node("Identity", "logits", []string{b.redLogits(b.node("Cast", "", []string{in}, map[string]int64{"to": int64(tFloat)}))}, nil)
	b.output("logits", tFloat, -1, 2, evalH, evalW)
	u8 := b.write(t, dir, "uint8")

	b = newONNX() // rank-5 output
	in = b.input("image", tFloat, x...)
	b.node("Unsqueeze", "logits", []string{b.redLogits(in), b.ints(0)}, nil)
	b.output("logits", tFloat, 1, -1, 2, evalH, evalW)
	rank5 := b.write(t, dir, "rank5")

	b = newONNX() // labels that are not 0/1
	in = b.input("image", tFloat, x...)
	lab := b.node("ArgMax", "", []string{b.redLogits(in)}, map[string]int64{"axis": 1, "keepdims": 0})
	b.node("Add", "labels", []string{lab, b.ints(1)}, nil)
	b.output("labels", tInt64, -1, evalH, evalW)
	badLabels := b.write(t, dir, "bad_labels")

	garbage := filepath.Join(dir, "garbage.onnx")
	os.WriteFile(garbage, []byte("this is not an ONNX model"), 0o644)

	logits := redModel(t, dir, "logits2", x, nil)
	openCases := []struct {
		name, path string
		opts       ModelOptions
		want       []string
	}{
		{"channels last", nhwc, cpuModel(), []string{"nhwc.onnx", "channels-last", "[N,3,H,W]"}},
		{"21 classes", voc, cpuModel(), []string{"voc.onnx", "21-class", "2-class card task"}},
		{"two inputs", twoIn, cpuModel(), []string{"2 inputs", "image", "depth"}},
		{"uint8 input", u8, cpuModel(), []string{"uint8", "float32"}},
		{"rank 5 output", rank5, cpuModel(), []string{"rank 5", "[N,2,H,W]"}},
		{"not ONNX", garbage, cpuModel(), []string{"garbage.onnx"}},
		{"missing file", filepath.Join(dir, "nope.onnx"), cpuModel(), []string{"nope.onnx"}},
		{"labels on floats", logits, ModelOptions{Session: cpuModel().Session, Kind: OutputLabels}, []string{"not integer labels"}},
		{"unknown output name", logits, ModelOptions{Session: cpuModel().Session, OutputName: "mask"}, []string{`"mask"`, "logits"}},
	}
	for _, tc := range openCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenSegModel(tc.path, tc.opts)
			if err == nil {
				m.Close()
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	good := writeEvalDataset(t)
	missingMask := writeEvalDataset(t)
	os.Remove(filepath.Join(missingMask, "test", "mask", "c_allcard.png"))
	corrupt := writeEvalDataset(t)
	os.WriteFile(filepath.Join(corrupt, "test", "image", "b_empty.png"), []byte("\x89PNG\r\n\x1a\nbroken"), 0o644)
	corruptMask := writeEvalDataset(t)
	os.WriteFile(filepath.Join(corruptMask, "test", "mask", "d_miss.png"), []byte("GIF89a"), 0o644)
	strayMask := writeEvalDataset(t)
	writePNGFile(t, filepath.Join(strayMask, "test", "mask", "z_orphan.png"), evalMask(8, 8, evalRect{}))

	runCases := []struct {
		name, model, data, split string
		opts                     ModelOptions
		eval                     EvalOptions
		want                     []string
	}{
		{"missing mask", logits, missingMask, "test", cpuModel(), EvalOptions{}, []string{"c_allcard.png", "no mask named c_allcard.png"}},
		{"mask without image", logits, strayMask, "test", cpuModel(), EvalOptions{}, []string{"z_orphan.png", "no image named"}},
		{"corrupt image", logits, corrupt, "test", cpuModel(), EvalOptions{}, []string{filepath.Join(corrupt, "test", "image", "b_empty.png"), "truncated"}},
		{"corrupt mask", logits, corruptMask, "test", cpuModel(), EvalOptions{}, []string{filepath.Join(corruptMask, "test", "mask", "d_miss.png"), "not a JPEG or PNG"}},
		{"missing split", logits, good, "valid", cpuModel(), EvalOptions{}, []string{"valid", "missing"}},
		{"missing folder", logits, filepath.Join(dir, "nodata"), "test", cpuModel(), EvalOptions{}, []string{"nodata"}},
		{"pictures without --out", logits, good, "test", cpuModel(), EvalOptions{AnalyzePredictions: true}, []string{"--analyze-predictions", "--out"}},
		{"logits read as probabilities", logits, good, "test", ModelOptions{Session: cpuModel().Session, Kind: OutputProbabilities}, EvalOptions{}, []string{"outside [0,1]", "--output logits"}},
		{"labels not 0/1", badLabels, good, "test", cpuModel(), EvalOptions{}, []string{"label 2", "0 (background) or 1 (card)"}},
	}
	for _, tc := range runCases {
		t.Run(tc.name, func(t *testing.T) {
			m := openModel(t, tc.model, tc.opts)
			_, err := EvaluateDataset(context.Background(), m, tc.data, tc.split, tc.eval)
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

// The pictures, plots, metrics.json and report.html land in --out, the report links only to
// files that exist, and the failures are the worst images in order.
func TestEvalReportFiles(t *testing.T) {
	data := writeEvalDataset(t)
	out := filepath.Join(t.TempDir(), "eval")
	m := openModel(t, redModel(t, t.TempDir(), "softmax2", []int64{-1, 3, evalH, evalW}, nil), cpuModel())
	res, err := EvaluateDataset(context.Background(), m, data, "test", EvalOptions{
		Batch: 2, Out: out, AnalyzePredictions: true, FindFailures: 2, SavePlots: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Worst) != 2 || res.Worst[0].Name != "d_miss" || res.Worst[1].Name != "a_partial" {
		t.Fatalf("worst = %+v, want d_miss (IoU 0) then a_partial (0.6)", names(res.Worst))
	}
	html, err := os.ReadFile(filepath.Join(out, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	srcs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(string(html), -1)
	seen := map[string]bool{}
	for _, s := range srcs {
		rel := s[1]
		if strings.Contains(rel, "://") || strings.HasPrefix(rel, "/") {
			t.Errorf("report refers to %q, which is not a relative file (the report must open offline)", rel)
			continue
		}
		seen[rel] = true
		b, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("report refers to %s: %v", rel, err)
			continue
		}
		if strings.HasSuffix(rel, ".png") {
			if _, err := png.Decode(bytes.NewReader(b)); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		}
	}
	var want []string
	for _, p := range []string{PlotConfusion, PlotIoU, PlotConfidence} {
		want = append(want, "plots/"+p+".png")
	}
	for _, r := range res.PerImage {
		want = append(want, r.Panel, r.ConfidenceMap)
	}
	for _, w := range res.Worst {
		want = append(want, w.FailurePanel)
	}
	want = append(want, MetricsFile)
	for _, w := range want {
		if w == "" || !seen[w] {
			t.Errorf("report does not show %q", w)
		}
	}
	// A panel has 5 pictures side by side at the mask's size (4 px apart).
	f, _ := os.Open(filepath.Join(out, res.PerImage[0].Panel))
	cfg, err := png.DecodeConfig(f)
	f.Close()
	if err != nil || cfg.Width != 5*32+4*4 || cfg.Height != 24 {
		t.Errorf("panel %s is %d×%d (%v), want %d×24", res.PerImage[0].Panel, cfg.Width, cfg.Height, err, 5*32+16)
	}
	var mf struct {
		metrics.Summary
		PerImage []ImageResult `json:"per_image"`
	}
	b, err := os.ReadFile(filepath.Join(out, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &mf); err != nil {
		t.Fatal(err)
	}
	if len(mf.PerImage) != len(evalCases) || mf.Images != len(evalCases) || math.Abs(mf.PerImageIoUMean-perImageIoUMean) > 1e-12 {
		t.Errorf("metrics.json: %d per-image entries, images %d, per-image IoU mean %v", len(mf.PerImage), mf.Images, mf.PerImageIoUMean)
	}
}

func names(rs []ImageResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out
}

// Failures kept during the run match metrics.PerImage.Worst, ties in evaluation order.
func TestEvalFailuresTies(t *testing.T) {
	dir := t.TempDir()
	// Five images with IoU 0, 1, 0, 1, 0 (miss, empty, ...): the worst 2 are the first two misses.
	pattern := []string{"d_miss", "b_empty", "d_miss", "b_empty", "d_miss"}
	for i, p := range pattern {
		var c evalCase
		for _, x := range evalCases {
			if x.name == p {
				c = x
			}
		}
		name := string(rune('a'+i)) + "_" + p
		writePNGFile(t, filepath.Join(dir, "test", "image", name+".png"), evalScene(c.iw, c.ih, c.card))
		writePNGFile(t, filepath.Join(dir, "test", "mask", name+".png"), evalMask(c.mw, c.mh, c.truth))
	}
	m := openModel(t, redModel(t, t.TempDir(), "logits2", []int64{-1, 3, evalH, evalW}, nil), cpuModel())
	res, err := EvaluateDataset(context.Background(), m, dir, "test", EvalOptions{Out: t.TempDir(), FindFailures: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := names(res.Worst)
	if len(got) != 2 || got[0] != "a_d_miss" || got[1] != "c_d_miss" {
		t.Errorf("worst = %v, want [a_d_miss c_d_miss]", got)
	}
}

// resizeBilinear and resizeNearest match PyTorch's F.interpolate (align_corners=False) on
// x[i] = i^1.5; the expected values were printed by torch 1.13.
func TestResizeMatchesTorch(t *testing.T) {
	cases := []struct {
		sh, sw, dh, dw int
		bilinear       []float32
		nearest        []int // source index^(1/1.5), i.e. the source element's index
	}{
		{2, 2, 4, 4,
			[]float32{0, 0.25, 0.75, 1, 0.707107, 1.04259, 1.713555, 2.049038, 2.12132, 2.627769, 3.640666, 4.147114, 2.828427, 3.420358, 4.604221, 5.196152},
			[]int{0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3}},
		{2, 3, 5, 7,
			[]float32{0, 0.142857, 0.571429, 1, 1.783612, 2.567223, 2.828427, 0.519615, 0.688242, 1.194121, 1.7, 2.541551, 3.383102, 3.663618, 2.598076, 2.86978, 3.68489, 4.5, 5.573308, 6.646615, 7.004384, 4.676537, 5.051318, 6.175659, 7.3, 8.605063, 9.910128, 10.345149, 5.196152, 5.596702, 6.798351, 8, 9.363003, 10.726006, 11.18034},
			[]int{0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 3, 3, 3, 4, 4, 5, 5}},
		{4, 6, 2, 3,
			[]float32{8.554299, 14.412999, 21.821497, 61.906998, 74.038689, 86.896515},
			[]int{0, 2, 4, 12, 14, 16}},
		{3, 5, 4, 3,
			[]float32{0.333333, 2.828427, 7.065384, 7.845337, 12.635822, 18.613564, 20.18639, 27.163618, 34.918865, 33.242809, 41.569218, 50.546188},
			[]int{0, 1, 3, 0, 1, 3, 5, 6, 8, 10, 11, 13}},
	}
	for _, c := range cases {
		src := make([]float32, c.sh*c.sw)
		idx := make([]int, c.sh*c.sw)
		for i := range src {
			src[i] = float32(math.Pow(float64(i), 1.5))
			idx[i] = i
		}
		got := make([]float32, c.dh*c.dw)
		resizeBilinear(got, c.dw, c.dh, src, c.sw, c.sh)
		for i := range got {
			if d := math.Abs(float64(got[i] - c.bilinear[i])); d > 2e-5*max(1, math.Abs(float64(c.bilinear[i]))) {
				t.Errorf("%d×%d→%d×%d bilinear[%d] = %v, torch %v", c.sh, c.sw, c.dh, c.dw, i, got[i], c.bilinear[i])
			}
		}
		gotIdx := make([]int, c.dh*c.dw)
		resizeNearest(gotIdx, c.dw, c.dh, idx, c.sw, c.sh)
		for i := range gotIdx {
			if gotIdx[i] != c.nearest[i] {
				t.Errorf("%d×%d→%d×%d nearest[%d] = %d, torch %d", c.sh, c.sw, c.dh, c.dw, i, gotIdx[i], c.nearest[i])
			}
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		h, w int
		ok   bool
	}{
		{"480x640", 480, 640, true}, {"480×640", 480, 640, true}, {" 24 , 32 ", 24, 32, true}, {"", 0, 0, true},
		{"480", 0, 0, false}, {"0x640", 0, 0, false}, {"axb", 0, 0, false}, {"1x2x3", 0, 0, false},
	}
	for _, c := range cases {
		h, w, err := ParseSize(c.in)
		if (err == nil) != c.ok || h != c.h || w != c.w {
			t.Errorf("ParseSize(%q) = %d, %d, %v", c.in, h, w, err)
		}
	}
}
