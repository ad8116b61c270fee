package pipeline

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot files inside the output folder, by name in EvalResult.Plots.
const (
	PlotConfusion  = "confusion_matrix"
	PlotIoU        = "iou_histogram"
	PlotConfidence = "confidence_histogram"
)

// drawPlots draws the confusion-matrix heatmap, the per-image IoU histogram and, for models that
// give probabilities, the confidence histogram into out/plots.
func drawPlots(res *EvalResult, out string) error {
	type job struct {
		name string
		draw func() (*plot.Plot, error)
		w, h vg.Length
	}
	jobs := []job{
		{PlotConfusion, func() (*plot.Plot, error) { return confusionPlot(res.Confusion) }, 4.5 * vg.Inch, 4 * vg.Inch},
		{PlotIoU, func() (*plot.Plot, error) { return iouHistogram(res.PerImage) }, 6 * vg.Inch, 3.5 * vg.Inch},
	}
	if res.ConfHist != nil {
		jobs = append(jobs, job{PlotConfidence, func() (*plot.Plot, error) { return confidencePlot(res.ConfHist) }, 6 * vg.Inch, 3.5 * vg.Inch})
	}
	for _, j := range jobs {
		p, err := j.draw()
		if err != nil {
			return fmt.Errorf("eval: plot %s: %w", j.name, err)
		}
		rel := dirPlots + "/" + j.name + ".png"
		if err := p.Save(j.w, j.h, filepath.Join(out, rel)); err != nil {
			return fmt.Errorf("eval: save plot %s: %w", rel, err)
		}
		res.Plots[j.name] = rel
	}
	return nil
}

// viridisPalette is the confidence maps' colour map as a plot palette.
type viridisPalette int

func (n viridisPalette) Colors() []color.Color {
	cs := make([]color.Color, int(n))
	for i := range cs {
		cs[i] = colormap(float64(i) / float64(int(n)-1))
	}
	return cs
}

// confusionGrid lays the normalised matrix out for a heatmap: x is the predicted class, y the
// true class with class 0 at the top, as confusion matrices are printed.
type confusionGrid struct{ m [][]float64 }

func (g confusionGrid) Dims() (c, r int)   { return len(g.m), len(g.m) }
func (g confusionGrid) Z(c, r int) float64 { return g.m[len(g.m)-1-r][c] }
func (g confusionGrid) X(c int) float64    { return float64(c) }
func (g confusionGrid) Y(r int) float64    { return float64(r) }
func (g confusionGrid) Min() float64       { return 0 }
func (g confusionGrid) Max() float64       { return 1 }

func confusionPlot(c ConfusionReport) (*plot.Plot, error) {
	k := len(c.Counts)
	p := plot.New()
	p.Title.Text = "Confusion matrix (row-normalised)"
	p.X.Label.Text = "predicted"
	p.Y.Label.Text = "true"
	hm := plotter.NewHeatMap(confusionGrid{c.Normalized}, viridisPalette(64))
	p.Add(hm)
	var xys plotter.XYs
	var labels []string
	var dark []bool
	for t := 0; t < k; t++ {
		for q := 0; q < k; q++ {
			xys = append(xys, plotter.XY{X: float64(q), Y: float64(k - 1 - t)})
			labels = append(labels, fmt.Sprintf("%d\n%.1f%%", c.Counts[t][q], 100*c.Normalized[t][q]))
			dark = append(dark, c.Normalized[t][q] < 0.6)
		}
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = draw.XCenter
		l.TextStyle[i].YAlign = draw.YCenter
		l.TextStyle[i].Font.Size = vg.Points(13)
		if dark[i] {
			l.TextStyle[i].Color = color.White
		} else {
			l.TextStyle[i].Color = color.Black
		}
	}
	p.Add(l)
	names := make([]string, k)
	copy(names, c.Classes)
	p.NominalX(names...)
	rev := make([]string, k)
	for i := range names {
		rev[k-1-i] = names[i]
	}
	p.NominalY(rev...)
	return p, nil
}

func iouHistogram(rs []ImageResult) (*plot.Plot, error) {
	const bins = 20
	h := &plotter.Histogram{Width: 1.0 / bins, FillColor: color.RGBA{33, 144, 141, 255}, LineStyle: plotter.DefaultLineStyle}
	counts := make([]float64, bins)
	for _, r := range rs {
		counts[min(bins-1, int(r.IoU*bins))]++
	}
	for i, n := range counts {
		h.Bins = append(h.Bins, plotter.HistogramBin{Min: float64(i) / bins, Max: float64(i+1) / bins, Weight: n})
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Per-image card IoU (%d images)", len(rs))
	p.X.Label.Text = "card IoU"
	p.Y.Label.Text = "images"
	p.X.Min, p.X.Max = 0, 1
	p.Add(h)
	p.Y.Min = 0
	return p, nil
}

func confidencePlot(ch *ConfidenceHistogram) (*plot.Plot, error) {
	n := len(ch.Correct)
	width := (ch.Hi - ch.Lo) / float64(n)
	// Each group as a share of itself, so the few wrong pixels are as visible as the many
	// right ones: a useful model puts its wrong pixels at low confidence.
	line := func(counts []int64, c color.Color) (*plotter.Line, error) {
		var total float64
		for _, v := range counts {
			total += float64(v)
		}
		xys := make(plotter.XYs, n)
		for i, v := range counts {
			xys[i].X = ch.Lo + (float64(i)+0.5)*width
			if total > 0 {
				xys[i].Y = 100 * float64(v) / total
			}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = c
		l.Width = vg.Points(2)
		l.StepStyle = plotter.MidStep
		return l, nil
	}
	right, err := line(ch.Correct, colTP)
	if err != nil {
		return nil, err
	}
	wrong, err := line(ch.Wrong, colFP)
	if err != nil {
		return nil, err
	}
	p := plot.New()
	p.Title.Text = "Per-pixel confidence (max class probability)"
	p.X.Label.Text = "confidence"
	p.Y.Label.Text = "% of the group's pixels"
	p.Add(plotter.NewGrid(), right, wrong)
	p.Legend.Add("correct pixels", right)
	p.Legend.Add("wrong pixels", wrong)
	p.Legend.Top = true
	p.Legend.Left = true
	p.X.Min, p.X.Max = ch.Lo, ch.Hi
	p.Y.Min = 0
	return p, nil
}
