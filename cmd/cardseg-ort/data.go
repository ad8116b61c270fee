package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"

	"github.com/cardseg-ort/cardseg-ort/pipeline"
)

// DataCmd inspects datasets.
type DataCmd struct {
	Check DataCheckCmd `cmd:"" help:"Check a dataset folder: pairing, unreadable or truncated files, sizes, mask values, colour models, EXIF orientation, empty splits."`
}

// DataCheckCmd reports every problem of a dataset with the file it concerns. It exits with
// status 1 when the dataset has errors, the ones training refuses unless --skip-bad.
type DataCheckCmd struct {
	Dir     string `arg:"" help:"Dataset folder: DIR/{train,test}/{image,mask}." type:"path"`
	JSON    bool   `help:"Print the report as one JSON object."`
	Workers int    `help:"Files decoded in parallel (0: one per core)." default:"0"`
}

func (c *DataCheckCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := pipeline.CheckDataset(ctx, c.Dir, pipeline.CheckOptions{Workers: c.Workers})
	if err != nil {
		return err
	}
	if c.JSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Println(string(b))
	} else if err := r.WriteText(os.Stdout); err != nil {
		return err
	}
	if r.Errors > 0 {
		return &exitError{code: 1, err: fmt.Errorf("dataset %s has %d error(s): training refuses it unless --skip-bad, which leaves out the %d bad pair(s)",
			c.Dir, r.Errors, skipped(r))}
	}
	return nil
}

func skipped(r *pipeline.Report) int {
	n := 0
	for _, s := range r.Splits {
		n += s.Skipped
	}
	return n
}
