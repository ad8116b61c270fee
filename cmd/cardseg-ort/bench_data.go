package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	goruntime "runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/tools/synth"
)

// BenchDataCmd times the loader on a dataset's training split, by default a synthetic one
// generated at the measured size, with full augmentation.
type BenchDataCmd struct {
	Height  int     `help:"Output height." default:"480"`
	Width   int     `help:"Output width." default:"640"`
	Batch   int     `help:"Batch size." default:"8"`
	Workers int     `help:"Loader workers (0: one per core)." default:"0"`
	Seconds float64 `help:"Measured time, after one warm-up batch." default:"10"`
	Augment string  `help:"default: the training augmentation (every transform at its probability); all: every transform on every image (worst case); none: resize and normalise only." enum:"default,all,none" default:"default"`
	Dir     string  `help:"Dataset folder whose train split is read; default: synthetic pictures at the measured size." type:"path"`
	Images  int     `help:"Synthetic pictures to generate when no --dir is given." default:"64"`
	JSON    bool    `help:"Print one JSON line."`
	Profile string  `name:"cpuprofile" help:"Write a CPU profile of the measured part to this file (go tool pprof)." type:"path"`
}

type benchDataResult struct {
	Height    int     `json:"height"`
	Width     int     `json:"width"`
	Batch     int     `json:"batch"`
	Workers   int     `json:"workers"`
	Cores     int     `json:"cores"` // GOMAXPROCS
	Augment   string  `json:"augment"`
	Source    string  `json:"source"`
	Images    int     `json:"images"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"images_per_s"`
	PerCore   float64 `json:"images_per_s_per_core"`
	// CPUSeconds is the process's user+system CPU time over the measurement; images per
	// CPU-second is the per-core rate even when other processes share the cores.
	CPUSeconds    float64 `json:"cpu_seconds"`
	PerCPUSec     float64 `json:"images_per_cpu_s"`
	TargetPerCore float64 `json:"target_per_core"`
}

func (c *BenchDataCmd) Run(log *zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var samples []pipeline.Sample
	source := c.Dir
	if c.Dir != "" {
		ds, err := pipeline.OpenDataset(ctx, c.Dir, pipeline.DatasetOptions{SkipBad: true})
		if err != nil {
			return err
		}
		samples = ds.Train
	} else {
		tmp, err := os.MkdirTemp("", "cardseg-bench-data-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		log.Info().Int("images", c.Images).Str("size", fmt.Sprintf("%dx%d", c.Height, c.Width)).Msg("generating synthetic pictures")
		if err := synth.Generate(ctx, synth.Options{Out: tmp, Train: c.Images, Seed: 1, Height: c.Height, Width: c.Width}, nil); err != nil {
			return err
		}
		ds, err := pipeline.OpenDataset(ctx, tmp, pipeline.DatasetOptions{SkipBad: true})
		if err != nil {
			return err
		}
		samples, source = ds.Train, "synthetic"
	}
	var aug *augment.Config
	switch c.Augment {
	case "default":
		a := augment.Defaults()
		aug = &a
	case "all":
		a := augment.Defaults().WithProbability(1)
		aug = &a
	}
	workers := c.Workers
	if workers <= 0 {
		workers = goruntime.GOMAXPROCS(0)
	}
	l, err := pipeline.NewLoader(samples, pipeline.LoaderConfig{Height: c.Height, Width: c.Width, BatchSize: c.Batch,
		Workers: workers, Shuffle: true, Augment: aug, Seed: 1})
	if err != nil {
		return err
	}
	images, warm := 0, false
	var start time.Time
	var cpuStart time.Duration
	for epoch := 0; ; epoch++ {
		e := l.Epoch(ctx, epoch)
		for e.Next() {
			if !warm { // the first batch pays for allocation and cold caches
				warm, start, cpuStart = true, time.Now(), cpuTime()
				if c.Profile != "" {
					f, err := os.Create(c.Profile)
					if err != nil {
						e.Close()
						return err
					}
					defer f.Close()
					if err := pprof.StartCPUProfile(f); err != nil {
						e.Close()
						return err
					}
					defer pprof.StopCPUProfile()
				}
				continue
			}
			images += e.Batch().Size
			if time.Since(start).Seconds() >= c.Seconds {
				break
			}
		}
		err := e.Close()
		if err == nil {
			err = e.Err()
		}
		if err != nil {
			return err
		}
		if warm && time.Since(start).Seconds() >= c.Seconds {
			break
		}
	}
	secs := time.Since(start).Seconds()
	cpu := (cpuTime() - cpuStart).Seconds()
	cores := min(workers, goruntime.GOMAXPROCS(0))
	r := benchDataResult{Height: c.Height, Width: c.Width, Batch: c.Batch, Workers: workers, Cores: goruntime.GOMAXPROCS(0),
		Augment: c.Augment, Source: source, Images: images, Seconds: secs, PerSecond: float64(images) / secs,
		PerCore: float64(images) / secs / float64(cores), CPUSeconds: cpu, PerCPUSec: float64(images) / cpu, TargetPerCore: 60}
	if c.JSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("loader %dx%d, batch %d, %d workers, augment %s, %s data: %.1f images/s, %.1f images/s per core, %.1f images per CPU-second (target 60 per core)\n",
		r.Height, r.Width, r.Batch, r.Workers, r.Augment, r.Source, r.PerSecond, r.PerCore, r.PerCPUSec)
	return nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
