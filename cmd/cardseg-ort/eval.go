package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// EvalCmd scores a segmentation model on a dataset split.
type EvalCmd struct {
	Model              string `arg:"" name:"model" help:"ONNX model or checkpoint: ours, a pruned one, or any segmentation model with one image input [N,3,H,W] and one output [N,2,H,W] / [N,1,H,W] / [N,H,W] (e.g. a PyTorch export)." type:"existingfile"`
	Data               string `help:"Dataset folder holding SPLIT/image and SPLIT/mask." default:"data" type:"path"`
	Split              string `help:"Split to evaluate (a sub-folder of --data)." default:"test"`
	Out                string `help:"Folder for report.html, metrics.json and pictures (nothing is written without it; the picture flags need it)." type:"path"`
	JSON               bool   `name:"json" help:"Print the result as one JSON object on stdout."`
	AnalyzePredictions bool   `help:"Draw image / ground truth / prediction / errors panels for every image."`
	FindFailures       int    `help:"Show the N images with the lowest card IoU, with panels." placeholder:"N" default:"0"`
	SavePlots          bool   `help:"Draw the confusion-matrix heatmap, IoU and confidence histograms, and a confidence map per image."`
	Device             string `help:"Execution provider: auto, cpu or cuda." default:"auto" enum:"auto,cpu,cuda"`
	Batch              int    `help:"Images per model run (a model with a static batch size uses its own)." default:"1"`
	Threads            int    `help:"ONNX Runtime intra-op threads (0: ORT's default)." default:"0"`
	Size               string `help:"Input size HxW for models whose height/width are symbolic and whose metadata lacks cardseg.input_size." placeholder:"HxW"`
	Output             string `help:"What the model's output holds: auto, logits, probabilities or labels." default:"auto" enum:"auto,logits,probabilities,labels"`
	OutputName         string `help:"The segmentation output of a model with several outputs."`
	ReportImages       int    `help:"Pictures per gallery in report.html (all are written to files)." default:"48"`
}

func (c *EvalCmd) Run(g *Globals, log *zerolog.Logger) error {
	return c.run(log, os.Stdout)
}

func (c *EvalCmd) run(log *zerolog.Logger, stdout io.Writer) error {
	prov, err := runtime.ParseProvider(c.Device)
	if err != nil {
		return err
	}
	h, w, err := pipeline.ParseSize(c.Size)
	if err != nil {
		return err
	}
	kind, err := pipeline.ParseOutputKind(c.Output)
	if err != nil {
		return err
	}
	if c.Batch < 1 {
		return fmt.Errorf("--batch %d: need at least 1", c.Batch)
	}
	if c.FindFailures < 0 {
		return fmt.Errorf("--find-failures %d: need 0 or more", c.FindFailures)
	}
	m, err := pipeline.OpenSegModel(c.Model, pipeline.ModelOptions{
		Session:    runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads},
		Height:     h,
		Width:      w,
		Kind:       kind,
		OutputName: c.OutputName,
	})
	if err != nil {
		return err
	}
	defer m.Close()
	log.Info().Str("model", c.Model).Str("input", m.Input.String()).Str("output", m.Output.String()).
		Str("kind", string(m.Kind)).Ints("size", []int{m.Height, m.Width}).Str("size_from", m.SizeFrom).
		Str("normalization", m.NormFrom).Str("provider", string(m.Provider())).Msg("model")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := pipeline.EvaluateDataset(ctx, m, c.Data, c.Split, pipeline.EvalOptions{
		Batch:              c.Batch,
		Out:                c.Out,
		AnalyzePredictions: c.AnalyzePredictions,
		FindFailures:       c.FindFailures,
		SavePlots:          c.SavePlots,
		ReportImages:       c.ReportImages,
		Logf:               func(format string, args ...any) { log.Info().Msgf(format, args...) },
	})
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	printResult(stdout, res)
	if res.Report != "" {
		log.Info().Str("report", res.Report).Msg("written")
	}
	return nil
}

// printResult writes the human-readable summary.
func printResult(w io.Writer, r *pipeline.EvalResult) {
	fmt.Fprintf(w, "model   %s (%s, output read as %s)\n", r.Model.Path, r.Model.Output, r.Model.OutputKind)
	fmt.Fprintf(w, "data    %s, split %s: %d images, %.1f s\n\n", r.Data, r.Split, r.Images, r.Seconds)
	fmt.Fprintf(w, "%-12s %-9s %8s %8s %9s %8s %8s\n", "class", "", "IoU", "Dice", "precision", "recall", "F1")
	for _, c := range []struct {
		name           string
		pooled, images [5]float64
	}{
		{"card", scores(r.Card.IoU, r.Card.Dice, r.Card.Precision, r.Card.Recall, r.Card.F1),
			scores(r.PerImageMean.Card.IoU, r.PerImageMean.Card.Dice, r.PerImageMean.Card.Precision, r.PerImageMean.Card.Recall, r.PerImageMean.Card.F1)},
		{"background", scores(r.Background.IoU, r.Background.Dice, r.Background.Precision, r.Background.Recall, r.Background.F1),
			scores(r.PerImageMean.Background.IoU, r.PerImageMean.Background.Dice, r.PerImageMean.Background.Precision, r.PerImageMean.Background.Recall, r.PerImageMean.Background.F1)},
	} {
		for i, v := range [][5]float64{c.pooled, c.images} {
			name, how := c.name, "pooled"
			if i == 1 {
				name, how = "", "per image"
			}
			fmt.Fprintf(w, "%-12s %-9s %8.4f %8.4f %9.4f %8.4f %8.4f\n", name, how, v[0], v[1], v[2], v[3], v[4])
		}
	}
	fmt.Fprintf(w, "\npixel accuracy  %.4f pooled, %.4f per image\n", r.PixelAccuracy, r.PerImageMean.PixelAccuracy)
	fmt.Fprintf(w, "mean IoU        %.4f pooled, %.4f per image\n", r.MeanIoU, r.PerImageMean.MeanIoU)
	fmt.Fprintf(w, "\nconfusion (rows true, columns predicted)\n%-12s", "")
	for _, n := range r.Confusion.Classes {
		fmt.Fprintf(w, " %22s", n)
	}
	fmt.Fprintln(w)
	for t, row := range r.Confusion.Counts {
		fmt.Fprintf(w, "%-12s", r.Confusion.Classes[t])
		for p, v := range row {
			fmt.Fprintf(w, " %14d (%5.1f%%)", v, 100*r.Confusion.Normalized[t][p])
		}
		fmt.Fprintln(w)
	}
	if len(r.Worst) > 0 {
		fmt.Fprintf(w, "\nworst %d by card IoU\n", len(r.Worst))
		for _, x := range r.Worst {
			fmt.Fprintf(w, "%4d  %-40s IoU %.4f  Dice %.4f\n", x.FailureRank, x.Name, x.IoU, x.Dice)
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "\nwarning: %s\n", warn)
	}
	if r.Report != "" {
		fmt.Fprintf(w, "\nreport  %s\n", r.Report)
	}
}

func scores(v ...float64) [5]float64 { return [5]float64{v[0], v[1], v[2], v[3], v[4]} }
