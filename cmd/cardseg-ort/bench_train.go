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

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
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
	// The device-resident path (what training on a GPU uses).
	DWGrad    string            `name:"dw-grad" help:"Convolution weight-gradient formulation: auto (im2col on CUDA, conv elsewhere), conv, taps, im2col or gather (im2col unfolding by Gather)." enum:"auto,conv,taps,im2col,gather" default:"auto"`
	FP16      bool              `name:"fp16" help:"Mixed-precision train step (FP16 compute, FP32 master weights, dynamic loss scaling)."`
	Resident  bool              `help:"Keep the training state in device memory (always on with --device cuda; on the CPU it tests the same path)."`
	CUDAGraph bool              `name:"cuda-graph" help:"Capture and replay CUDA graphs (CUDA)." default:"true" negatable:""`
	CUDAOpt   map[string]string `name:"cuda-opt" help:"Extra CUDA provider options, e.g. --cuda-opt prefer_nhwc=1."`
	Profile   string            `help:"Write ONNX Runtime's per-node profile (Chrome trace JSON) of the device-resident run to files with this prefix."`
	ORTConfig map[string]string `name:"ort-config" help:"Session configuration entries, e.g. --ort-config session.disable_cpu_ep_fallback=1."`
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
	cfg := c.config(c.Batch)
	cfg.FP16 = c.FP16
	resolved, err := runtime.ResolveProvider(prov)
	if err != nil {
		return err
	}
	switch {
	case c.DWGrad != "auto":
		cfg.DepthwiseWeightGrad = c.DWGrad
	case resolved == runtime.ProviderCUDA:
		cfg.DepthwiseWeightGrad = pipeline.CUDAConvWeightGrad
	}
	if resolved == runtime.ProviderCUDA || c.Resident {
		return c.runDevice(cfg, resolved)
	}
	if c.FP16 {
		log.Warn().Msg("--fp16 on the CPU provider: ORT runs FP16 operators through casts (a correctness path, not a fast one)")
	}
	res, err := pipeline.BenchTrain(cfg, runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads}, c.Warmup, c.Steps, 1)
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

func (c *BenchTrainCmd) runDevice(cfg step.Config, prov runtime.Provider) error {
	opts := runtime.DeviceOptions{Provider: prov, IntraOpThreads: c.Threads, CUDAGraph: c.CUDAGraph && prov == runtime.ProviderCUDA,
		CUDAOptions: c.CUDAOpt, ConfigEntries: c.ORTConfig, ProfilePrefix: c.Profile}
	res, err := pipeline.BenchDeviceTrain(cfg, opts, c.Warmup, c.Steps, 1)
	if err != nil {
		return err
	}
	if c.JSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("train step %dx%dx%d %s on %s (device-resident, CUDA graph %v): median %.2f ms, min %.2f ms, %.1f img/s, device memory %.0f MiB, peak RSS %.0f MiB, skipped %d\n",
		res.Batch, res.Height, res.Width, res.Precision, res.Device, res.CUDAGraph, res.StepMSMedian, res.StepMSMin, res.ImgPerS, res.DeviceMemMB, res.PeakRSSMB, res.Skipped)
	return nil
}
