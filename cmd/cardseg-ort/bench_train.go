package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

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
	DWGrad       string            `name:"dw-grad" help:"Convolution weight-gradient formulation: auto (on CUDA fused with FP16 and --fused, else gather; elsewhere conv for grouped and im2col for dense convolutions), conv, taps, im2col, gather (im2col unfolding by Gather) or fused (FP16: our kernel for depthwise layers)." enum:"auto,conv,taps,im2col,gather,fused" default:"auto"`
	WGradProduct string            `name:"wgrad-product" help:"The product in the weight gradients of 1×1 layers and of the stem (with --dw-grad gather or fused): auto (blockdiag for FP16 on CUDA, as training uses, else batched), batched (a MatMul per image, summed; the stem's over transposed copies) or blockdiag (one MatMul of the whole batch, its diagonal blocks summed, where the product is small and the reduction long: N²·Cout·Cin·k² ≤ 2^18 and H·W ≥ 4096)." enum:"auto,batched,blockdiag" default:"auto"`
	StandardOps  bool              `name:"standard-ops" help:"CPU: build the step from standard ONNX operators only, without ONNX Runtime's blocked (NCHWc) kernels for depthwise convolutions (slower; what a non-x86 CPU gets)."`
	FP16         bool              `name:"fp16" help:"Mixed-precision train step (FP16 compute, FP32 master weights, dynamic loss scaling)."`
	Resident     bool              `help:"Keep the training state in ONNX Runtime tensors between steps, as training does (always on with --device cuda); --no-resident times the host-memory session, which copies the state in and out every step." default:"true" negatable:""`
	CUDAGraph    bool              `name:"cuda-graph" help:"Capture and replay CUDA graphs (CUDA)." default:"true" negatable:""`
	Fused        string            `name:"fused" help:"FP16 on CUDA: our fused CUDA operators, all, none, or a list of bn, act, dwconv, dwgrad, se, pack, adam, loss; default: CARDSEG_FUSED_OPS, as training reads it, else all."`
	CUDAOpt      map[string]string `name:"cuda-opt" help:"Extra CUDA provider options, e.g. --cuda-opt prefer_nhwc=1."`
	Profile      string            `help:"Write ONNX Runtime's per-node profile (Chrome trace JSON) of the device-resident run to files with this prefix."`
	ORTConfig    map[string]string `name:"ort-config" help:"Session configuration entries, e.g. --ort-config session.disable_cpu_ep_fallback=1."`
	// CompareTorch times PyTorch's CPU step with the same settings in the same command,
	// alternating with ours in short segments so that both see the same machine noise, and
	// reports the median of the per-segment ratios (a shared machine's speed drifts by ±20%
	// within minutes; only such interleaved ratios mean much).
	CompareTorch bool   `name:"compare-torch" help:"Also time PyTorch's training step (needs python3 with torch and torchvision), alternating with ours, and report the ratio."`
	Segment      int    `help:"With --compare-torch: steps per segment (each side runs this many, then the other)." default:"2"`
	Python       string `help:"Python for --compare-torch." default:"/usr/bin/python3"`
	TorchPreload string `name:"torch-preload" help:"With --compare-torch: LD_PRELOAD for the PyTorch process only, e.g. /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 (PyTorch is faster with tcmalloc)."`
	netFlags
}

//go:embed baselines/torch_train_step.py
var torchTrainStep []byte

// torchResult is PyTorch's side of an interleaved comparison.
type torchResult struct {
	Torch        string    `json:"torch"`
	Preload      string    `json:"ld_preload,omitempty"`
	StepMSMedian float64   `json:"step_ms_median"`
	StepMSMin    float64   `json:"step_ms_min"`
	StepMS       []float64 `json:"step_ms"`
	ImgPerS      float64   `json:"img_per_s"`
	PeakRSSMB    float64   `json:"peak_rss_mb"`
}

// segment is one round of the interleaved comparison.
type segment struct {
	OursMS  float64 `json:"ours_ms"`  // median of our steps in the round
	TorchMS float64 `json:"torch_ms"` // median of PyTorch's
	Ratio   float64 `json:"ratio"`    // ours / PyTorch
}

// torchServer is the baseline script in serve mode: it has built and warmed up PyTorch's
// model and runs N steps for each line N it reads.
type torchServer struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	stderr  *bytes.Buffer
	dir     string
	version string
}

func (c *BenchTrainCmd) startTorch() (*torchServer, error) {
	dir, err := os.MkdirTemp("", "cardseg-bench-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "torch_train_step.py")
	if err := os.WriteFile(script, torchTrainStep, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	threads := c.Threads
	if threads == 0 {
		threads = goruntime.NumCPU()
	}
	cmd := exec.Command(c.Python, script, fmt.Sprint(c.Batch), fmt.Sprint(c.Height), fmt.Sprint(c.Width),
		fmt.Sprint(threads), "0", fmt.Sprint(c.Warmup))
	if c.TorchPreload != "" {
		if _, err := os.Stat(c.TorchPreload); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("--torch-preload: %w", err)
		}
		cmd.Env = append(os.Environ(), "LD_PRELOAD="+c.TorchPreload)
	}
	t := &torchServer{cmd: cmd, dir: dir, stderr: &bytes.Buffer{}}
	cmd.Stderr = t.stderr
	if t.in, err = cmd.StdinPipe(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t.out = bufio.NewScanner(stdout)
	t.out.Buffer(make([]byte, 1<<16), 1<<20)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("PyTorch baseline (%s): %w", c.Python, err)
	}
	var ready struct {
		Ready bool   `json:"ready"`
		Torch string `json:"torch"`
	}
	if err := t.read(&ready); err != nil {
		t.kill()
		return nil, err
	}
	t.version = ready.Torch
	return t, nil
}

// read decodes the next JSON line, or reports how the script failed.
func (t *torchServer) read(v any) error {
	if !t.out.Scan() {
		t.cmd.Wait()
		msg := strings.TrimSpace(t.stderr.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:] // the exception line of a traceback
		}
		return fmt.Errorf("PyTorch baseline (%s) stopped: %s", t.cmd.Path, msg)
	}
	if err := json.Unmarshal(t.out.Bytes(), v); err != nil {
		return fmt.Errorf("PyTorch baseline printed %q", t.out.Text())
	}
	return nil
}

func (t *torchServer) steps(n int) ([]float64, error) {
	if _, err := fmt.Fprintln(t.in, n); err != nil {
		return nil, fmt.Errorf("PyTorch baseline: %w", err)
	}
	var r struct {
		StepMS []float64 `json:"step_ms"`
	}
	if err := t.read(&r); err != nil {
		return nil, err
	}
	if len(r.StepMS) != n {
		return nil, fmt.Errorf("PyTorch baseline ran %d steps, asked for %d", len(r.StepMS), n)
	}
	return r.StepMS, nil
}

// finish ends the script and returns its peak resident memory.
func (t *torchServer) finish() (float64, error) {
	defer os.RemoveAll(t.dir)
	t.in.Close()
	var r struct {
		PeakRSSMB float64 `json:"peak_rss_mb"`
	}
	err := t.read(&r)
	t.cmd.Wait()
	return r.PeakRSSMB, err
}

func (t *torchServer) kill() {
	t.cmd.Process.Kill()
	t.cmd.Wait()
	os.RemoveAll(t.dir)
}

// compareTorch runs ours and PyTorch's step in alternating segments of c.Segment steps each
// (who goes first alternates too), pausing between them so that neither side's spinning
// worker threads eat into the other's time, until each has run c.Steps timed steps.
func (c *BenchTrainCmd) compareTorch(log *zerolog.Logger, cfg step.Config, opts runtime.SessionOptions) error {
	if c.Segment < 1 {
		return fmt.Errorf("--segment must be at least 1")
	}
	log.Info().Msg("starting PyTorch's training step (model build and warm-up)")
	torch, err := c.startTorch()
	if err != nil {
		return err
	}
	defer func() {
		if torch != nil {
			torch.kill()
		}
	}()
	log.Info().Int("batch", c.Batch).Int("height", c.Height).Int("width", c.Width).Int("threads", c.Threads).Msg("benchmarking the train step against PyTorch's, alternating")
	ours, err := pipeline.OpenTrainBench(cfg, opts, 1, c.Resident)
	if err != nil {
		return err
	}
	defer ours.Close()
	if _, err := ours.Steps(c.Warmup); err != nil {
		return err
	}
	var ourAll, torchAll []float64
	var segs []segment
	pause := func() { time.Sleep(300 * time.Millisecond) }
	for r := 0; len(ourAll) < c.Steps; r++ {
		n := min(c.Segment, c.Steps-len(ourAll))
		var o, p []float64
		for k := 0; k < 2; k++ {
			pause()
			if (r+k)%2 == 0 {
				o, err = ours.Steps(n)
			} else {
				p, err = torch.steps(n)
			}
			if err != nil {
				return err
			}
		}
		ourAll, torchAll = append(ourAll, o...), append(torchAll, p...)
		sg := segment{OursMS: pipeline.Median(o), TorchMS: pipeline.Median(p)}
		sg.Ratio = sg.OursMS / sg.TorchMS
		segs = append(segs, sg)
		log.Debug().Float64("ours_ms", sg.OursMS).Float64("torch_ms", sg.TorchMS).Float64("ratio", sg.Ratio).Msg("segment")
	}
	res := ours.Result(ourAll)
	tr := &torchResult{Torch: torch.version, Preload: c.TorchPreload, StepMS: torchAll, StepMSMedian: pipeline.Median(torchAll)}
	tr.StepMSMin = slices.Min(torchAll)
	tr.ImgPerS = float64(c.Batch) / (tr.StepMSMedian / 1000)
	t := torch
	torch = nil
	if tr.PeakRSSMB, err = t.finish(); err != nil {
		return err
	}
	ratios := make([]float64, len(segs))
	for i, sg := range segs {
		ratios[i] = sg.Ratio
	}
	out := struct {
		pipeline.BenchTrainResult
		Torch    *torchResult `json:"pytorch"`
		Segments []segment    `json:"segments"`
		Ratio    float64      `json:"ratio_vs_pytorch"` // median over segments of ours/PyTorch
	}{res, tr, segs, pipeline.Median(ratios)}
	if c.JSON {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("PyTorch %s: median %.1f ms, min %.1f ms, %.1f img/s, peak RSS %.0f MiB\n", tr.Torch, tr.StepMSMedian, tr.StepMSMin, tr.ImgPerS, tr.PeakRSSMB)
	fmt.Printf("ours (ONNX Runtime %s, %s): median %.1f ms, min %.1f ms, %.1f img/s, peak RSS %.0f MiB\n", res.ORT, res.Device, res.StepMSMedian, res.StepMSMin, res.ImgPerS, res.PeakRSSMB)
	fmt.Printf("ratio ours/PyTorch: %.3f (median of %d alternating segments of %d steps)\n", out.Ratio, len(segs), c.Segment)
	return nil
}

func (c *BenchTrainCmd) Run(log *zerolog.Logger) error {
	prov, err := runtime.ParseProvider(c.Device)
	if err != nil {
		return err
	}
	cfg := c.config(c.Batch)
	cfg.FP16 = c.FP16
	if c.StandardOps {
		cfg.NCHWcBlock = -1
	}
	resolved, err := runtime.ResolveProvider(prov)
	if err != nil {
		return err
	}
	if c.DWGrad != "auto" {
		cfg.DepthwiseWeightGrad = c.DWGrad
	}
	if c.WGradProduct != "auto" {
		cfg.WeightGradProduct = c.WGradProduct
	}
	fusedFlag, fusedSrc := c.Fused, "--fused"
	if fusedFlag == "" {
		fusedFlag, fusedSrc = os.Getenv(pipeline.EnvFusedOps), pipeline.EnvFusedOps
	}
	fused, err := pipeline.ParseFusedSet(fusedFlag)
	if err != nil {
		return fmt.Errorf("%s: %w", fusedSrc, err)
	}
	pipeline.ForProvider(&cfg, resolved, fused)
	if c.CompareTorch && (resolved != runtime.ProviderCPU || c.FP16) {
		return fmt.Errorf("--compare-torch compares the FP32 CPU step (PyTorch's baseline runs on the CPU): drop --device cuda and --fp16")
	}
	if c.FP16 && resolved == runtime.ProviderCPU {
		log.Warn().Msg("--fp16 on the CPU provider: ORT runs FP16 operators through casts (a correctness path, not a fast one)")
	}
	opts := runtime.SessionOptions{Provider: prov, IntraOpThreads: c.Threads}
	if c.CompareTorch {
		return c.compareTorch(log, cfg, opts)
	}
	if resolved == runtime.ProviderCUDA || c.Resident || c.FP16 {
		return c.runDevice(cfg, resolved)
	}
	log.Info().Int("batch", c.Batch).Int("height", c.Height).Int("width", c.Width).Int("threads", c.Threads).Msg("benchmarking the train step")
	res, err := pipeline.BenchTrain(cfg, opts, c.Warmup, c.Steps, 1)
	if err != nil {
		return err
	}
	if c.JSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return nil
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
