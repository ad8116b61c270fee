package pipeline

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlots draws the run's curves from its metrics history: loss.png (train and
// validation), iou.png (validation card IoU and Dice) and lr.png.
func WritePlots(dir string, hist []EpochRecord) error {
	if len(hist) == 0 {
		return nil
	}
	series := func(f func(EpochRecord) float64) plotter.XYs {
		xy := make(plotter.XYs, len(hist))
		for i, r := range hist {
			xy[i].X, xy[i].Y = float64(r.Epoch), f(r)
		}
		return xy
	}
	hasVal := hist[len(hist)-1].Val.Images > 0
	charts := []struct {
		file, title, y string
		lines          []any
	}{
		{"loss.png", "Loss (0.5 Dice + 0.5 CE)", "loss", []any{
			"train", series(func(r EpochRecord) float64 { return r.TrainLoss }),
		}},
		{"lr.png", "Learning rate (end of epoch)", "lr", []any{
			"lr", series(func(r EpochRecord) float64 { return r.LR }),
		}},
	}
	if hasVal {
		charts[0].lines = append(charts[0].lines, "validation", series(func(r EpochRecord) float64 { return r.Val.Loss }))
		charts = append(charts, struct {
			file, title, y string
			lines          []any
		}{"iou.png", "Validation (card)", "score", []any{
			"IoU", series(func(r EpochRecord) float64 { return r.Val.IoU }),
			"Dice", series(func(r EpochRecord) float64 { return r.Val.Dice }),
			"pixel accuracy", series(func(r EpochRecord) float64 { return r.Val.PixelAccuracy }),
		}})
	}
	for _, c := range charts {
		p := plot.New()
		p.Title.Text = c.title
		p.X.Label.Text = "epoch"
		p.Y.Label.Text = c.y
		p.Add(plotter.NewGrid())
		if err := plotutil.AddLinePoints(p, c.lines...); err != nil {
			return fmt.Errorf("plot %s: %w", c.file, err)
		}
		if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, c.file)); err != nil {
			return fmt.Errorf("plot %s: %w", c.file, err)
		}
	}
	return nil
}
