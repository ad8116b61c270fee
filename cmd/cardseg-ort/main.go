// Command cardseg-ort trains, evaluates, prunes and exports the card segmentation network.
// main only parses flags and sets up logging; each command lives in its own file as a struct
// whose fields are its flags and whose Run method does the work. Nothing imports this package.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Globals are the flags every command takes.
type Globals struct {
	LogLevel  string `help:"Log level: debug, info, warn, error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string `help:"Log format: console (human) or json (one object per line)." default:"console" enum:"console,json"`
}

// Logger builds the one logger of the process, on stderr.
func (g *Globals) Logger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(g.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	var l zerolog.Logger
	if g.LogFormat == "json" {
		l = zerolog.New(os.Stderr)
	} else {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly})
	}
	return l.Level(lvl).With().Timestamp().Logger()
}

// CLI lists the commands.
type CLI struct {
	Globals

	Version VersionCmd `cmd:"" help:"Print the cardseg-ort and ONNX Runtime versions."`
	Doctor  DoctorCmd  `cmd:"" help:"Check ONNX Runtime, execution providers, CUDA libraries and GPUs."`
	Setup   SetupCmd   `cmd:"" help:"Fetch ONNX Runtime from the npm registry into the local cache."`
	Graphs  GraphsCmd  `cmd:"" help:"Build the ONNX graphs; check gradients against another framework."`
	Train   TrainCmd   `cmd:"" help:"Train the network (default: the built-in synthetic dataset, CPU or GPU preset)."`
	Bench   BenchCmd   `cmd:"" help:"Benchmarks."`
	Data    DataCmd    `cmd:"" help:"Inspect datasets (data check DIR)."`
	Synth   SynthCmd   `cmd:"" help:"Write the built-in synthetic dataset of trading-card photographs."`
	Eval    EvalCmd    `cmd:"" help:"Score a segmentation model on a dataset split: metrics, confusion matrix, failures, plots, report.html."`
	Export  ExportCmd  `cmd:"" help:"Export a checkpoint for apps: ONNX FP32/FP16/INT8, uint8-RGB variants, safetensors, a deployment package; every model verified."`
	Prune   PruneCmd   `cmd:"" help:"Prune a checkpoint (single weights or whole channels), optionally fine-tune, and report size, latency and quality."`
}

// exitError carries a specific exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	var cli CLI
	ctx := kong.Parse(&cli,
		kong.Name("cardseg-ort"),
		kong.Description("Train, evaluate, prune and export a trading-card segmentation network on ONNX Runtime."),
		kong.UsageOnError(),
	)
	log := cli.Globals.Logger()
	err := ctx.Run(&cli.Globals, &log)
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintf(os.Stderr, "cardseg-ort: %v\n", err)
	os.Exit(code)
}
