package export

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"text/template"

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// exampleMain is the Go example program copied into every package.
//
//go:embed example/main.go
var exampleMain []byte

// The example's module: onnxruntime_go at the version cardseg-ort builds with, and its
// checksums (from go.sum; a test keeps them equal), so `go run .` works offline from a module
// cache and verifies what it downloads otherwise.
const (
	exampleORTGoVersion = "v1.27.0"
	exampleGoSum        = "github.com/yalue/onnxruntime_go v1.27.0 h1:c1YSgDNtpf0WGtxj3YeRIb8VC5LmM1J+Ve3uHdteC1U=\n" +
		"github.com/yalue/onnxruntime_go v1.27.0/go.mod h1:b4X26A8pekNb1ACJ58wAXgNKeUCGEAQ9dmACut9Sm/4=\n"
	exampleDir = "example"
)

func exampleGoMod() string {
	return "module cardseg-example\n\ngo 1.21\n\nrequire github.com/yalue/onnxruntime_go " + exampleORTGoVersion + "\n"
}

// writePackage adds README.md and the example program to an export folder.
func writePackage(r *Report, o Options) error {
	dir := filepath.Join(o.Out, exampleDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("package: %w", err)
	}
	for name, data := range map[string][]byte{
		"main.go": exampleMain,
		"go.mod":  []byte(exampleGoMod()),
		"go.sum":  []byte(exampleGoSum),
	} {
		if err := pipeline.WriteFileAtomic(filepath.Join(dir, name), data); err != nil {
			return fmt.Errorf("package: %w", err)
		}
	}
	readme, err := renderReadme(r, o)
	if err != nil {
		return err
	}
	if err := pipeline.WriteFileAtomic(filepath.Join(o.Out, "README.md"), readme); err != nil {
		return fmt.Errorf("package: %w", err)
	}
	o.Logf("wrote %s and %s", filepath.Join(o.Out, "README.md"), dir)
	return nil
}

// machine describes where latency is measured.
func machine(opts runtime.SessionOptions) *MachineReport {
	m := &MachineReport{CPU: "unknown CPU", Cores: goruntime.NumCPU(), OS: goruntime.GOOS + "/" + goruntime.GOARCH,
		ORTVersion: runtime.Version(), Provider: "CPU", Threads: opts.IntraOpThreads}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if opts.Provider == runtime.ProviderCUDA {
		m.Provider = "CUDA"
	}
	return m
}

type readmeData struct {
	*Report
	Name      string
	H, W      int
	Mean, Std [3]float32
	Classes   []string
	Plain     []ModelReport
	RGB       []ModelReport
	Main      string // the file the examples use
	MainRGB   bool
	Dynamic   bool
	// ORTVersion is the ONNX Runtime the models were verified with.
	ORTVersion string
}

func renderReadme(r *Report, o Options) ([]byte, error) {
	d := readmeData{Report: r, Name: o.Name, H: r.InputSize[0], W: r.InputSize[1], Mean: step.Mean, Std: step.Std,
		Classes: step.ClassNames, Dynamic: o.DynamicBatch, ORTVersion: runtime.Version()}
	for _, m := range r.Models {
		if m.Preprocess {
			d.RGB = append(d.RGB, m)
		} else {
			d.Plain = append(d.Plain, m)
		}
	}
	d.Main = o.fileName(FP32, false)
	if len(d.RGB) > 0 {
		d.Main, d.MainRGB = d.RGB[0].File, true
	}
	t, err := template.New("readme").Funcs(template.FuncMap{
		"mb":    func(b int64) string { return fmt.Sprintf("%.2f MB", float64(b)/1e6) },
		"short": func(s string) string { return s[:12] },
		"join":  strings.Join,
		"f4":    func(v float64) string { return fmt.Sprintf("%.4f", v) },
		"sci":   func(v float64) string { return fmt.Sprintf("%.1e", v) },
		"opt4": func(v *float64) string {
			if v == nil {
				return "–"
			}
			return fmt.Sprintf("%.4f", *v)
		},
		"ms": func(l *Latency) string {
			if l == nil {
				return "–"
			}
			return fmt.Sprintf("%.1f ms (p90 %.1f)", l.MedianMS, l.P90MS)
		},
		"upper": strings.ToUpper,
		"tick":  func() string { return "`" },
		"fence": func() string { return "```" },
	}).Parse(readmeTemplate)
	if err != nil {
		return nil, fmt.Errorf("package: README template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("package: README: %w", err)
	}
	return b.Bytes(), nil
}

const readmeTemplate = `# {{.Name}}: trading-card segmentation for ONNX Runtime

LR-ASPP MobileNetV3-Large, two classes ({{index .Classes 0}} = 0, {{index .Classes 1}} = 1), input {{.H}}×{{.W}} (height × width),
{{.Source.Parameters}} parameters. Exported by {{.Exporter}} from {{tick}}{{.Source.Path}}{{tick}}
({{.Source.Kind}}{{if .Source.Step}}, step {{.Source.Step}}, epoch {{.Source.Epoch}}{{end}}{{if .Source.ValIoU}}, validation card IoU {{f4 .Source.ValIoU}}{{end}}).
Everything below was measured by the export itself; {{tick}}export.json{{tick}} holds the same numbers.

## Files

| file | precision | inputs | outputs | size | sha256 |
|---|---|---|---|---|---|
{{- range .Models}}
| {{tick}}{{.File}}{{tick}} | {{upper .Precision}}{{if .Preprocess}} + pre/post-processing{{end}} | {{join .Inputs ", "}} | {{join .Outputs ", "}} | {{mb .Bytes}} | {{tick}}{{short .SHA256}}…{{tick}} |
{{- end}}
{{- if .Weights}}
| {{tick}}{{.Weights.File}}{{tick}} | FP32 weights | – | – | {{mb .Weights.Bytes}} | {{tick}}{{short .Weights.SHA256}}…{{tick}} |
{{- end}}

ONNX opset {{.Opset}}, batch {{if .Dynamic}}dynamic (any N){{else}}1{{end}}. Each model's metadata ({{tick}}metadata_props{{tick}}) records its inputs
and outputs, normalisation, class names, input size, precision, the training configuration
({{tick}}cardseg.training_config{{tick}}) and the checkpoint's validation metrics ({{tick}}cardseg.validation_metrics{{tick}}).

## Inputs and outputs
{{if .Plain}}
**Networks** ({{range $i, $m := .Plain}}{{if $i}}, {{end}}{{tick}}{{$m.File}}{{tick}}{{end}}):

- input {{tick}}image{{tick}}: float32 {{if .Dynamic}}[N,3,{{.H}},{{.W}}]{{else}}[1,3,{{.H}},{{.W}}]{{end}}, RGB planes (NCHW), normalised as below;
- output {{tick}}logits{{tick}}: float32 {{if .Dynamic}}[N,2,{{.H}},{{.W}}]{{else}}[1,2,{{.H}},{{.W}}]{{end}}; channel 0 background, channel 1 card. A pixel is card
  where {{tick}}logits[1] > logits[0]{{tick}}; its card probability is {{tick}}sigmoid(logits[1] − logits[0]){{tick}} (the two-class softmax).
{{- end}}
{{if .RGB}}
**RGB variants** ({{range $i, $m := .RGB}}{{if $i}}, {{end}}{{tick}}{{$m.File}}{{tick}}{{end}}): all pre- and post-processing is inside the model.

- input {{tick}}rgb{{tick}}: uint8 {{if .Dynamic}}[N,H,W,3]{{else}}[H,W,3]{{end}}: the photo's pixels, row by row, R G B, **any height and width**;
- output {{tick}}mask{{tick}}: uint8 {{if .Dynamic}}[N,H,W]{{else}}[H,W]{{end}} at the photo's size: 255 card, 0 background (write it as a grey PNG as is);
- output {{tick}}card_probability{{tick}}: float32 {{if .Dynamic}}[N,H,W]{{else}}[H,W]{{end}}: the card probability of every pixel.

Inside, the pixels are resized to {{.H}}×{{.W}} (bilinear, pixel centres aligned{{if ge .Opset 18}}, antialiased{{else}}; opset {{.Opset}} has no antialiasing, so
photos far larger than {{.H}}×{{.W}} are better shrunk by the app first, or exported with {{tick}}--opset 18{{tick}}{{end}}), normalised, run through the
network, and the logit margin is resized back to the photo's size and thresholded at 0.
{{- end}}

## Preprocessing (for the networks)

What an app feeding {{tick}}image{{tick}} must do (what the RGB variants do inside):

1. decode the photo and apply its EXIF orientation (phones store rotated photos upright only in EXIF);
2. resize to {{.W}}×{{.H}} (width × height) with bilinear interpolation, pixel centres aligned
   (PyTorch's {{tick}}align_corners=False{{tick}}), antialiased when shrinking: the linear filter widened by the scale factor
   (ONNX Resize with {{tick}}antialias=1{{tick}}, PIL, PyTorch's {{tick}}antialias=True{{tick}}). The training loader instead box-averages by
   whole factors and then samples bilinearly; the two differ by a few grey levels at edges;
3. RGB order, each channel scaled to [0,1] ({{tick}}v / 255{{tick}}), then normalised: {{tick}}(v/255 − mean[c]) / std[c]{{tick}} with
   mean = ({{index .Mean 0}}, {{index .Mean 1}}, {{index .Mean 2}}) and std = ({{index .Std 0}}, {{index .Std 1}}, {{index .Std 2}}) (ImageNet's);
4. lay the three channels out as planes: {{tick}}[1, 3, {{.H}}, {{.W}}]{{tick}}, float32.

Postprocessing: take {{tick}}logits[1] − logits[0]{{tick}}, resize it to the photo's size (bilinear), and call a pixel card where it
is above 0. {{tick}}runNetwork{{tick}} in {{tick}}example/main.go{{tick}} does exactly this.

## Which model

- **FP32** ({{tick}}{{.Name}}.onnx{{tick}}): the reference; every execution provider runs it.
{{- if .Model "fp16" false}}
- **FP16**: half the size; for GPUs and NPUs that compute in half precision (CoreML, NNAPI, CUDA). CPUs without
  float16 arithmetic convert it back to float32 at run time, so it is no faster there.
{{- end}}
{{- if .Model "int8" false}}
- **INT8**: a quarter of the size; for mobile CPUs (ARM dot-product instructions) and NNAPI, XNNPACK, QNN.
{{- end}}
{{- if .RGB}}
- **.rgb** variants: the same networks with the pre- and post-processing inside; the simplest to call from an app.
{{- end}}

## Accuracy and parity

Every model was run on {{.Samples.Count}}{{if .Samples.Synthetic}} synthetic pictures (no sample images were given){{else}} sample images from {{tick}}{{.Samples.Dir}}{{tick}}{{end}} and compared with the
checkpoint's own FP32 forward pass (batch norm unfolded, run by ONNX Runtime on the same inputs).
{{- if .TestSplit}} The test-split card IoU is
pooled over the {{.TestSplit.Images}} images of {{tick}}{{.TestSplit.Dir}}/{{.TestSplit.Split}}{{tick}}, scored at mask resolution as {{tick}}cardseg-ort eval{{tick}} does
(networks: Go preprocessing as in training; RGB variants: each photo fed as it is, what an app gets).{{end}}

| model | max abs diff | mask IoU vs FP32 checkpoint | pixel agreement | test card IoU | drop vs FP32 |
|---|---|---|---|---|---|
{{- range .Models}}
| {{tick}}{{.File}}{{tick}} | {{sci .Parity.MaxAbsDiff}}{{if .Preprocess}} (probability){{end}} | {{f4 .Parity.MaskIoU}}{{if .Parity.AtInputSize}} (at the photos' size){{end}} | {{f4 .Parity.MaskAgreement}} | {{opt4 .TestIoU}} | {{opt4 .TestIoUDrop}} |
{{- end}}

- Networks: max abs diff is the largest |logit − checkpoint logit|; FP32 must stay within 1e-4.
- RGB variants: max abs diff is the largest card-probability difference from the same network fed the same pixels
  through Go preprocessing (checks the embedded pre/post-processing); their mask IoU is measured on the photos at
  their own size against the checkpoint's mask resized there.
{{- range .Models}}{{if .Quantization}}{{if not .Preprocess}}
- {{tick}}{{.File}}{{tick}}: {{.Quantization.Format}}; activations {{.Quantization.Activations}}; weights {{.Quantization.Weights}};
  calibrated ({{.Quantization.Method}}{{if .Quantization.Percentile}} {{.Quantization.Percentile}}%{{end}}) on {{.Quantization.Images}} images from {{tick}}{{.Quantization.ImageDir}}{{tick}};
  {{.Quantization.Tensors}} activation tensors quantised; {{join .Quantization.FloatOperators ", "}} run in float between them.
  {{- if .Quantization.WeightBits}}{{if eq .Quantization.WeightBits 7}} The weights use 7 of their 8 bits so that x86 CPUs
  without VNNI, whose 8-bit multiply-add saturates, compute them without overflow, as ARM phones do; for ARM-only
  deployment {{tick}}--int8-weight-bits 8{{tick}} buys a little precision.{{end}}{{end}}
{{- end}}{{end}}{{end}}
{{- range .Warnings}}
- warning: {{.}}
{{- end}}

## Latency
{{if .Machine}}
Batch 1 on {{.Machine.CPU}} ({{.Machine.Cores}} cores, {{.Machine.OS}}), ONNX Runtime {{.Machine.ORTVersion}}, {{.Machine.Provider}} provider,
{{if .Machine.Threads}}{{.Machine.Threads}}{{else}}default{{end}} intra-op threads; median over the timed runs after 3 warm-up runs:

| model | input timed | median |
|---|---|---|
{{- range .Models}}
| {{tick}}{{.File}}{{tick}} | {{if .Latency}}{{.Latency.Input}}{{end}} | {{ms .Latency}} |
{{- end}}

A desktop CPU's x86 kernels are not a phone's: INT8 (QDQ) and FP16 models pay off on ARM CPUs and on NNAPI, XNNPACK,
CoreML or QNN, which run the quantised and half-precision operators natively; on x86 ONNX Runtime may even
run them slower than FP32. Measure on the target device.
{{else}}
Not measured ({{tick}}--latency-runs -1{{tick}}).
{{end}}
## Running it

### Desktop: Go (example/)

{{fence}}sh
cd example
go run . -model ../{{.Main}} -image photo.jpg -mask mask.png -overlay overlay.png -ort-lib /path/to/libonnxruntime.so
{{fence}}

It writes the mask (white = card) and the photo with the card tinted. It runs the RGB variants and the FP32/INT8
networks alike (for the latter it does the preprocessing above itself). It needs the ONNX Runtime shared library
({{tick}}-ort-lib{{tick}} or {{tick}}$ORT_LIB{{tick}}): {{.ORTVersion}}, the version these models were verified with, or newer.

### Desktop: Python

{{fence}}python
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
session = ort.InferenceSession("{{.Main}}", providers=["CPUExecutionProvider"])
photo = np.asarray(ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB"))   # [H,W,3] uint8
{{- if .MainRGB}}
mask, probability = session.run(["mask", "card_probability"], {"rgb": {{if .Dynamic}}photo[None]{{else}}photo{{end}}})
{{- else}}
x = np.asarray(Image.fromarray(photo).resize(({{.W}}, {{.H}}), Image.BILINEAR), np.float32) / 255
x = ((x - [{{index .Mean 0}}, {{index .Mean 1}}, {{index .Mean 2}}]) / [{{index .Std 0}}, {{index .Std 1}}, {{index .Std 2}}]).astype(np.float32).transpose(2, 0, 1)[None]
(logits,) = session.run(["logits"], {"image": x})
mask = (logits[0, 1] > logits[0, 0]).astype(np.uint8) * 255      # at {{.H}}x{{.W}}; resize to the photo as needed
{{- end}}
Image.fromarray(mask{{if .Dynamic}}{{if .MainRGB}}[0]{{end}}{{end}}).save("mask.png")
{{fence}}

### Android (Kotlin, {{tick}}com.microsoft.onnxruntime:onnxruntime-android{{tick}})

{{fence}}kotlin
val env = OrtEnvironment.getEnvironment()
val session = env.createSession(assets.open("{{.Main}}").readBytes(), OrtSession.SessionOptions().apply {
    // addNnapi()   // or addXnnpack(mapOf()), for the INT8 / FP16 models on supported devices
})
{{- if .MainRGB}}
val w = bitmap.width; val h = bitmap.height
val argb = IntArray(w * h).also { bitmap.getPixels(it, 0, w, 0, 0, w, h) }
val rgb = ByteBuffer.allocateDirect(w * h * 3).order(ByteOrder.nativeOrder())
for (p in argb) { rgb.put((p shr 16 and 0xff).toByte()); rgb.put((p shr 8 and 0xff).toByte()); rgb.put((p and 0xff).toByte()) }
rgb.rewind()
val shape = {{if .Dynamic}}longArrayOf(1, h.toLong(), w.toLong(), 3){{else}}longArrayOf(h.toLong(), w.toLong(), 3){{end}}
OnnxTensor.createTensor(env, rgb, shape, OnnxJavaType.UINT8).use { input ->
    session.run(mapOf("rgb" to input)).use { out ->
        val mask = (out.get("mask").get() as OnnxTensor).byteBuffer             // w*h bytes, 255 = card
        val prob = (out.get("card_probability").get() as OnnxTensor).floatBuffer
    }
}
{{- else}}
val small = Bitmap.createScaledBitmap(bitmap, {{.W}}, {{.H}}, true)
val argb = IntArray({{.W}} * {{.H}}).also { small.getPixels(it, 0, {{.W}}, 0, 0, {{.W}}, {{.H}}) }
val mean = floatArrayOf({{index .Mean 0}}f, {{index .Mean 1}}f, {{index .Mean 2}}f); val std = floatArrayOf({{index .Std 0}}f, {{index .Std 1}}f, {{index .Std 2}}f)
val x = FloatBuffer.allocate(3 * {{.W}} * {{.H}})
for (c in 0..2) for (p in argb) x.put(((p shr (16 - 8 * c) and 0xff) / 255f - mean[c]) / std[c])
x.rewind()
OnnxTensor.createTensor(env, x, longArrayOf(1, 3, {{.H}}, {{.W}})).use { input ->
    session.run(mapOf("image" to input)).use { out ->
        val logits = (out.get("logits").get() as OnnxTensor).floatBuffer       // [1,2,{{.H}},{{.W}}]
    }
}
{{- end}}
{{fence}}

### iOS (Swift, CocoaPods {{tick}}onnxruntime-objc{{tick}} or the SwiftPM package {{tick}}onnxruntime-swift-package-manager{{tick}})

{{fence}}swift
import onnxruntime_objc
let env = try ORTEnv(loggingLevel: .warning)
let options = try ORTSessionOptions()
// try options.appendCoreMLExecutionProvider(with: ORTCoreMLExecutionProviderOptions())
let session = try ORTSession(env: env, modelPath: Bundle.main.path(forResource: "{{.Main}}", ofType: nil)!, sessionOptions: options)
{{- if .MainRGB}}
// rgb: [UInt8] of h*w*3 bytes, row by row, R G B (e.g. drawn from a CGImage into an RGBA context, alpha dropped)
let input = try ORTValue(tensorData: NSMutableData(bytes: rgb, length: rgb.count), elementType: .uInt8,
                         shape: [{{if .Dynamic}}1, {{end}}NSNumber(value: h), NSNumber(value: w), 3])
let out = try session.run(withInputs: ["rgb": input], outputNames: ["mask", "card_probability"], runOptions: nil)
let mask = try out["mask"]!.tensorData() as Data      // h*w bytes, 255 = card
{{- else}}
// x: [Float] of 3*{{.H}}*{{.W}} values, planes R, G, B, normalised as above
let input = try ORTValue(tensorData: NSMutableData(bytes: x, length: x.count * 4), elementType: .float,
                         shape: [1, 3, {{.H}}, {{.W}}])
let out = try session.run(withInputs: ["image": input], outputNames: ["logits"], runOptions: nil)
let logits = try out["logits"]!.tensorData() as Data   // float32 [1,2,{{.H}},{{.W}}]
{{- end}}
{{fence}}

### ORT Mobile notes

- The full {{tick}}onnxruntime-android{{tick}} / {{tick}}onnxruntime-objc{{tick}} packages load these {{tick}}.onnx{{tick}} files directly. Reduced-size
  builds need the ORT format: {{tick}}python -m onnxruntime.tools.convert_onnx_models_to_ort {{.Main}}{{tick}} (and build ORT
  with the operator config it writes).
- The INT8 models are in QDQ form (QuantizeLinear/DequantizeLinear around Conv, Add and Mul), what NNAPI, XNNPACK,
  CoreML and QNN consume; the CPU provider fuses them into integer kernels.
- Keep the model's input size: the network was trained at {{.H}}×{{.W}}. The RGB variants take any photo size and do
  the resizing themselves.
{{- if .Weights}}

## PyTorch

{{tick}}{{.Weights.File}}{{tick}} holds the weights under torchvision's {{tick}}state_dict{{tick}} names (batch norm unfolded, with running statistics):

{{fence}}python
import torch
from safetensors.torch import load_file
{{- if eq .Source.WidthMult 1.0}}
from torchvision.models.segmentation import lraspp_mobilenet_v3_large
model = lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None)
{{- else}}
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3
# lraspp_mobilenet_v3_large with MobileNetV3's width multiplier {{.Source.WidthMult}}
setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", width_mult={{.Source.WidthMult}}, dilated=True)
model = _lraspp_mobilenetv3(MobileNetV3(setting, last_channel), num_classes=2)
{{- end}}
model.load_state_dict(load_file("{{.Weights.File}}"), strict=True)
model.eval()   # model(x)["out"] equals the ONNX network's logits (x normalised as above, [N,3,{{.H}},{{.W}}])
{{fence}}

{{tick}}cardseg-ort export {{.Weights.File}}{{tick}} turns such a file (or one saved from PyTorch, with {{tick}}--size HxW{{tick}}) back into these models.
{{- end}}
`
