package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/tools/synth"
)

// SynthCmd writes the built-in synthetic dataset: procedural photographs of trading cards on
// tables with exact masks, in the dataset layout.
type SynthCmd struct {
	Out     string `required:"" help:"Dataset folder to write (DIR/{train,test}/{image,mask})." type:"path"`
	Train   int    `help:"Training pictures." default:"400"`
	Test    int    `help:"Test pictures." default:"100"`
	Seed    uint64 `help:"Seed: the same seed and size give the same dataset." default:"1"`
	Height  int    `help:"Picture height in pixels." default:"480"`
	Width   int    `help:"Picture width in pixels." default:"640"`
	Workers int    `help:"Pictures rendered in parallel (0: one per core)." default:"0"`
	Force   bool   `help:"Replace existing train/ and test/ folders under --out."`
}

func (c *SynthCmd) Run(log *zerolog.Logger) error {
	for _, split := range []string{"train", "test"} {
		dir := filepath.Join(c.Out, split)
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			continue
		}
		if !c.Force {
			return fmt.Errorf("synth: %s already exists; pass --force to replace it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	next := 0.1
	progress := func(done, total int) {
		if f := float64(done) / float64(total); f >= next || done == total {
			log.Info().Int("done", done).Int("total", total).Dur("elapsed", time.Since(start).Round(time.Millisecond)).Msg("synth")
			for next <= f {
				next += 0.1
			}
		}
	}
	opts := synth.Options{Out: c.Out, Train: c.Train, Test: c.Test, Seed: c.Seed, Height: c.Height, Width: c.Width, Workers: c.Workers}
	if err := synth.Generate(ctx, opts, progress); err != nil {
		return err
	}
	log.Info().Str("out", c.Out).Int("train", c.Train).Int("test", c.Test).
		Str("size", fmt.Sprintf("%dx%d", c.Height, c.Width)).Dur("took", time.Since(start).Round(time.Millisecond)).Msg("synthetic dataset written")
	return nil
}
