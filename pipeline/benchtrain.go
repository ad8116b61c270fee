package pipeline

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// BenchTrainResult is one `bench train` measurement.
type BenchTrainResult struct {
	Device       string    `json:"device"`
	ORT          string    `json:"ort_version"`
	Batch        int       `json:"batch"`
	Height       int       `json:"height"`
	Width        int       `json:"width"`
	Threads      int       `json:"threads"`
	Steps        int       `json:"steps"`
	BuildMS      float64   `json:"build_ms"`   // graph generation
	SessionMS    float64   `json:"session_ms"` // ORT session creation
	StepMSMedian float64   `json:"step_ms_median"`
	StepMSMin    float64   `json:"step_ms_min"`
	StepMS       []float64 `json:"step_ms"`
	ImgPerS      float64   `json:"img_per_s"`
	PeakRSSMB    float64   `json:"peak_rss_mb"`
	FinalLoss    float32   `json:"final_loss"`
	// NCHWcBlock is the block size of ORT's blocked CPU kernels the step's depthwise
	// convolutions ran on; 0: standard ONNX operators only.
	NCHWcBlock int64 `json:"nchwc_block"`
}

// BenchTrain times the CPU/GPU train step on random data (after warm-up steps that are not
// counted): the median step time, throughput and the process's peak resident memory.
func BenchTrain(cfg step.Config, opts runtime.SessionOptions, warmup, steps int, seed uint64) (BenchTrainResult, error) {
	if steps < 1 {
		return BenchTrainResult{}, fmt.Errorf("bench train: need at least one step")
	}
	b, err := OpenTrainBench(cfg, opts, seed, false)
	if err != nil {
		return BenchTrainResult{}, err
	}
	defer b.Close()
	if _, err := b.Steps(warmup); err != nil {
		return BenchTrainResult{}, err
	}
	timed, err := b.Steps(steps)
	if err != nil {
		return BenchTrainResult{}, err
	}
	return b.Result(timed), nil
}

// TrainBench is a train step opened on random data and timed a few steps at a time, so a
// caller can interleave it with another measurement (PyTorch's step) in short segments.
type TrainBench struct {
	res  BenchTrainResult
	ts   stepper
	st   *State
	img  []float32
	tgt  []int64
	loss float32
}

// OpenTrainBench builds the train step and its session and the initial state: the resident
// session training uses (state in ORT tensors between steps) or, with resident false, the
// host-memory one (state copied in and out of Go slices every step).
func OpenTrainBench(cfg step.Config, opts runtime.SessionOptions, seed uint64, resident bool) (*TrainBench, error) {
	res := BenchTrainResult{Batch: cfg.Batch, Height: cfg.Height, Width: cfg.Width, Threads: opts.IntraOpThreads}
	st, err := NewState(cfg.Arch, model.Init(cfg.Arch, seed))
	if err != nil {
		return nil, err
	}
	var ts stepper
	t0 := time.Now()
	if resident { // graph generation counts in the session time
		d, err := NewDeviceTrainSession(cfg, runtime.DeviceOptions{Provider: opts.Provider, CUDADevice: opts.CUDADevice, IntraOpThreads: opts.IntraOpThreads,
			DisableMemPattern: opts.DisableMemPattern}, st)
		if err != nil {
			return nil, err
		}
		ts, res.Device, res.NCHWcBlock = d, string(d.Session().Provider()), max(d.cfg.NCHWcBlock, 0)
		res.SessionMS = ms(time.Since(t0))
	} else {
		h, build, err := newTrainSession(cfg, opts)
		if err != nil {
			return nil, err
		}
		ts, res.Device, res.NCHWcBlock = h, string(h.sess.Provider()), max(h.cfg.NCHWcBlock, 0)
		res.BuildMS, res.SessionMS = ms(build), ms(time.Since(t0)-build)
	}
	res.ORT = runtime.Version()
	img, tgt := randomBatch(cfg, seed)
	return &TrainBench{res: res, ts: ts, st: st, img: img, tgt: tgt}, nil
}

// Steps runs n training steps and returns each one's wall time in milliseconds.
func (b *TrainBench) Steps(n int) ([]float64, error) {
	out := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		r, err := b.ts.Step(b.st, b.img, b.tgt, 1e-3)
		if err != nil {
			return out, err
		}
		out = append(out, ms(time.Since(t)))
		b.loss = r.Loss
	}
	return out, nil
}

// Result summarises the given timed steps (median, minimum, throughput, peak memory).
func (b *TrainBench) Result(timed []float64) BenchTrainResult {
	res := b.res
	res.Steps = len(timed)
	res.StepMS = timed
	res.FinalLoss = b.loss
	res.summarize()
	return res
}

// Close releases the session.
func (b *TrainBench) Close() { b.ts.Close() }

// summarize fills the median, minimum, throughput and peak memory from StepMS.
func (res *BenchTrainResult) summarize() {
	res.StepMSMin = slices.Min(res.StepMS)
	res.StepMSMedian = Median(res.StepMS)
	res.ImgPerS = float64(res.Batch) / (res.StepMSMedian / 1000)
	res.PeakRSSMB = PeakRSSMB()
}

// Median is the middle value of xs (the mean of the two middle ones for an even count).
func Median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// randomBatch is a normalised noise image with rectangular "cards" in the target.
func randomBatch(cfg step.Config, seed uint64) ([]float32, []int64) {
	r := rand.New(rand.NewPCG(seed, 11))
	n, h, w := cfg.Batch, cfg.Height, cfg.Width
	img := make([]float32, n*3*h*w)
	for i := range img {
		img[i] = float32(r.NormFloat64())
	}
	tgt := make([]int64, n*h*w)
	for b := 0; b < n; b++ {
		y0, x0 := r.IntN(h/2), r.IntN(w/2)
		for y := y0; y < y0+h/3; y++ {
			for x := x0; x < x0+w/3; x++ {
				tgt[(b*h+y)*w+x] = 1
			}
		}
	}
	return img, tgt
}

// PeakRSSMB is the process's peak resident set size (VmHWM) in MiB, or 0 where /proc is absent.
func PeakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	return 0
}

// BenchDeviceResult is one device-resident `bench train` measurement.
type BenchDeviceResult struct {
	BenchTrainResult
	Precision    string `json:"precision"`     // fp32 or fp16
	CUDAGraph    bool   `json:"cuda_graph"`    // steps replay captured CUDA graphs
	Fused        string `json:"fused"`         // our fused operators in the step (FusedSet)
	DWGrad       string `json:"dw_grad"`       // the depthwise weight-gradient form (step.Config)
	WGradProduct string `json:"wgrad_product"` // the pointwise weight-gradient form (step.Config)
	// Kernels is the CUDA kernel set of the fused operators (runtime.CUDAKernels), when they run
	// on CUDA.
	Kernels string `json:"cuda_kernels,omitempty"`
	// DeviceMemMB is the device memory the session holds after the run (CUDA; the provider's
	// arena only grows, so this is its peak), besides what was in use before it started.
	DeviceMemMB float64 `json:"device_mem_mb"`
	Skipped     int64   `json:"skipped_steps"` // FP16 steps skipped for non-finite gradients
	Options     string  `json:"cuda_options,omitempty"`
	Profile     string  `json:"profile,omitempty"` // ORT profile file (ProfilePrefix)
}

// BenchDeviceTrain times the device-resident train step: state stays on the device, each
// step uploads a batch from pinned staging memory (the next one's upload overlapping the
// current step; two random batches alternate with two bindings, while with one binding, CUDA
// graphs, the one staging slot keeps sending the second) and reads back the loss scalars.
func BenchDeviceTrain(cfg step.Config, opts runtime.DeviceOptions, warmup, steps int, seed uint64) (BenchDeviceResult, error) {
	res := BenchDeviceResult{BenchTrainResult: BenchTrainResult{Batch: cfg.Batch, Height: cfg.Height, Width: cfg.Width,
		Threads: opts.IntraOpThreads, Steps: steps}, Precision: precisionName(cfg), CUDAGraph: opts.CUDAGraph, Fused: fusedSetOf(cfg).String(),
		DWGrad: cfg.DepthwiseWeightGrad, WGradProduct: cfg.WeightGradProduct}
	if len(opts.CUDAOptions) > 0 {
		res.Options = fmt.Sprint(opts.CUDAOptions)
	}
	if opts.Provider == runtime.ProviderCUDA && fusedSetOf(cfg) != (FusedSet{}) {
		res.Kernels = runtime.CUDAKernels()
	}
	if steps < 1 {
		return res, fmt.Errorf("bench train: need at least one step")
	}
	st, err := NewState(cfg.Arch, model.Init(cfg.Arch, seed))
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	ts, err := NewDeviceTrainSession(cfg, opts, st)
	if err != nil {
		return res, err
	}
	defer ts.Close()
	res.SessionMS = ms(time.Since(t0))
	res.Device = string(ts.Session().Provider())
	res.NCHWcBlock = max(ts.cfg.NCHWcBlock, 0)
	res.ORT = runtime.Version()
	var batches [2][2]any
	for i := range batches {
		im, tg := randomBatch(cfg, seed+uint64(i))
		batches[i] = [2]any{im, tg}
	}
	if err := ts.Load(batches[0][0].([]float32), batches[0][1].([]int64)); err != nil {
		return res, err
	}
	filled := 1
	next := func(im []float32, tg []int64) error {
		if filled < 2 { // each slot's staging memory keeps its batch afterwards
			copy(im, batches[filled][0].([]float32))
			copy(tg, batches[filled][1].([]int64))
			filled++
		}
		return nil
	}
	// CARDSEG_CUDA_PROFILE_LAST=1 brackets the last step with cudaProfilerStart/Stop, for a
	// kernel-by-kernel profile of one step (ncu --profile-from-start off).
	profileLast := os.Getenv("CARDSEG_CUDA_PROFILE_LAST") == "1" && ts.Session().Provider() == runtime.ProviderCUDA
	for i := 0; i < warmup+steps; i++ {
		last := i == warmup+steps-1
		if profileLast && last {
			if err := runtime.CUDAProfiler(true); err != nil {
				return res, err
			}
		}
		t := time.Now()
		r, err := ts.Run(st, 1e-3, next)
		if err != nil {
			return res, fmt.Errorf("step %d: %w", i+1, err)
		}
		if profileLast && last {
			if err := runtime.CUDAProfiler(false); err != nil {
				return res, err
			}
		}
		if i >= warmup {
			res.StepMS = append(res.StepMS, ms(time.Since(t)))
		}
		res.FinalLoss = r.Loss
	}
	res.summarize()
	res.DeviceMemMB = float64(ts.Session().MemoryInUse()) / (1 << 20)
	res.Skipped = ts.Skipped
	if opts.ProfilePrefix != "" {
		if res.Profile, err = ts.Session().EndProfiling(); err != nil {
			return res, err
		}
	}
	return res, nil
}

func precisionName(c step.Config) string {
	if c.FP16 {
		return "fp16"
	}
	return "fp32"
}
