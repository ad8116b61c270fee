package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/runtime"
	"github.com/cardseg-ort/cardseg-ort/tools/ortsetup"
)

// SetupCmd fetches ONNX Runtime into runtime.CacheDir().
type SetupCmd struct {
	CUDA bool   `name:"cuda" help:"Also fetch the matching ORT CUDA 13 execution provider."`
	Dir  string `help:"Cache folder (default: $CARDSEG_ORT_DIR or the user cache folder)." type:"path"`
}

func (c *SetupCmd) Run(log *zerolog.Logger) error {
	dir := c.Dir
	if dir == "" {
		dir = runtime.CacheDir()
	}
	pkgs := []ortsetup.Package{ortsetup.Core}
	if c.CUDA {
		pkgs = append(pkgs, ortsetup.CUDA)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logf := func(format string, args ...any) { log.Info().Msgf(format, args...) }
	if err := ortsetup.Ensure(ctx, dir, pkgs, logf); err != nil {
		return err
	}
	log.Info().Str("dir", dir).Msg("ONNX Runtime ready")
	return nil
}
