package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
	"github.com/cardseg-ort/cardseg-ort/tools/prune"
)

// PruneCmd prunes a checkpoint: unstructured (single weights, kept at zero by a mask) or
// structured (whole channels: a smaller architecture), optionally fine-tunes it, and reports
// parameters, file size, latency and quality before, after pruning and after fine-tuning.
type PruneCmd struct {
	Checkpoint string  `arg:"" name:"checkpoint" help:"Checkpoint to prune (RUN/checkpoints/best.onnx, or an earlier prune's output)." type:"existingfile"`
	Out        string  `required:"" help:"Output checkpoint: the pruned model, its mask and a fine-tuning configuration (train --resume continues it; ONNX Runtime runs it as is)." type:"path"`
	Amount     float64 `required:"" help:"Share to remove, in [0, 1): of the conv weights (unstructured), or of each pruned layer's channels (structured)."`
	Structured bool    `help:"Remove whole channels (the inverted-residual blocks' expansion channels; residual widths stay) instead of single weights."`
	Global     bool    `xor:"scope" help:"Rank candidates across all layers (the default for unstructured pruning)."`
	Layerwise  bool    `xor:"scope" help:"Remove the same share from every layer (the default for structured pruning)."`
	Criterion  string  `help:"Structured: rank channels by |γ| of the batch norm that scales them (bn-gamma, the default) or by the L1 norm of the filter that produces them (l1). Unstructured pruning ranks weights by magnitude." enum:",bn-gamma,l1" default:""`
	Squeeze    bool    `help:"Structured: also prune the squeeze-and-excite bottleneck channels (--no-squeeze keeps them)." default:"true" negatable:""`
	Head       bool    `help:"Structured: also prune the last backbone conv's channels and the LR-ASPP head's inter channels."`
	Multiple   int     `name:"channel-multiple" help:"Structured: round pruned widths to a multiple of this (8 keeps ONNX Runtime's blocked convolutions usable; 1: exact)." default:"8"`

	FineTune bool `name:"fine-tune" help:"Fine-tune after pruning (pruned weights held at zero by the mask)."`
	// Six epochs: on a converged CPU-preset model, 30% structured pruning and 3 epochs left card
	// IoU 0.011 below the checkpoint's; 6 epochs recovered it (+0.003).
	FineTuneEpochs int     `name:"fine-tune-epochs" help:"Fine-tuning epochs (also written into the output's configuration for a later train --resume)." default:"6"`
	FineTuneLR     float64 `name:"fine-tune-lr" help:"Fine-tuning peak learning rate, cosine decay, no warm-up (0: a tenth of the checkpoint's)." default:"0"`
	FineTuneDir    string  `name:"fine-tune-dir" help:"Fine-tuning run folder (default: OUT without its extension + .finetune)." type:"path"`
	MaxSteps       int     `name:"max-steps-per-epoch" help:"Cap on fine-tuning steps per epoch (0: the checkpoint's setting)." default:"0"`
	RemoveMasks    bool    `name:"remove-masks" help:"Drop the mask from the output (after fine-tuning): the zeros stay, later training may move them."`

	Data      string `help:"Dataset folder (default: the one in the checkpoint's configuration)." type:"path"`
	NoEval    bool   `name:"no-eval" help:"Prune without data: no IoU or Dice, no batch-norm re-estimation, no fine-tuning."`
	BNBatches int    `name:"bn-batches" help:"Training batches that re-estimate batch-norm statistics after pruning (0: the checkpoint's bn_recalib_batches, 16 if that is 0)." default:"0"`
	NoBN      bool   `name:"no-bn-recalib" help:"Keep the batch-norm statistics of the unpruned model (not recommended after structured pruning)."`
	Device    string `help:"Execution provider for evaluation and fine-tuning: auto, cpu or cuda." default:"auto" enum:"auto,cpu,cuda"`
	Threads   int    `help:"ONNX Runtime intra-op threads for evaluation and fine-tuning (0: ORT's default)." default:"0"`

	LatencyRuns    int  `name:"latency-runs" help:"Timed batch-1 CPU runs of each stage's exported model (0: no latency measurement)." default:"30"`
	LatencyThreads int  `name:"latency-threads" help:"ONNX Runtime intra-op threads for the latency runs (0: ORT's default)." default:"1"`
	JSON           bool `name:"json" help:"Print the report as one JSON object on stdout."`
}

func (c *PruneCmd) Run(g *Globals, log *zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	var sink pipeline.ProgressSink = &pipeline.LineProgress{Log: *log, Every: 30 * time.Second}
	if g.LogFormat == "console" && pipeline.IsTerminal(os.Stderr) {
		sink = &pipeline.BarProgress{W: os.Stderr}
	}
	return c.run(ctx, *log, sink, os.Stdout)
}

func (c *PruneCmd) job(log zerolog.Logger, sink pipeline.ProgressSink) (*prune.Job, error) {
	if c.LatencyRuns < 0 {
		return nil, fmt.Errorf("--latency-runs %d: want 0 or more", c.LatencyRuns)
	}
	if c.BNBatches < 0 {
		return nil, fmt.Errorf("--bn-batches %d: want 0 or more (--no-bn-recalib turns re-estimation off)", c.BNBatches)
	}
	bnBatches := c.BNBatches
	if c.NoBN {
		bnBatches = -1
	}
	if c.MaxSteps < 0 {
		return nil, fmt.Errorf("--max-steps-per-epoch %d: want 0 or more", c.MaxSteps)
	}
	opts := prune.Options{Amount: c.Amount, Structured: c.Structured}
	switch {
	case c.Global:
		opts.Scope = prune.Global
	case c.Layerwise:
		opts.Scope = prune.Layerwise
	}
	if c.Structured {
		opts.Criterion, opts.Squeeze, opts.Head, opts.Multiple = prune.Criterion(c.Criterion), c.Squeeze, c.Head, c.Multiple
	} else if c.Criterion != "" || c.Head {
		return nil, errors.New("--criterion and --head choose channels: add --structured")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	prov := runtime.ProviderCPU
	if !c.NoEval || c.LatencyRuns > 0 {
		if err := runtime.Init(); err != nil {
			return nil, err
		}
	}
	if !c.NoEval {
		p, err := runtime.ParseProvider(c.Device)
		if err != nil {
			return nil, err
		}
		if prov, err = runtime.ResolveProvider(p); err != nil {
			return nil, err
		}
	}
	return &prune.Job{
		Checkpoint: c.Checkpoint, Out: c.Out, Options: opts, RemoveMasks: c.RemoveMasks,
		Data: c.Data, NoEval: c.NoEval, BNBatches: bnBatches,
		FineTune: prune.FineTune{Run: c.FineTune, Epochs: c.FineTuneEpochs, LR: c.FineTuneLR, Dir: c.FineTuneDir, MaxStepsPerEpoch: c.MaxSteps},
		Session:  runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads},
		Latency:  prune.LatencyOptions{Runs: c.LatencyRuns, Warmup: min(c.LatencyRuns, 3), Threads: c.LatencyThreads},
		Log:      log, Progress: sink,
	}, nil
}

func (c *PruneCmd) run(ctx context.Context, log zerolog.Logger, sink pipeline.ProgressSink, stdout io.Writer) error {
	j, err := c.job(log, sink)
	if err != nil {
		return err
	}
	rep, err := j.Run(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if rep.FineTune == nil {
		fmt.Fprintf(stdout, "\nfine-tune later with: cardseg-ort train --resume %s --out RUN (its configuration holds %d epochs of fine-tuning)\n", c.Out, c.FineTuneEpochs)
	}
	return nil
}
