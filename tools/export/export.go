// Package export turns a training checkpoint into what an app ships: the FP32 ONNX model
// (batch norm folded, input image float32 [N,3,H,W], output logits [N,2,H,W], metadata saying
// how to feed it), optional FP16 and static INT8 (QDQ) versions, variants that take uint8 RGB
// pixels and return a uint8 mask and the card probability, the weights as safetensors by
// torchvision names, and a deployment package (README with I/O, preprocessing, ORT calls on
// Android/iOS/desktop, sizes, latency and parity numbers, plus a Go example program). Every
// model is verified against the checkpoint on sample images before the export succeeds.
//
// It may import graphs/..., runtime, augment, metrics, pipeline and the standard library.
package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/metrics"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Formats.
const (
	FormatONNX        = "onnx"
	FormatSafetensors = "safetensors"
)

// Precisions.
const (
	FP32 = "fp32"
	FP16 = "fp16"
	INT8 = "int8"
)

// ReportName is the report written next to the models.
const ReportName = "export.json"

// Options say what to export.
type Options struct {
	Out  string // output folder (created)
	Name string // file name stem; default "cardseg"

	Formats []string // onnx and/or safetensors; default onnx

	FP16   bool // also a float16 model
	FP16IO bool // the float16 model takes and returns float16 (default float32 I/O)
	Int8   bool // also a static INT8 (QDQ) model

	Calib       string  // calibration images: a dataset (train split first) or a folder of images
	CalibImages int     // how many calibration images (evenly spread over the folder); default 64
	CalibMethod string  // minmax (default) or percentile
	Percentile  float64 // for percentile calibration; default 99.999
	// Int8WeightBits is the precision of the int8 weights: 7 (default; exact on every CPU) or
	// 8 (for ARM and VNNI CPUs only: older x86 saturates, see quantize.go).
	Int8WeightBits int

	DynamicBatch    bool // symbolic batch dimension instead of 1
	Opset           int  // default 18 (DefaultOpset)
	EmbedPreprocess bool // also the uint8 RGB → mask variants
	CreatePackage   bool // README.md and the example program besides the models

	// Data is the dataset whose test split scores the models and whose images the parity
	// checks run on; default: Calib, then the checkpoint's training data when it exists.
	Data         string
	VerifyImages int // sample images for the parity checks; default 8
	// MaxInt8IoUDrop fails the export when the INT8 model's test-split card IoU is more than
	// this below FP32's; default 0.01.
	MaxInt8IoUDrop float64

	// LatencyRuns times each model this many times at batch 1 (after 3 warm-up runs); 0: 20
	// with CreatePackage, else no timing; negative: no timing.
	LatencyRuns int

	Session     runtime.SessionOptions
	ToolVersion string
	Logf        func(format string, args ...any)
}

func (o *Options) setDefaults() {
	if o.Name == "" {
		o.Name = "cardseg"
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{FormatONNX}
	}
	if o.CalibImages == 0 {
		o.CalibImages = 64
	}
	if o.CalibMethod == "" {
		o.CalibMethod = CalibMinMax
	}
	if o.Percentile == 0 {
		o.Percentile = 99.999
	}
	if o.Opset == 0 {
		o.Opset = DefaultOpset
	}
	if o.Int8WeightBits == 0 {
		o.Int8WeightBits = 7
	}
	if o.VerifyImages == 0 {
		o.VerifyImages = 8
	}
	if o.MaxInt8IoUDrop == 0 {
		o.MaxInt8IoUDrop = DefaultMaxInt8IoUDrop
	}
	if o.LatencyRuns == 0 && o.CreatePackage {
		o.LatencyRuns = 20
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ToolVersion == "" {
		o.ToolVersion = "dev"
	}
}

func (o *Options) has(format string) bool {
	for _, f := range o.Formats {
		if f == format {
			return true
		}
	}
	return false
}

// Validate reports impossible combinations before any work is done.
func (o *Options) Validate() error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if o.Out == "" {
		bad("no output folder (--out)")
	}
	if strings.ContainsAny(o.Name, `/\`) || strings.HasPrefix(o.Name, ".") {
		bad("name %q: want a plain file name stem", o.Name)
	}
	for _, f := range o.Formats {
		if f != FormatONNX && f != FormatSafetensors {
			bad("format %q: want %s or %s", f, FormatONNX, FormatSafetensors)
		}
	}
	if !o.has(FormatONNX) {
		var onnxOnly []string
		for flag, on := range map[string]bool{"--fp16": o.FP16, "--int8": o.Int8, "--embed-preprocess": o.EmbedPreprocess,
			"--create-package": o.CreatePackage, "--dynamic-batch": o.DynamicBatch} {
			if on {
				onnxOnly = append(onnxOnly, flag)
			}
		}
		if len(onnxOnly) > 0 {
			sort.Strings(onnxOnly)
			bad("%s apply to ONNX models; add --format onnx", strings.Join(onnxOnly, ", "))
		}
	}
	if o.FP16IO && !o.FP16 {
		bad("--fp16-io needs --fp16")
	}
	if o.Opset < MinOpset || o.Opset > MaxOpset {
		bad("opset %d: export writes opsets %d to %d", o.Opset, MinOpset, MaxOpset)
	}
	if o.CalibImages < 1 {
		bad("--calib-images %d: want at least 1", o.CalibImages)
	}
	if o.CalibMethod != CalibMinMax && o.CalibMethod != CalibPercentile {
		bad("calibration method %q: want %s or %s", o.CalibMethod, CalibMinMax, CalibPercentile)
	}
	if !(o.Percentile > 50 && o.Percentile <= 100) {
		bad("percentile %g: want (50, 100]", o.Percentile)
	}
	if o.Int8WeightBits != 7 && o.Int8WeightBits != 8 {
		bad("--int8-weight-bits %d: want 7 or 8", o.Int8WeightBits)
	}
	if o.VerifyImages < 1 {
		bad("--verify-images %d: want at least 1", o.VerifyImages)
	}
	if !(o.MaxInt8IoUDrop > 0) {
		bad("--max-int8-iou-drop %g: want > 0", o.MaxInt8IoUDrop)
	}
	if len(errs) > 0 {
		return errors.New("export: " + strings.Join(errs, "; "))
	}
	return nil
}

// fileName is the name of a model file: NAME[.fp16|.int8][.rgb].onnx.
func (o *Options) fileName(precision string, rgb bool) string {
	n := o.Name
	if precision != FP32 {
		n += "." + precision
	}
	if rgb {
		n += ".rgb"
	}
	return n + ".onnx"
}

// VerificationError is returned when an export was written but failed a check; the report
// (also in export.json) says which.
type VerificationError struct {
	Report *Report
	Failed []CheckResult
}

func (e *VerificationError) Error() string {
	parts := make([]string, len(e.Failed))
	for i, c := range e.Failed {
		parts[i] = c.Detail
	}
	return fmt.Sprintf("export verification failed (files kept in %s for inspection; see %s): %s", e.Report.Out,
		filepath.Join(e.Report.Out, ReportName), strings.Join(parts, "; "))
}

type exporter struct {
	ctx  context.Context
	src  *Source
	o    Options
	rep  *Report
	h, w int

	samples   []sample
	refLogits [][]float32
	refMasks  [][]uint8
	written   map[string]bool
}

// Export writes everything o asks for into o.Out and verifies it. A model that fails its
// verification is still written (for inspection) and the error is a *VerificationError.
func Export(ctx context.Context, src *Source, o Options) (*Report, error) {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	sc := src.StepConfig()
	e := &exporter{ctx: ctx, src: src, o: o, h: sc.Height, w: sc.Width, written: map[string]bool{}}
	e.rep = &Report{
		Exporter:  "cardseg-ort " + o.ToolVersion,
		InputSize: [2]int{sc.Height, sc.Width},
		Batch:     "1",
		Opset:     o.Opset,
		Out:       o.Out,
		Package:   o.CreatePackage,
		Source: SourceReport{Path: src.Path, Kind: src.Kind, WidthMult: src.Config.WidthMult,
			Parameters: sc.Arch.TrainableCount()},
	}
	if o.DynamicBatch {
		e.rep.Batch = "dynamic"
	}
	if p := src.Progress; p != nil {
		e.rep.Source.Step, e.rep.Source.Epoch, e.rep.Source.BestIoU = p.Step, p.Epoch, p.BestIoU
		if p.LastMetrics != nil {
			e.rep.Source.ValIoU = p.LastMetrics.Val.IoU
		}
	}
	if o.has(FormatSafetensors) {
		if err := e.writeWeights(); err != nil {
			return nil, err
		}
	}
	if o.has(FormatONNX) {
		if err := e.exportONNX(); err != nil {
			return nil, err
		}
	}
	e.warnStale()
	if o.CreatePackage {
		if err := writePackage(e.rep, o); err != nil {
			return nil, err
		}
	}
	b, err := json.MarshalIndent(e.rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := pipeline.WriteFileAtomic(filepath.Join(o.Out, ReportName), append(b, '\n')); err != nil {
		return nil, err
	}
	if failed := e.rep.Failed(); len(failed) > 0 {
		return e.rep, &VerificationError{Report: e.rep, Failed: failed}
	}
	return e.rep, nil
}

func (e *exporter) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	e.rep.Warnings = append(e.rep.Warnings, msg)
	e.o.Logf("warning: %s", msg)
}

// write stores a file atomically and describes it.
func (e *exporter) write(name string, b []byte) (FileReport, error) {
	if err := pipeline.WriteFileAtomic(filepath.Join(e.o.Out, name), b); err != nil {
		return FileReport{}, fmt.Errorf("export: %w", err)
	}
	e.written[name] = true
	sum := sha256.Sum256(b)
	return FileReport{File: name, Bytes: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}, nil
}

// writeWeights writes the unfolded weights by torchvision name (what
// lraspp_mobilenet_v3_large(num_classes=2).load_state_dict(strict=True) takes), with the
// training configuration in the metadata so that export can read the file back, and checks
// that the file reads back to exactly the same tensors.
func (e *exporter) writeWeights() error {
	name := e.o.Name + ".safetensors"
	path := filepath.Join(e.o.Out, name)
	arch := e.src.StepConfig().Arch
	md := e.src.sourceMetadata()
	for k, v := range step.InferenceMetadata(e.src.StepConfig()) {
		md[k] = v
	}
	md[MetaExporter] = e.rep.Exporter
	if err := arch.SaveWeights(path, e.src.Weights, md); err != nil {
		return err
	}
	back, err := arch.LoadWeights(path)
	if err != nil {
		return fmt.Errorf("export: reading back %s: %w", path, err)
	}
	for k, v := range e.src.Weights.Tensors {
		got := back.Tensors[k]
		for i := range v {
			if math.Float32bits(v[i]) != math.Float32bits(got[i]) {
				return fmt.Errorf("export: %s reads back %s[%d] = %g, written %g", path, k, i, got[i], v[i])
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	e.written[name] = true
	sum := sha256.Sum256(b)
	e.rep.Weights = &FileReport{File: name, Bytes: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
	e.o.Logf("wrote %s (%d tensors, torchvision names)", path, len(e.src.Weights.Tensors))
	return nil
}

// datasetCandidates are the folders that may hold images, in order of preference.
func (e *exporter) datasetCandidates() []string {
	var out []string
	for _, d := range []string{e.o.Data, e.o.Calib} {
		if d != "" {
			out = append(out, d)
		}
	}
	if d := e.src.Config.Data; d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			out = append(out, d)
		}
	}
	return out
}

// loadSamples picks the parity-check images: the test split of the first dataset candidate
// (then val, train, or a plain folder), or synthetic pictures when there is none.
func (e *exporter) loadSamples() error {
	if e.o.Data != "" {
		if _, err := os.Stat(e.o.Data); err != nil {
			return fmt.Errorf("export: --data: %w", err)
		}
	}
	for _, dir := range e.datasetCandidates() {
		files, from, err := listImages(dir, "test", "val", "train")
		if err != nil {
			if dir == e.o.Data {
				return fmt.Errorf("export: --data: %w", err)
			}
			continue
		}
		files = spread(files, e.o.VerifyImages)
		imgs, err := loadImages(files, e.h, e.w)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		e.samples = imageSamples(imgs, e.h, e.w)
		e.rep.Samples = SampleReport{Dir: from, Count: len(files), Images: files}
		return nil
	}
	e.warn("no sample images (give --data DIR): parity measured on %d synthetic pictures, so the mask agreement numbers say little", e.o.VerifyImages)
	e.samples = syntheticPictures(e.o.VerifyImages, e.h, e.w)
	e.rep.Samples = SampleReport{Count: len(e.samples), Synthetic: true}
	return nil
}

// syntheticPictures are deterministic noisy pictures with a bright rectangle, at the network's
// size.
func syntheticPictures(n, h, w int) []sample {
	r := rand.New(rand.NewPCG(7, 11))
	imgs := make([]loadedImage, n)
	for i := range imgs {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		y0, x0 := r.IntN(h/2), r.IntN(w/2)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := uint8(40 + r.IntN(80))
				c := color.RGBA{v, v, v, 255}
				if y >= y0 && y < y0+h/3 && x >= x0 && x < x0+w/3 {
					c = color.RGBA{uint8(180 + r.IntN(60)), 170, 150, 255}
				}
				img.SetRGBA(x, y, c)
			}
		}
		imgs[i] = loadedImage{Path: fmt.Sprintf("synthetic-%d", i+1), Orig: img, Resized: img}
	}
	return imageSamples(imgs, h, w)
}

// buildFP32 builds the deployable FP32 network (graphs/step.Inference) and records every
// tensor's shape (for calibration outputs).
func (e *exporter) buildFP32() (*onnxpb.ModelProto, map[string][]int64, error) {
	g, err := step.Inference(e.src.StepConfig(), e.src.Weights)
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	shapes := map[string][]int64{}
	for _, in := range g.Inputs() {
		shapes[in.Name()] = in.Shape()
	}
	for _, n := range g.Nodes() {
		for _, v := range n.Outputs {
			shapes[v.Name()] = v.Shape()
		}
	}
	m, err := g.ToModel()
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	return m, shapes, nil
}

// finish gives a model its final opset, batch dimension and metadata.
func (e *exporter) finish(m *onnxpb.ModelProto, precision string, rgb bool, extra map[string]string) error {
	if !rgb {
		batch := int64(1)
		if e.o.DynamicBatch {
			batch = -1
		}
		setBatch(m.Graph, batch)
	}
	if err := setOpset(m, e.o.Opset); err != nil {
		return err
	}
	md := e.src.sourceMetadata()
	md[MetaPrecision] = precision
	md[MetaBatch] = e.rep.Batch
	md[MetaExporter] = e.rep.Exporter
	for k, v := range extra {
		md[k] = v
	}
	setMetadata(m, md)
	m.ProducerName = proto.String(graphs.Producer)
	m.ProducerVersion = proto.String(e.o.ToolVersion)
	what := map[string]string{FP32: "FP32", FP16: "FP16 (float16 weights and compute)", INT8: "INT8 (static QDQ quantisation)"}[precision]
	doc := fmt.Sprintf("LR-ASPP MobileNetV3-Large card segmentation (background=0, card=1), %s, input %dx%d", what, e.h, e.w)
	if rgb {
		doc += "; takes uint8 RGB pixels of any size and returns a uint8 mask and the card probability"
	}
	m.DocString = proto.String(doc)
	return nil
}

// variant is one exported network before its RGB wrapper.
type variant struct {
	precision string
	model     *onnxpb.ModelProto
	extra     map[string]string
	rep       ModelReport
	logits    [][]float32 // on the samples
}

func (e *exporter) exportONNX() error {
	if err := e.loadSamples(); err != nil {
		return err
	}
	ref, err := e.src.referenceModel()
	if err != nil {
		return err
	}
	rs, err := session("checkpoint "+e.src.Path, ref, e.o.Session)
	if err != nil {
		return err
	}
	e.refLogits, err = runLogits(rs, e.samples, e.h, e.w)
	rs.Close()
	if err != nil {
		return fmt.Errorf("export: reference run of %s: %w", e.src.Path, err)
	}
	for _, l := range e.refLogits {
		e.refMasks = append(e.refMasks, labels(margin(l)))
	}

	base, shapes, err := e.buildFP32()
	if err != nil {
		return err
	}
	variants := []*variant{{precision: FP32, model: cloneModel(base)}}
	if e.o.FP16 {
		m := cloneModel(base)
		st, err := toFloat16(m, !e.o.FP16IO)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		v := &variant{precision: FP16, model: m, rep: ModelReport{FP16: &st}}
		if e.o.FP16IO {
			v.extra = map[string]string{"cardseg.input_layout": "NCHW float16 RGB",
				"cardseg.output_layout": "NCHW float16 logits (softmax over axis 1 gives class probabilities)"}
		}
		variants = append(variants, v)
	}
	if e.o.Int8 {
		m := cloneModel(base)
		q, err := e.quantize(m, shapes)
		if err != nil {
			return err
		}
		j, _ := json.Marshal(q)
		variants = append(variants, &variant{precision: INT8, model: m, extra: map[string]string{MetaQuantization: string(j)}, rep: ModelReport{Quantization: q}})
	}
	for _, v := range variants {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		if err := e.exportVariant(v); err != nil {
			return err
		}
	}
	if err := e.scoreTestSplit(); err != nil {
		return err
	}
	if e.o.LatencyRuns > 0 {
		if err := e.measure(); err != nil {
			return err
		}
	}
	return nil
}

// exportVariant writes and verifies one network and, when asked, its RGB wrapper.
func (e *exporter) exportVariant(v *variant) error {
	core := v.model
	if err := e.finish(core, v.precision, false, v.extra); err != nil {
		return fmt.Errorf("export %s: %w", v.precision, err)
	}
	b, err := marshalModel(core)
	if err != nil {
		return err
	}
	name := e.o.fileName(v.precision, false)
	fr, err := e.write(name, b)
	if err != nil {
		return err
	}
	v.rep.FileReport, v.rep.Precision = fr, v.precision
	if err := e.verifyNetwork(v, b); err != nil {
		return err
	}
	e.o.Logf("wrote %s: %.1f MB, max |logit diff| %.2e vs the checkpoint, mask IoU %.4f", filepath.Join(e.o.Out, name),
		float64(fr.Bytes)/1e6, v.rep.Parity.MaxAbsDiff, v.rep.Parity.MaskIoU)
	e.rep.Models = append(e.rep.Models, v.rep)
	if !e.o.EmbedPreprocess {
		return nil
	}
	if e.o.Opset < 18 && v.precision == FP32 {
		e.warn("opset %d has no antialiased Resize: the RGB variants shrink large photos by plain bilinear sampling, which aliases; apps should shrink photos far larger than %dx%d first, or export with --opset 18 or later", e.o.Opset, e.h, e.w)
	}
	wrapped, err := wrapRGB(core, e.h, e.w, e.o.DynamicBatch, e.o.Opset)
	if err != nil {
		return err
	}
	if err := e.finish(wrapped, v.precision, true, nil); err != nil {
		return fmt.Errorf("export %s RGB variant: %w", v.precision, err)
	}
	wb, err := marshalModel(wrapped)
	if err != nil {
		return err
	}
	rname := e.o.fileName(v.precision, true)
	rfr, err := e.write(rname, wb)
	if err != nil {
		return err
	}
	rr := ModelReport{FileReport: rfr, Precision: v.precision, Preprocess: true}
	if err := e.verifyRGB(&rr, wb, v.logits); err != nil {
		return err
	}
	e.o.Logf("wrote %s: %.1f MB, mask IoU %.4f at the images' own size", filepath.Join(e.o.Out, rname), float64(rfr.Bytes)/1e6, rr.Parity.MaskIoU)
	e.rep.Models = append(e.rep.Models, rr)
	return nil
}

func ioStrings(infos []runtime.IOInfo) []string {
	out := make([]string, len(infos))
	for i, x := range infos {
		out[i] = x.String()
	}
	return out
}

// verifyNetwork runs an exported network on the samples and compares it with the checkpoint.
func (e *exporter) verifyNetwork(v *variant, b []byte) error {
	s, err := session(v.rep.File, b, e.o.Session)
	if err != nil {
		return err
	}
	defer s.Close()
	v.rep.Inputs, v.rep.Outputs = ioStrings(s.Inputs()), ioStrings(s.Outputs())
	v.logits, err = runLogits(s, e.samples, e.h, e.w)
	if err != nil {
		return fmt.Errorf("export: verify %s: %w", v.rep.File, err)
	}
	var diff, scale float64
	masks := make([][]uint8, len(v.logits))
	for i, l := range v.logits {
		d, sc := maxAbsDiff(l, e.refLogits[i])
		diff, scale = math.Max(diff, d), math.Max(scale, sc)
		masks[i] = labels(margin(l))
	}
	iou, agree, err := maskScores(masks, e.refMasks)
	if err != nil {
		return err
	}
	p := Parity{Reference: "checkpoint (FP32, batch norm unfolded) on the same inputs", Images: len(e.samples),
		MaxAbsDiff: diff, MaskIoU: iou, MaskAgreement: agree}
	if scale > 0 {
		p.MaxRelDiff = diff / scale
	}
	v.rep.Parity = p
	if v.precision == FP32 {
		v.rep.Checks = append(v.rep.Checks, CheckResult{Name: "fp32_max_abs_diff", Value: diff, Limit: FP32MaxAbsDiff, Passed: diff <= FP32MaxAbsDiff,
			Detail: fmt.Sprintf("%s: logits differ from the checkpoint's by up to %.3g (limit %g)", v.rep.File, diff, FP32MaxAbsDiff)})
	}
	return nil
}

// verifyRGB checks an RGB variant two ways: fed each sample already at the network's size,
// its card probability must equal the sigmoid of its network's logit margin (the wrapper adds
// nothing but float rounding); fed the image at its own size, its mask is compared with the
// checkpoint's mask resized to that size.
func (e *exporter) verifyRGB(r *ModelReport, b []byte, netLogits [][]float32) error {
	s, err := session(r.File, b, e.o.Session)
	if err != nil {
		return err
	}
	defer s.Close()
	r.Inputs, r.Outputs = ioStrings(s.Inputs()), ioStrings(s.Outputs())
	var diff float64
	var got, ref [][]uint8
	for i, smp := range e.samples {
		out, err := runRGB(s, smp.atSize, e.h, e.w)
		if err != nil {
			return fmt.Errorf("export: verify %s on %s: %w", r.File, smp.name, err)
		}
		for k, v := range margin(netLogits[i]) {
			diff = math.Max(diff, math.Abs(float64(out.prob[k]-sigmoid(v))))
		}
		full, err := runRGB(s, smp.orig, smp.oh, smp.ow)
		if err != nil {
			return fmt.Errorf("export: verify %s on %s at %dx%d: %w", r.File, smp.name, smp.ow, smp.oh, err)
		}
		for _, o := range []rgbResult{out, full} {
			if err := o.consistent(); err != nil {
				return fmt.Errorf("export: verify %s on %s: %w", r.File, smp.name, err)
			}
		}
		g := make([]uint8, len(full.mask))
		for k, v := range full.mask {
			g[k] = v / 255
		}
		got = append(got, g)
		ref = append(ref, labels(resizeBilinear(margin(e.refLogits[i]), e.h, e.w, smp.oh, smp.ow)))
	}
	iou, agree, err := maskScores(got, ref)
	if err != nil {
		return err
	}
	r.Parity = Parity{Reference: "checkpoint mask (Go preprocessing, logit margin resized to the image)", Images: len(e.samples),
		MaxAbsDiff: diff, MaskIoU: iou, MaskAgreement: agree, AtInputSize: true}
	if r.Precision == FP32 {
		r.Checks = append(r.Checks, CheckResult{Name: "rgb_probability_diff", Value: diff, Limit: RGBMaxProbDiff, Passed: diff <= RGBMaxProbDiff,
			Detail: fmt.Sprintf("%s: card probability differs from its network's by up to %.3g (limit %g)", r.File, diff, RGBMaxProbDiff)})
	}
	return nil
}

// testSplit finds a labelled test split among the dataset candidates.
func (e *exporter) testSplit() (string, bool) {
	for _, dir := range e.datasetCandidates() {
		img, mask := filepath.Join(dir, "test", "image"), filepath.Join(dir, "test", "mask")
		if st, err := os.Stat(img); err == nil && st.IsDir() {
			if st, err := os.Stat(mask); err == nil && st.IsDir() {
				return dir, true
			}
		}
	}
	return "", false
}

// scoreTestSplit evaluates each network on the test split as `cardseg-ort eval` does and
// checks the INT8 model's drop.
func (e *exporter) scoreTestSplit() error {
	dir, ok := e.testSplit()
	if !ok {
		if e.o.Int8 {
			e.warn("no labelled test split (DIR/test/image and DIR/test/mask; give --data DIR): the INT8 card-IoU drop was not measured")
		}
		return nil
	}
	var fp32 float64
	var pairs []pipeline.ImageResult
	for i := range e.rep.Models {
		m := &e.rep.Models[i]
		if m.Preprocess {
			continue
		}
		sm, err := pipeline.OpenSegModel(filepath.Join(e.o.Out, m.File), pipeline.ModelOptions{Session: e.o.Session})
		if err != nil {
			return fmt.Errorf("export: score %s: %w", m.File, err)
		}
		res, err := pipeline.EvaluateDataset(e.ctx, sm, dir, "test", pipeline.EvalOptions{Batch: 1})
		sm.Close()
		if err != nil {
			return fmt.Errorf("export: score %s on %s: %w", m.File, dir, err)
		}
		iou := res.Card.IoU
		m.TestIoU = &iou
		e.rep.TestSplit = &TestSplitReport{Dir: dir, Split: "test", Images: res.Images}
		if m.Precision == FP32 {
			fp32, pairs = iou, res.PerImage
			continue
		}
		drop := fp32 - iou
		m.TestIoUDrop = &drop
		e.o.Logf("%s: test card IoU %.4f (FP32 %.4f, drop %.4f) on %d images", m.File, iou, fp32, drop, res.Images)
		if m.Precision == INT8 {
			m.Checks = append(m.Checks, CheckResult{Name: "int8_test_iou_drop", Value: drop, Limit: e.o.MaxInt8IoUDrop, Passed: drop <= e.o.MaxInt8IoUDrop,
				Detail: fmt.Sprintf("%s: test-split card IoU %.4f is %.4f below FP32's %.4f (limit %g; try --calib-method percentile or more --calib-images)",
					m.File, iou, drop, fp32, e.o.MaxInt8IoUDrop)})
		}
	}
	for i := range e.rep.Models {
		m := &e.rep.Models[i]
		if !m.Preprocess {
			continue
		}
		iou, err := e.scoreRGB(m.File, pairs)
		if err != nil {
			return err
		}
		drop := fp32 - iou
		m.TestIoU, m.TestIoUDrop = &iou, &drop
		e.o.Logf("%s: test card IoU %.4f at the photos' own size (FP32 network %.4f)", m.File, iou, fp32)
	}
	return nil
}

// scoreRGB scores an RGB variant on the test pairs as an app gets it: each photo fed at its
// own size, the mask compared with the truth (at the truth's resolution), pooled.
func (e *exporter) scoreRGB(file string, pairs []pipeline.ImageResult) (float64, error) {
	b, err := os.ReadFile(filepath.Join(e.o.Out, file))
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	s, err := session(file, b, e.o.Session)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	c := metrics.NewConfusion(2)
	for _, p := range pairs {
		if err := e.ctx.Err(); err != nil {
			return 0, err
		}
		img, _, err := augment.ReadImage(p.Image)
		if err != nil {
			return 0, fmt.Errorf("export: score %s: %w", file, err)
		}
		truth, _, err := augment.ReadMask(p.Mask)
		if err != nil {
			return 0, fmt.Errorf("export: score %s: %w", file, err)
		}
		w, h := img.Rect.Dx(), img.Rect.Dy()
		out, err := runRGB(s, hwc(img), h, w)
		if err != nil {
			return 0, fmt.Errorf("export: score %s on %s: %w", file, p.Image, err)
		}
		pred := make([]uint8, truth.Width*truth.Height)
		for y := 0; y < truth.Height; y++ {
			sy := min(h-1, y*h/truth.Height)
			for x := 0; x < truth.Width; x++ {
				pred[y*truth.Width+x] = out.mask[sy*w+min(w-1, x*w/truth.Width)] / 255
			}
		}
		if err := c.Add(truth.Pix[:len(pred)], pred); err != nil {
			return 0, fmt.Errorf("export: score %s on %s: %w", file, p.Image, err)
		}
	}
	return c.IoU(metrics.Card), nil
}

// measure times every model at batch 1.
func (e *exporter) measure() error {
	e.rep.Machine = machine(e.o.Session)
	for i := range e.rep.Models {
		m := &e.rep.Models[i]
		b, err := os.ReadFile(filepath.Join(e.o.Out, m.File))
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		s, err := session(m.File, b, e.o.Session)
		if err != nil {
			return err
		}
		in := s.Inputs()[0]
		var t *runtime.Tensor
		switch {
		case m.Preprocess:
			shape := []int64{int64(e.h), int64(e.w), 3}
			if len(in.Shape) == 4 {
				shape = append([]int64{1}, shape...)
			}
			t, err = runtime.New(shape, e.samples[0].atSize)
		case in.DType == runtime.Float16:
			t, err = runtime.New([]int64{1, 3, int64(e.h), int64(e.w)}, runtime.ToFloat16(e.samples[0].input))
		default:
			t, err = runtime.New([]int64{1, 3, int64(e.h), int64(e.w)}, e.samples[0].input)
		}
		if err == nil {
			m.Latency, err = measureLatency(s, map[string]*runtime.Tensor{in.Name: t}, 3, e.o.LatencyRuns)
		}
		s.Close()
		if err != nil {
			return fmt.Errorf("export: timing %s: %w", m.File, err)
		}
		e.o.Logf("%s: %.1f ms median at batch 1 (%d runs)", m.File, m.Latency.MedianMS, m.Latency.Runs)
	}
	return nil
}

// warnStale names model files of this name stem left in the folder by an earlier export.
func (e *exporter) warnStale() {
	var stale []string
	for _, p := range []string{FP32, FP16, INT8} {
		for _, rgb := range []bool{false, true} {
			n := e.o.fileName(p, rgb)
			if e.written[n] {
				continue
			}
			if _, err := os.Stat(filepath.Join(e.o.Out, n)); err == nil {
				stale = append(stale, n)
			}
		}
	}
	if n := e.o.Name + ".safetensors"; !e.written[n] {
		if _, err := os.Stat(filepath.Join(e.o.Out, n)); err == nil {
			stale = append(stale, n)
		}
	}
	if len(stale) > 0 {
		e.warn("%s in %s come from an earlier export, not this one", strings.Join(stale, ", "), e.o.Out)
	}
}
