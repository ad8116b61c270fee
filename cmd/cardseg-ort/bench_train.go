package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	goruntime "runtime"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// BenchTrainCmd times the train step on random data.
type BenchTrainCmd struct {
	Batch   int    `help:"Batch size." default:"8"`
	Threads int    `help:"ORT intra-op threads (0: ORT's default)." default:"0"`
	Steps   int    `help:"Timed steps." default:"10"`
	Warmup  int    `help:"Untimed warm-up steps." default:"2"`
	Device  string `help:"auto, cpu or cuda." default:"cpu"`
	JSON    bool   `help:"Print one JSON line."`
	// CompareTorch runs PyTorch's CPU step with the same settings first, in the same command,
	// and reports the ratio (this machine is shared and noisy: only same-run ratios mean much).
	CompareTorch bool   `name:"compare-torch" help:"Also time PyTorch's training step (needs python3 with torch and torchvision) and report the ratio."`
	Python       string `help:"Python for --compare-torch." default:"/usr/bin/python3"`
	netFlags
}

//go:embed baselines/torch_train_step.py
var torchTrainStep []byte

// torchResult is the baseline script's JSON line.
type torchResult struct {
	Torch        string  `json:"torch"`
	StepMSMedian float64 `json:"step_ms_median"`
	StepMSMin    float64 `json:"step_ms_min"`
	ImgPerS      float64 `json:"img_per_s"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
}

func (c *BenchTrainCmd) runTorch() (*torchResult, error) {
	dir, err := os.MkdirTemp("", "cardseg-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "torch_train_step.py")
	if err := os.WriteFile(script, torchTrainStep, 0o644); err != nil {
		return nil, err
	}
	threads := c.Threads
	if threads == 0 {
		threads = goruntime.NumCPU()
	}
	out, err := exec.Command(c.Python, script, fmt.Sprint(c.Batch), fmt.Sprint(c.Height), fmt.Sprint(c.Width),
		fmt.Sprint(threads), fmt.Sprint(c.Steps), fmt.Sprint(c.Warmup)).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return nil, fmt.Errorf("PyTorch baseline (%s): %s", c.Python, msg)
	}
	var r torchResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("PyTorch baseline printed %q", out)
	}
	return &r, nil
}

func (c *BenchTrainCmd) Run(log *zerolog.Logger) error {
	prov, err := runtime.ParseProvider(c.Device)
	if err != nil {
		return err
	}
	var torch *torchResult
	if c.CompareTorch {
		log.Info().Msg("timing PyTorch's training step")
		if torch, err = c.runTorch(); err != nil {
			return err
		}
	}
	log.Info().Int("batch", c.Batch).Int("height", c.Height).Int("width", c.Width).Int("threads", c.Threads).Msg("benchmarking the train step")
	res, err := pipeline.BenchTrain(c.config(c.Batch), runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads}, c.Warmup, c.Steps, 1)
	if err != nil {
		return err
	}
	out := struct {
		pipeline.BenchTrainResult
		Torch *torchResult `json:"pytorch,omitempty"`
		Ratio float64      `json:"ratio_vs_pytorch,omitempty"` // our median step time / PyTorch's
	}{BenchTrainResult: res, Torch: torch}
	if torch != nil && torch.StepMSMedian > 0 {
		out.Ratio = res.StepMSMedian / torch.StepMSMedian
	}
	if c.JSON {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return nil
	}
	if torch != nil {
		fmt.Printf("PyTorch %s: median %.1f ms, %.1f img/s, peak RSS %.0f MiB; ratio (ours/PyTorch) %.2f\n", torch.Torch, torch.StepMSMedian, torch.ImgPerS, torch.PeakRSSMB, out.Ratio)
	}
	fmt.Printf("train step %dx%dx%d on %s (%d threads): median %.1f ms, min %.1f ms, %.1f img/s, peak RSS %.0f MiB (graph %.0f ms, session %.0f ms)\n",
		res.Batch, res.Height, res.Width, res.Device, res.Threads, res.StepMSMedian, res.StepMSMin, res.ImgPerS, res.PeakRSSMB, res.BuildMS, res.SessionMS)
	return nil
}
