package pipeline

import (
	"fmt"
	"os"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// CUDAConvWeightGrad is the convolution weight-gradient formulation (graphs.GradOptions) the
// training step uses on the CUDA provider: cuDNN runs the default formulation's
// feature-map-sized kernels very slowly (FP16 train step at batch 8, 480×640 on an H200: 715 ms
// with "conv", 131 ms with "taps"), and the unfolded-patches MatMul avoids them. The patches are
// unfolded by Gather: on an H100 the step took 30.9 ms with it against 42.8 ms with cuDNN's
// one-hot convolution ("im2col"), same sitting.
const CUDAConvWeightGrad = "gather"

// CUDAWeightGradProduct is the product in the FP16 step's weight gradients of the stem and
// the thin 1×1 layers on the CUDA provider (graphs.GradOptions.WeightGradProduct): one MatMul
// of the whole batch, its diagonal blocks kept, instead of a thin MatMul per image. FP16 train
// step at batch 8, 480×640 on an H100, same sitting: 7.62 ms against 7.81 ms with "batched".
const CUDAWeightGradProduct = "blockdiag"

// EnvFusedOps chooses our fused operators for the FP16 step on the GPU (FusedOps): unset or
// "all" for all of them, "none" or "0" for ONNX operators alone, or a comma-separated list of
// FusedSet's names.
const EnvFusedOps = "CARDSEG_FUSED_OPS"

// FusedSet names the fused operators a train step uses. They replace chains of ONNX nodes
// that make mostly memory-bound passes over the activations:
//   - bn: batch norm in training mode (step.Config.FusedBN; about fifteen full-size passes per
//     layer and direction in ONNX operators, float32 casts included);
//   - act: the ReLU or HardSwish after it, inside the same operators (FusedActivation; needs bn);
//   - dwconv: depthwise convolutions and their input gradients (FusedDepthwise), whose weight
//     gradients are then ours as well;
//   - dwgrad: the depthwise weight gradient of ONNX convolutions (DepthwiseWeightGrad "fused",
//     instead of k² unfolded copies of the input);
//   - se: the squeeze-and-excitation blocks' scale (FusedSE), whose backward takes two
//     full-size passes instead of four kernels and eight passes;
//   - pack: the optimizer's packing of parameters and gradients and the float16 copies of the
//     weights (FusedPack), instead of a Cast per tensor each way, Concats and Splits;
//   - adam: AdamW in one pass (FusedAdam), instead of about twenty element-wise nodes;
//   - loss: the loss's sums and their gradient (FusedLoss), instead of about forty
//     full-resolution float32 passes.
type FusedSet struct{ BN, Act, DWConv, DWGrad, SE, Pack, Adam, Loss bool }

// AllFused is every fused operator: the default for FP16 on CUDA.
var AllFused = FusedSet{BN: true, Act: true, DWConv: true, DWGrad: true, SE: true, Pack: true, Adam: true, Loss: true}

// ParseFusedSet reads "all", "none" (or "0"), or a comma-separated list of bn, act, dwconv,
// dwgrad, se, pack, adam and loss.
func ParseFusedSet(s string) (FusedSet, error) {
	switch strings.TrimSpace(s) {
	case "", "all", "1":
		return AllFused, nil
	case "none", "0":
		return FusedSet{}, nil
	}
	var f FusedSet
	for _, name := range strings.Split(s, ",") {
		switch strings.TrimSpace(name) {
		case "bn":
			f.BN = true
		case "act":
			f.Act = true
		case "dwconv":
			f.DWConv = true
		case "dwgrad":
			f.DWGrad = true
		case "se":
			f.SE = true
		case "pack":
			f.Pack = true
		case "adam":
			f.Adam = true
		case "loss":
			f.Loss = true
		default:
			return FusedSet{}, fmt.Errorf("fused operators %q: unknown name %q (want all, none, or a list of bn, act, dwconv, dwgrad, se, pack, adam, loss)", s, name)
		}
	}
	if f.Act && !f.BN {
		return FusedSet{}, fmt.Errorf("fused operators %q: act is fused into bn, so it needs bn", s)
	}
	return f, nil
}

// String is the set as ParseFusedSet reads it.
func (f FusedSet) String() string {
	var names []string
	for _, n := range []struct {
		on   bool
		name string
	}{{f.BN, "bn"}, {f.Act, "act"}, {f.DWConv, "dwconv"}, {f.DWGrad, "dwgrad"}, {f.SE, "se"}, {f.Pack, "pack"}, {f.Adam, "adam"}, {f.Loss, "loss"}} {
		if n.on {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// FusedOps is the set of fused operators a train step on provider p uses: those CARDSEG_FUSED_OPS
// names (all by default) for FP16 on CUDA, none otherwise.
func FusedOps(p runtime.Provider, fp16 bool) (FusedSet, error) {
	if !fp16 || p != runtime.ProviderCUDA {
		return FusedSet{}, nil
	}
	f, err := ParseFusedSet(os.Getenv(EnvFusedOps))
	if err != nil {
		return FusedSet{}, fmt.Errorf("%s: %w", EnvFusedOps, err)
	}
	return f, nil
}

// fusedSetOf is the set of fused operators cfg uses.
func fusedSetOf(cfg step.Config) FusedSet {
	return FusedSet{BN: cfg.FusedBN, Act: cfg.FusedActivation, DWConv: cfg.FusedDepthwise, DWGrad: cfg.DepthwiseWeightGrad == "fused", SE: cfg.FusedSE, Pack: cfg.FusedPack, Adam: cfg.FusedAdam, Loss: cfg.FusedLoss}
}

// UseFusedOps sets cfg to use the fused operators in f, leaving an explicitly chosen depthwise
// weight-gradient form alone.
func UseFusedOps(cfg *step.Config, f FusedSet) {
	cfg.FusedBN = f.BN
	cfg.FusedActivation = f.Act
	cfg.FusedDepthwise = f.DWConv
	cfg.FusedSE = f.SE
	cfg.FusedPack = f.Pack
	cfg.FusedAdam = f.Adam
	cfg.FusedLoss = f.Loss
	if f.DWGrad && cfg.DepthwiseWeightGrad == "" {
		cfg.DepthwiseWeightGrad = "fused"
	}
}

// ForProvider fills the step choices that depend on the provider p: on CUDA the fused
// operators in f and the weight-gradient product (FP16 only), and the CUDA depthwise
// weight-gradient form, where none is chosen. The trainer, `bench train` and the tests
// configure CUDA steps through it.
func ForProvider(cfg *step.Config, p runtime.Provider, f FusedSet) {
	if p != runtime.ProviderCUDA {
		return
	}
	if cfg.FP16 {
		UseFusedOps(cfg, f)
		if cfg.WeightGradProduct == "" {
			cfg.WeightGradProduct = CUDAWeightGradProduct
		}
	}
	if cfg.DepthwiseWeightGrad == "" {
		cfg.DepthwiseWeightGrad = CUDAConvWeightGrad
	}
}

// stepper is what the trainer drives: the host-memory TrainSession (CPU) or the
// device-resident DeviceTrainSession (GPU).
type stepper interface {
	// Step trains on one batch with learning rate lr and advances st (for a device session
	// only st.Step and the counters: the tensors stay on the device until Pull).
	Step(st *State, image []float32, target []int64, lr float32) (StepResult, error)
	// Pull brings device-resident state into st; Push sends st's tensors to the device.
	Pull(st *State) error
	Push(st *State) error
	Close() error
}

// Pull and Push are no-ops for the host session: its state always lives in st.
func (t *TrainSession) Pull(*State) error { return nil }
func (t *TrainSession) Push(*State) error { return nil }

// EnvStateCopy, set to 1, makes a device train session without CUDA graphs use the one
// binding and the state copy-back of the CUDA-graph path (for testing it on the CPU).
const EnvStateCopy = "CARDSEG_STATE_COPY"

const (
	inLossScale     = step.InputLossScale
	inLossScaleGood = step.InputLossScaleGood
	outFoundInf     = step.OutFoundInf
)

// DeviceTrainSession runs the train step with every state tensor — parameters, batch-norm
// buffers, AdamW moments, and in the FP16 step the loss scale and step counter — resident in
// device memory. State lives in two sets of tensors, each laid out in one block. Without CUDA
// graphs the steps alternate between two bindings: binding 0 reads set 0 and writes set 1,
// binding 1 the reverse, so nothing is copied. With CUDA graphs there is one binding, hence
// one captured graph: it reads set 0 and writes set 1, which is copied back in one transfer
// (about 40 MB, tens of microseconds on an H100). Two graphs in one session are unsafe with
// ONNX Runtime 1.29: its CUDA Concat and Split stage their pointer tables in pinned host
// blocks that are recycled once a capture ends, and a graph's replay reads whatever the block
// then holds — the tables of the graph captured after it (onnxruntime#32121, fixed after
// 1.29). The train step's parameter packing is such a Concat, over tensors that differ
// between the sets. Only the batch, the learning rate and a few result scalars cross PCIe; the
// batch of the next step uploads while the current one computes (Load).
type DeviceTrainSession struct {
	cfg     step.Config
	sess    *runtime.DeviceSession
	state   []string // inputs carried to the next step through <name>.next
	set     [2]map[string]*runtime.DeviceTensor
	block   [2]*runtime.DeviceTensor // each set's tensors, laid out in one allocation
	image   [2]*runtime.DeviceTensor
	target  [2]*runtime.DeviceTensor
	stage   [2][2]*runtime.HostBuffer // [slot][image, target]
	loaded  [2]bool
	scalars map[string]*runtime.DeviceTensor // lr, step (when fed), param_mask
	results map[string]*runtime.DeviceTensor // loss, loss_ce, loss_dice, grad_norm, found_inf
	bind    [2]*runtime.Binding
	k       int // parity of the next step: it reads set k (ping-pong)
	stepFed bool
	Skipped int64 // steps whose update was skipped (non-finite FP16 gradients)
	// oneBinding: a single binding reads set 0 and image/target slot 0 and writes set 1,
	// which is copied back after each step; batches upload into slot 1 and are copied into
	// slot 0 before the step (device to device). Always with CUDA graphs (one captured graph
	// per session); CARDSEG_STATE_COPY=1 selects it without them.
	oneBinding bool
}

// NewDeviceTrainSession builds the train step for cfg, opens it on the device and uploads st.
func NewDeviceTrainSession(cfg step.Config, opts runtime.DeviceOptions, st *State) (*DeviceTrainSession, error) {
	cfg = cpuKernels(cfg, opts.Provider)
	opts.CustomOps = opts.CustomOps || cfg.CustomOps()
	opts.DisableMemPattern = opts.DisableMemPattern || noMemPattern(opts.Provider)
	b, err := trainStepModel(cfg, opts.Provider)
	if err != nil {
		return nil, err
	}
	sess, err := runtime.NewDeviceSession("train_step", b, opts)
	if err != nil {
		return nil, err
	}
	d := &DeviceTrainSession{cfg: cfg, sess: sess, scalars: map[string]*runtime.DeviceTensor{},
		results: map[string]*runtime.DeviceTensor{}, oneBinding: opts.CUDAGraph || os.Getenv(EnvStateCopy) == "1"}
	if err := d.allocate(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.Push(st); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *DeviceTrainSession) allocate() error {
	s := d.sess
	outs := map[string]bool{}
	for _, o := range s.Outputs() {
		outs[o.Name] = true
	}
	var stateInfo []runtime.IOInfo
	for _, in := range s.Inputs() {
		var err error
		switch {
		case outs[step.Next(in.Name)]:
			d.state = append(d.state, in.Name)
			stateInfo = append(stateInfo, in)
		case in.Name == step.InputImage || in.Name == step.InputTarget:
			for i := 0; i < 2; i++ {
				t, err := s.NewTensorFor(in.Name)
				if err != nil {
					return err
				}
				if in.Name == step.InputImage {
					d.image[i] = t
				} else {
					d.target[i] = t
				}
			}
		default:
			if d.scalars[in.Name], err = s.NewTensorFor(in.Name); err != nil {
				return err
			}
			if in.Name == step.InputStep {
				d.stepFed = true
			}
		}
	}
	if d.image[0] == nil || d.target[0] == nil {
		return fmt.Errorf("train step: the graph has no %s/%s inputs", step.InputImage, step.InputTarget)
	}
	for i := range d.set {
		block, views, err := s.NewTensorBlock(stateInfo)
		if err != nil {
			return err
		}
		d.block[i], d.set[i] = block, map[string]*runtime.DeviceTensor{}
		for j, n := range d.state {
			d.set[i][n] = views[j]
		}
	}
	for i := 0; i < 2; i++ {
		if d.oneBinding && i == 0 {
			continue // batches upload into slot 1 only
		}
		for j, t := range []*runtime.DeviceTensor{d.image[i], d.target[i]} {
			hb, err := s.NewHostBuffer(t.Bytes())
			if err != nil {
				return err
			}
			d.stage[i][j] = hb
		}
	}
	for _, o := range s.Outputs() {
		if strings.HasSuffix(o.Name, ".next") && contains(d.state, strings.TrimSuffix(o.Name, ".next")) {
			continue
		}
		t, err := s.NewTensorFor(o.Name)
		if err != nil {
			return err
		}
		d.results[o.Name] = t
	}
	bindings := 2
	if d.oneBinding {
		bindings = 1
	}
	for i := 0; i < bindings; i++ {
		in := map[string]*runtime.DeviceTensor{step.InputImage: d.image[i], step.InputTarget: d.target[i]}
		out := map[string]*runtime.DeviceTensor{}
		for n, t := range d.scalars {
			in[n] = t
		}
		for _, n := range d.state {
			in[n], out[step.Next(n)] = d.set[i][n], d.set[1-i][n]
		}
		for n, t := range d.results {
			out[n] = t
		}
		b, err := s.NewBinding(i, in, out)
		if err != nil {
			return err
		}
		d.bind[i] = b
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// current is the tensor holding state n for the next step.
func (d *DeviceTrainSession) current(n string) *runtime.DeviceTensor { return d.set[d.k][n] }

// Session is the underlying device session (memory use, profiling).
func (d *DeviceTrainSession) Session() *runtime.DeviceSession { return d.sess }

// Close releases the staging buffers and the session.
func (d *DeviceTrainSession) Close() error {
	_ = d.sess.WaitUploads()
	for i := range d.stage {
		for _, b := range d.stage[i] {
			if b != nil {
				b.Free()
			}
		}
	}
	return d.sess.Close()
}

// stateTensor returns st's host copy of a state tensor as a runtime tensor over st's memory.
func (d *DeviceTrainSession) hostState(st *State, name string, shape []int64) (*runtime.Tensor, error) {
	switch name {
	case step.InputMomentM:
		return runtime.New(shape, st.M)
	case step.InputMomentV:
		return runtime.New(shape, st.V)
	case inLossScale:
		if st.LossScale <= 0 {
			st.LossScale = d.cfg.LossScale.WithDefaults().Init
		}
		return runtime.New(shape, []float32{st.LossScale})
	case inLossScaleGood:
		return runtime.New(shape, []float32{st.LossScaleGood})
	case step.InputStep:
		return runtime.New(shape, []float32{float32(st.Step + 1)})
	}
	w, ok := st.Weights.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("train step: state %s is not in the weights", name)
	}
	return runtime.New(shape, w)
}

// Push uploads st (weights, BN buffers, moments, loss scale, step, mask) into the set the
// next step reads.
func (d *DeviceTrainSession) Push(st *State) error {
	for _, n := range d.state {
		t := d.current(n)
		h, err := d.hostState(st, n, t.Shape)
		if err != nil {
			return err
		}
		if err := t.Upload(h); err != nil {
			return err
		}
	}
	if m, ok := d.scalars[step.InputParamMask]; ok {
		if len(st.Mask) != len(st.M) {
			return fmt.Errorf("train step: the graph is masked but the state has %d mask values for %d parameters", len(st.Mask), len(st.M))
		}
		if err := m.Upload(runtime.MustNew(m.Shape, st.Mask)); err != nil {
			return err
		}
	}
	return nil
}

// Pull downloads the current state into st.
func (d *DeviceTrainSession) Pull(st *State) error {
	for _, n := range d.state {
		t := d.current(n)
		switch n {
		case inLossScale, inLossScaleGood, step.InputStep:
			h, err := t.Fetch()
			if err != nil {
				return err
			}
			v := runtime.Data[float32](h)[0]
			switch n {
			case inLossScale:
				st.LossScale = v
			case inLossScaleGood:
				st.LossScaleGood = v
			default:
				st.Step = int64(v) - 1
			}
			continue
		}
		h, err := d.hostState(st, n, t.Shape)
		if err != nil {
			return err
		}
		if err := t.Download(h); err != nil {
			return err
		}
	}
	return nil
}

// Load stages a batch and starts its upload into the slot of the next step that has no
// batch yet; it returns before the copy finishes.
func (d *DeviceTrainSession) Load(image []float32, target []int64) error {
	return d.load(func(im []float32, tg []int64) error {
		if len(image) != len(im) || len(target) != len(tg) {
			return fmt.Errorf("train step: batch of %d image values and %d labels, the graph takes %d and %d",
				len(image), len(target), len(im), len(tg))
		}
		copy(im, image)
		copy(tg, target)
		return nil
	})
}

// Fill writes a batch into the staging memory it is handed (pinned host memory with CUDA,
// uploaded from there without another copy). The memory keeps what was last written to it:
// a Fill that writes nothing re-sends that slot's previous batch.
type Fill func(image []float32, target []int64) error

func (d *DeviceTrainSession) load(fill Fill) error {
	slot := d.k
	switch {
	case d.oneBinding:
		slot = 1
		if d.loaded[slot] {
			return fmt.Errorf("train step: two batches are already loaded")
		}
	case d.loaded[slot]:
		slot = 1 - d.k
		if d.loaded[slot] {
			return fmt.Errorf("train step: two batches are already loaded")
		}
	}
	ib, tb := d.stage[slot][0], d.stage[slot][1]
	if err := fill(ib.Float32s(), tb.Int64s()); err != nil {
		return err
	}
	if err := d.image[slot].UploadAsync(ib); err != nil {
		return err
	}
	if err := d.target[slot].UploadAsync(tb); err != nil {
		return err
	}
	d.loaded[slot] = true
	return nil
}

// take makes the loaded batch this step's input: it waits for its upload and, with one
// binding, copies it from slot 1 into the bound slot 0, which frees slot 1 for the next batch.
func (d *DeviceTrainSession) take() error {
	if d.oneBinding {
		if !d.loaded[1] {
			return fmt.Errorf("train step: no batch loaded")
		}
	} else {
		if !d.loaded[d.k] {
			return fmt.Errorf("train step: no batch loaded")
		}
		if d.loaded[1-d.k] {
			return fmt.Errorf("train step: the next batch was loaded before this one ran; pass it to Run instead")
		}
	}
	// This step's batch must have arrived before the next upload is queued behind it.
	if err := d.sess.WaitUploads(); err != nil {
		return err
	}
	if !d.oneBinding {
		return nil
	}
	if err := d.image[0].CopyFromAsync(d.image[1]); err != nil {
		return err
	}
	if err := d.target[0].CopyFromAsync(d.target[1]); err != nil {
		return err
	}
	if err := d.sess.WaitUploads(); err != nil {
		return err
	}
	d.loaded[1] = false
	return nil
}

// Run trains on the batch loaded for this step. With next, the following batch is staged
// and its upload started while the step runs, so both the host copy and the upload overlap
// the computation; next may read memory that must stay valid until Run returns.
func (d *DeviceTrainSession) Run(st *State, lr float32, next Fill) (StepResult, error) {
	if err := d.take(); err != nil {
		return StepResult{}, err
	}
	if err := d.scalars[step.InputLR].Upload(runtime.Scalar(lr)); err != nil {
		return StepResult{}, err
	}
	if d.stepFed {
		if err := d.scalars[step.InputStep].Upload(runtime.Scalar(float32(st.Step + 1))); err != nil {
			return StepResult{}, err
		}
	}
	// The next batch is staged (a host copy into pinned memory) and its upload queued on the
	// copy stream by another goroutine while this step runs: neither waits for the other.
	var loaded chan error
	if next != nil {
		loaded = make(chan error, 1)
		go func() { loaded <- d.load(next) }()
	}
	runErr := d.sess.Run(d.bind[d.k])
	if loaded != nil {
		if err := <-loaded; err != nil && runErr == nil {
			runErr = err
		}
	}
	if runErr != nil {
		return StepResult{}, runErr
	}
	if d.oneBinding {
		// The new state goes back into set 0 in one transfer, queued on the copy stream
		// behind the next batch's upload.
		if err := d.block[0].CopyFromAsync(d.block[1]); err != nil {
			return StepResult{}, err
		}
		if err := d.sess.WaitUploads(); err != nil {
			return StepResult{}, err
		}
	} else {
		d.loaded[d.k] = false
		d.k = 1 - d.k
	}
	r, err := d.readResults()
	if err != nil {
		return r, err
	}
	if r.Skipped {
		d.Skipped++
	} else {
		st.Step++
	}
	st.Weights.BatchesTracked++
	return r, nil
}

func (d *DeviceTrainSession) readResults() (StepResult, error) {
	var r StepResult
	for name, dst := range map[string]*float32{step.OutLoss: &r.Loss, step.OutCE: &r.CE, step.OutDice: &r.Dice, step.OutGradNorm: &r.GradNorm} {
		t, ok := d.results[name]
		if !ok {
			continue
		}
		h, err := t.Fetch()
		if err != nil {
			return r, err
		}
		*dst = h.Float32s()[0]
	}
	if t, ok := d.results[outFoundInf]; ok {
		h, err := t.Fetch()
		if err != nil {
			return r, err
		}
		switch h.DType {
		case runtime.Bool:
			r.Skipped = runtime.Data[bool](h)[0]
		default:
			r.Skipped = h.Float32s()[0] != 0
		}
	}
	return r, nil
}

// Step loads the batch and runs it (no overlap: the trainer's loader hands batches one at a
// time); it satisfies the trainer's stepper.
func (d *DeviceTrainSession) Step(st *State, image []float32, target []int64, lr float32) (StepResult, error) {
	if err := d.Load(image, target); err != nil {
		return StepResult{}, err
	}
	return d.Run(st, lr, nil)
}
