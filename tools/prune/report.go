package prune

import (
	"fmt"
	"io"
	"strings"
)

// WriteText prints the report for people: the stages side by side, then the per-layer detail.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	p.f("pruned %s -> %s\n", r.Checkpoint, r.Out)
	how := fmt.Sprintf("%s, amount %.2f %s", r.Method, r.Amount, r.Scope)
	if r.Method == "structured" {
		how += ", criterion " + r.Criterion
		if r.Squeeze {
			how += ", squeeze-and-excite channels too"
		}
		if r.Head {
			how += ", last conv and head channels too"
		}
		if r.Multiple > 1 {
			how += fmt.Sprintf(", widths rounded to multiples of %d", r.Multiple)
		}
	} else {
		how += ", by weight magnitude"
	}
	p.f("%s\n", how)
	if r.Data != "" {
		p.f("measured at %dx%d on %s", r.Size[0], r.Size[1], r.Data)
		if s := r.Stage(StageBefore); s != nil && s.Val != nil {
			p.f(" (test split, %d images)", s.Val.Images)
		}
		if r.BNBatches > 0 {
			p.f("; batch-norm statistics re-estimated on %d training batches after pruning", r.BNBatches)
		}
		p.f("\n")
	} else {
		p.f("measured at %dx%d without data (no IoU or Dice)\n", r.Size[0], r.Size[1])
	}
	p.f("\n%-11s %11s %11s %11s %9s %9s %15s %9s %8s\n", "stage", "params", "nonzero", "trainable", "file MB", "gzip MB", "latency ms", "card IoU", "Dice")
	for _, s := range r.Stages {
		iou, dice, lat := "-", "-", "-"
		if s.Val != nil {
			iou, dice = fmt.Sprintf("%.4f", s.Val.IoU), fmt.Sprintf("%.4f", s.Val.Dice)
		}
		if s.LatencyRuns > 0 {
			lat = fmt.Sprintf("%.2f (%.2f)", s.LatencyMS, s.LatencyMinMS)
		}
		p.f("%-11s %11s %11s %11s %9.2f %9.2f %15s %9s %8s\n", s.Stage, thousands(s.Params), thousands(s.NonZero), thousands(s.Trainable),
			mb(s.FileBytes), mb(s.GzipBytes), lat, iou, dice)
	}
	before := r.Stage(StageBefore)
	last := r.Stages[len(r.Stages)-1]
	if before != nil && last.Stage != StageBefore {
		parts := []string{
			fmt.Sprintf("params %+.1f%%", pct(last.Params, before.Params)),
			fmt.Sprintf("nonzero %+.1f%%", pct(last.NonZero, before.NonZero)),
			fmt.Sprintf("file %+.1f%%", pct(int(last.FileBytes), int(before.FileBytes))),
			fmt.Sprintf("gzip %+.1f%%", pct(int(last.GzipBytes), int(before.GzipBytes))),
		}
		if last.LatencyRuns > 0 && before.LatencyMS > 0 && before.LatencyMinMS > 0 {
			parts = append(parts, fmt.Sprintf("latency %+.1f%% (fastest run %+.1f%%)", 100*(last.LatencyMS/before.LatencyMS-1), 100*(last.LatencyMinMS/before.LatencyMinMS-1)))
		}
		if last.Val != nil && before.Val != nil {
			parts = append(parts, fmt.Sprintf("card IoU %+.4f", last.Val.IoU-before.Val.IoU), fmt.Sprintf("Dice %+.4f", last.Val.Dice-before.Val.Dice))
		}
		p.f("%s vs before: %s\n", last.Stage, strings.Join(parts, ", "))
	}
	if last.LatencyRuns > 0 {
		p.f("latency: median (fastest) of %d batch-1 CPU runs per model, the models interleaved\n", last.LatencyRuns)
	}
	if ft := r.FineTune; ft != nil {
		p.f("\nfine-tuned %d epochs (%d steps, peak lr %.3g, cosine decay) in %s; kept epoch %d (best test card IoU)", ft.Epochs, ft.Steps, ft.LR, ft.RunDir, ft.BestEpoch)
		if r.PrunedWeights > 0 {
			p.f("; %d masked weights, %d moved off zero", r.PrunedWeights, ft.MaskedNonZero)
		}
		p.f("\n")
	}
	if r.PrunedWeights > 0 {
		if r.MaskKept {
			p.f("the output keeps the mask of %s pruned weights: further training keeps them zero\n", thousands(r.PrunedWeights))
		} else {
			p.f("mask removed: %s weights are zero for good, later training may move them\n", thousands(r.PrunedWeights))
		}
	}
	if len(r.Channels) > 0 {
		p.f("\n%-26s %-10s %7s %7s\n", "layer", "channels", "before", "after")
		for _, c := range r.Channels {
			p.f("%-26s %-10s %7d %7d", c.Layer, c.Kind, c.Before, c.After)
			if c.Kept != "" {
				p.f("  kept: %s", c.Kept)
			}
			p.f("\n")
		}
	}
	if len(r.Layers) > 0 {
		p.f("\n%-40s %9s %9s\n", "conv weight", "size", "sparsity")
		for _, l := range r.Layers {
			p.f("%-40s %9d %8.1f%%", l.Name, l.Size, 100*l.Sparsity)
			if l.Skipped != "" {
				p.f("  not pruned: %s", l.Skipped)
			}
			p.f("\n")
		}
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func pct(now, was int) float64 {
	if was == 0 {
		return 0
	}
	return 100 * (float64(now)/float64(was) - 1)
}

// thousands writes n with comma separators.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
