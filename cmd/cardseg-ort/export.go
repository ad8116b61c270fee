package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
	"github.com/cardseg-ort/cardseg-ort/tools/export"
)

// ExportCmd writes what an app ships: ONNX models (FP32, optionally FP16 and INT8, optionally
// with pre/post-processing inside), the weights as safetensors, and a deployment package.
type ExportCmd struct {
	Checkpoint string `arg:"" name:"checkpoint" help:"Training checkpoint (RUN/checkpoints/best.onnx), or a .safetensors file of torchvision-named weights (see --size)." type:"existingfile"`
	Out        string `required:"" help:"Output folder (created; files of the same names are replaced)." type:"path"`
	Name       string `help:"File name stem: NAME.onnx, NAME.fp16.onnx, NAME.int8.onnx, NAME.rgb.onnx, NAME.safetensors." default:"cardseg"`

	Format []string `help:"What to write: onnx, safetensors (torchvision state_dict names, for PyTorch), or both (onnx,safetensors)." default:"onnx" sep:","`
	FP16   bool     `name:"fp16" help:"Also a float16 model: weights and compute in float16, float32 input and output."`
	FP16IO bool     `name:"fp16-io" help:"The float16 model takes and returns float16 too."`

	Int8           bool    `name:"int8" help:"Also a static INT8 model (QDQ: int8 activations per tensor, int8 weights per channel), calibrated on --calib images; the export fails if its test-split card IoU is more than --max-int8-iou-drop below FP32's."`
	Calib          string  `help:"INT8 calibration images: a dataset folder (its train split) or a folder of images. Default: --data, then the checkpoint's dataset." type:"path"`
	CalibImages    int     `name:"calib-images" help:"Calibration images to use, spread evenly over the folder (default 64)." default:"64" placeholder:"N"`
	CalibMethod    string  `name:"calib-method" help:"Activation ranges: minmax, or percentile (drops rare outliers)." default:"minmax" enum:"minmax,percentile"`
	Percentile     float64 `help:"Share of values the percentile method keeps, in percent." default:"99.999"`
	Int8WeightBits int     `name:"int8-weight-bits" help:"Precision of the int8 weights: 7 is exact on every CPU; 8 only for ARM and VNNI x86 CPUs (older x86 saturates)." default:"7"`
	MaxInt8IoUDrop float64 `name:"max-int8-iou-drop" help:"Largest INT8 card-IoU drop on the test split accepted." default:"0.01"`

	DynamicBatch    bool `name:"dynamic-batch" help:"Symbolic batch dimension (default: batch 1, what mobile runtimes optimise best)."`
	Opset           int  `help:"ONNX opset, 14 to 21 (18, the default, is the first with antialiased resizing, which the RGB variants use)." default:"18"`
	EmbedPreprocess bool `name:"embed-preprocess" help:"Also NAME[.fp16|.int8].rgb.onnx: uint8 RGB pixels [H,W,3] of any size in; a uint8 mask (255 card) and the card probability out, at the input's size."`
	CreatePackage   bool `name:"create-package" help:"Also README.md (I/O, preprocessing, calling ORT on Android, iOS and desktop, sizes, latency, parity) and a Go example program."`

	Data         string `help:"Dataset whose test split scores every model and whose images the parity checks run on. Default: --calib, then the checkpoint's dataset." type:"path"`
	VerifyImages int    `name:"verify-images" help:"Sample images of the parity checks (default 8)." default:"8" placeholder:"N"`
	Size         string `help:"Input size HxW of a .safetensors file that does not record it (weights from PyTorch)." placeholder:"HxW"`
	Device       string `help:"Execution provider of the checks and timings: cpu (what phones' CPUs run), cuda or auto." default:"cpu" enum:"cpu,cuda,auto"`
	Threads      int    `help:"ONNX Runtime intra-op threads (0: its default)." default:"0"`
	LatencyRuns  int    `name:"latency-runs" help:"Timed runs per model at batch 1 (0: 20 with --create-package, else none; -1: none)." default:"0"`
	JSON         bool   `name:"json" help:"Print the export report (export.json) on stdout instead of a summary."`
}

func (c *ExportCmd) Run(g *Globals, log *zerolog.Logger) error {
	return c.run(log, os.Stdout)
}

func (c *ExportCmd) run(log *zerolog.Logger, stdout io.Writer) error {
	prov, err := runtime.ParseProvider(c.Device)
	if err != nil {
		return err
	}
	h, w, err := pipeline.ParseSize(c.Size)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	var formats []string
	for _, f := range c.Format {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			formats = append(formats, f)
		}
	}
	opts := export.Options{
		Out: c.Out, Name: c.Name, Formats: formats,
		FP16: c.FP16, FP16IO: c.FP16IO,
		Int8: c.Int8, Calib: c.Calib, CalibImages: c.CalibImages, CalibMethod: c.CalibMethod, Percentile: c.Percentile,
		Int8WeightBits: c.Int8WeightBits, MaxInt8IoUDrop: c.MaxInt8IoUDrop,
		DynamicBatch: c.DynamicBatch, Opset: c.Opset, EmbedPreprocess: c.EmbedPreprocess, CreatePackage: c.CreatePackage,
		Data: c.Data, VerifyImages: c.VerifyImages, LatencyRuns: c.LatencyRuns,
		Session:     runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads},
		ToolVersion: version,
		Logf:        func(format string, args ...any) { log.Info().Msgf(format, args...) },
	}
	// Flag mistakes are reported before the checkpoint is read.
	if err := opts.Validate(); err != nil {
		return err
	}
	src, err := export.LoadSource(c.Checkpoint, h, w)
	if err != nil {
		return err
	}
	log.Info().Str("source", c.Checkpoint).Str("kind", src.Kind).Ints("size", []int{src.Config.Height, src.Config.Width}).
		Float64("width_mult", src.Config.WidthMult).Msg("exporting")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := export.Export(ctx, src, opts)
	var verr *export.VerificationError
	if err != nil && !errors.As(err, &verr) {
		return err
	}
	if c.JSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		printExport(stdout, rep)
	}
	return err
}

// printExport writes the human-readable summary of an export.
func printExport(w io.Writer, r *export.Report) {
	fmt.Fprintf(w, "exported %s (%s) at %dx%d, batch %s, opset %d into %s\n\n", r.Source.Path, r.Source.Kind,
		r.InputSize[0], r.InputSize[1], r.Batch, r.Opset, r.Out)
	if len(r.Models) > 0 {
		fmt.Fprintf(w, "%-26s %-10s %10s %12s %9s %9s %9s %10s\n", "file", "precision", "size", "max |diff|", "mask IoU", "test IoU", "drop", "latency")
		for _, m := range r.Models {
			prec := m.Precision
			if m.Preprocess {
				prec += "+rgb"
			}
			fmt.Fprintf(w, "%-26s %-10s %8.2fMB %12.2e %9.4f %9s %9s %10s\n", m.File, prec, float64(m.Bytes)/1e6,
				m.Parity.MaxAbsDiff, m.Parity.MaskIoU, opt(m.TestIoU), opt(m.TestIoUDrop), latency(m.Latency))
		}
		if r.Samples.Synthetic {
			fmt.Fprintf(w, "\nparity on %d synthetic pictures", r.Samples.Count)
		} else {
			fmt.Fprintf(w, "\nparity on %d images from %s", r.Samples.Count, r.Samples.Dir)
		}
		if r.TestSplit != nil {
			fmt.Fprintf(w, "; test IoU on %d images of %s/%s", r.TestSplit.Images, r.TestSplit.Dir, r.TestSplit.Split)
		}
		fmt.Fprintln(w)
	}
	if r.Weights != nil {
		fmt.Fprintf(w, "weights %s (%.2f MB, torchvision state_dict names)\n", r.Weights.File, float64(r.Weights.Bytes)/1e6)
	}
	if r.Package {
		fmt.Fprintf(w, "package README.md, example/ (go run . -model ../FILE -image PHOTO)\n")
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	for _, c := range r.Failed() {
		fmt.Fprintf(w, "FAILED: %s\n", c.Detail)
	}
}

func opt(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *v)
}

func latency(l *export.Latency) string {
	if l == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", l.MedianMS)
}
