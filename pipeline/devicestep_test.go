package pipeline

import (
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/internal/f16"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestDeviceTrainSessionMatchesHost runs the same steps through the host session and the
// device-resident one (on the CPU provider, so it runs anywhere): ping-pong state, or the one
// binding with its state copy-back (the CUDA-graph path), overlapped batch loads, Pull and
// Push must reproduce the host run's state.
func TestDeviceTrainSessionMatchesHost(t *testing.T) {
	t.Run("ping-pong", func(t *testing.T) { deviceMatchesHost(t) })
	t.Run("one_binding", func(t *testing.T) {
		t.Setenv(EnvStateCopy, "1")
		deviceMatchesHost(t)
	})
}

func deviceMatchesHost(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width = 2, 64, 96
	sc := cfg.StepConfig()
	opts := runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}
	host, err := NewTrainSession(sc, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	hs, _ := NewState(sc.Arch, model.Init(sc.Arch, 5))
	ds, _ := NewState(sc.Arch, model.Init(sc.Arch, 5))
	dev, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}, ds)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var imgs [][]float32
	var tgts [][]int64
	for i := 0; i < 5; i++ {
		im, tg := randomBatch(sc, uint64(10+i))
		imgs, tgts = append(imgs, im), append(tgts, tg)
	}
	lrs := []float32{1e-3, 2e-3, 5e-4, 1e-3, 3e-3}
	if err := dev.Load(imgs[0], tgts[0]); err != nil {
		t.Fatal(err)
	}
	for i := range imgs {
		hr, err := host.Step(hs, imgs[i], tgts[i], lrs[i])
		if err != nil {
			t.Fatal(err)
		}
		var next Fill
		if i+1 < len(imgs) {
			next = func(im []float32, tg []int64) error {
				copy(im, imgs[i+1])
				copy(tg, tgts[i+1])
				return nil
			}
		}
		if i == 2 { // a host round trip mid-run must not disturb anything
			if err := dev.Pull(ds); err != nil {
				t.Fatal(err)
			}
			if err := dev.Push(ds); err != nil {
				t.Fatal(err)
			}
		}
		dr, err := dev.Run(ds, lrs[i], next)
		if err != nil {
			t.Fatal(err)
		}
		if rel(dr.Loss, hr.Loss) > 1e-5 || rel(dr.GradNorm, hr.GradNorm) > 1e-4 {
			t.Fatalf("step %d: device loss %v grad norm %v, host %v %v", i, dr.Loss, dr.GradNorm, hr.Loss, hr.GradNorm)
		}
	}
	if _, err := dev.Run(ds, 1e-3, nil); err == nil {
		t.Fatal("Run without a loaded batch accepted")
	}
	if err := dev.Pull(ds); err != nil {
		t.Fatal(err)
	}
	if ds.Step != hs.Step || ds.Step != 5 {
		t.Fatalf("steps: device %d, host %d", ds.Step, hs.Step)
	}
	worst := 0.0
	for _, p := range sc.Arch.Params() {
		a, b := ds.Weights.Tensors[p.Name], hs.Weights.Tensors[p.Name]
		for i := range a {
			worst = math.Max(worst, math.Abs(float64(a[i]-b[i])))
		}
	}
	for i := range ds.M {
		worst = math.Max(worst, math.Abs(float64(ds.M[i]-hs.M[i])))
		worst = math.Max(worst, math.Abs(float64(ds.V[i]-hs.V[i])))
	}
	if worst > 1e-5 {
		t.Fatalf("device state differs from the host run by up to %g", worst)
	}
}

func rel(a, b float32) float64 {
	return math.Abs(float64(a-b)) / math.Max(1e-12, math.Abs(float64(b)))
}

// TestDeviceTrainSessionFP16Skips: an FP16 step whose scaled gradients overflow is skipped on
// the device (state kept, scale halved) and the host's step count follows without reading
// the state back; a normal step then counts.
func TestDeviceTrainSessionFP16Skips(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width, cfg.Precision = 2, 64, 96, "fp16"
	sc := cfg.StepConfig()
	st, _ := NewState(sc.Arch, model.Init(sc.Arch, 5))
	st.LossScale = 1 << 40 // FP16 gradients overflow at this scale
	before := append([]float32(nil), st.Weights.Tensors["classifier.low_classifier.weight"]...)
	dev, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	img, tgt := randomBatch(sc, 3)
	r, err := dev.Step(st, img, tgt, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Skipped || st.Step != 0 || dev.Skipped != 1 {
		t.Fatalf("overflowing step: skipped %v, step %d, skipped count %d", r.Skipped, st.Step, dev.Skipped)
	}
	if err := dev.Pull(st); err != nil {
		t.Fatal(err)
	}
	if st.LossScale != 1<<39 || st.Step != 0 {
		t.Fatalf("after a skipped step: loss scale %g, step %d", st.LossScale, st.Step)
	}
	for i, v := range st.Weights.Tensors["classifier.low_classifier.weight"] {
		if v != before[i] {
			t.Fatalf("a skipped step changed weights")
		}
	}
	st.LossScale = 1024
	if err := dev.Push(st); err != nil {
		t.Fatal(err)
	}
	r, err = dev.Step(st, img, tgt, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Skipped || st.Step != 1 {
		t.Fatalf("normal step: skipped %v, step %d", r.Skipped, st.Step)
	}
	if err := dev.Pull(st); err != nil {
		t.Fatal(err)
	}
	if st.Step != 1 || st.LossScaleGood != 1 || st.LossScale != 1024 {
		t.Fatalf("after a normal step: step %d, good %g, scale %g", st.Step, st.LossScaleGood, st.LossScale)
	}
}

// TestFusedOpsStepOnCPU: the FP16 train step with our fused operators (their CPU kernels:
// batch norm, depthwise weight gradients) follows the same step in ONNX operators alone, both
// on the CPU provider in float16 — the step-level check of the operators' wiring (statistics
// to the running averages, gradients to AdamW) that the GPU runs with its own kernels.
func TestFusedOpsStepOnCPU(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	compareTrajectories(t, "fused", fp16TrajectoryWith(t, runtime.ProviderCPU, AllFused), "ONNX operators", fp16TrajectoryWith(t, runtime.ProviderCPU, FusedSet{}))
}

func TestParseFusedSet(t *testing.T) {
	for in, want := range map[string]FusedSet{
		"": AllFused, "all": AllFused, "none": {}, "0": {},
		"bn,dwgrad": {BN: true, DWGrad: true}, " bn , act ": {BN: true, Act: true}, "dwconv": {DWConv: true}, "pack,dwgrad": {DWGrad: true, Pack: true}, "adam": {Adam: true}, "loss,adam": {Adam: true, Loss: true}, "se,bn": {BN: true, SE: true},
	} {
		got, err := ParseFusedSet(in)
		if err != nil || got != want {
			t.Errorf("ParseFusedSet(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil {
			if back, _ := ParseFusedSet(got.String()); back != got {
				t.Errorf("%+v prints as %q, which reads back as %+v", got, got.String(), back)
			}
		}
	}
	for _, in := range []string{"act", "bn,foo", "bn,,dwgrad"} {
		if _, err := ParseFusedSet(in); err == nil {
			t.Errorf("ParseFusedSet(%q) accepted", in)
		}
	}
	t.Setenv(EnvFusedOps, "bn")
	if f, err := FusedOps(runtime.ProviderCUDA, true); err != nil || f != (FusedSet{BN: true}) {
		t.Errorf("FusedOps on CUDA with %s=bn: %+v, %v", EnvFusedOps, f, err)
	}
	if f, _ := FusedOps(runtime.ProviderCPU, true); f != (FusedSet{}) {
		t.Errorf("FusedOps on the CPU: %+v", f)
	}
	if f, _ := FusedOps(runtime.ProviderCUDA, false); f != (FusedSet{}) {
		t.Errorf("FusedOps for FP32: %+v", f)
	}
	t.Setenv(EnvFusedOps, "bogus")
	if _, err := FusedOps(runtime.ProviderCUDA, true); err == nil || !strings.Contains(err.Error(), EnvFusedOps) {
		t.Errorf("bad %s: error %v", EnvFusedOps, err)
	}
}

// TestPackedStepMatchesUnpacked: the FP16 train step with the packing operators (FusedPack:
// PackRows, UnpackRows, UnpackRows16) against the step with Concat, Split and a Cast per
// tensor, on the CPU provider. They are not equal bit for bit there: ORT's CPU provider runs a
// float16 Conv in float32 between casts it inserts and folds our Cast to float16 into them, so
// the step without the packing operators convolves with unrounded weights and keeps unrounded
// gradients (a 1×1 convolution of 1 with the weight 1.0001 gives 1.0001), while the operators
// round both as the GPU does. So the weights start float16-exact: then the forward must be
// the same bit for bit (loss, batch statistics and so the running statistics), and the
// gradients, moments and updated weights the same within float16 rounding of the gradients.
func TestPackedStepMatchesUnpacked(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width, cfg.Precision = 2, 64, 96, "fp16"
	const lr = 2e-3
	var states [2]*State
	var losses, norms [2]float32
	for k, packed := range []bool{false, true} {
		sc := cfg.StepConfig()
		UseFusedOps(&sc, FusedSet{Pack: packed})
		st, _ := NewState(sc.Arch, model.Init(sc.Arch, 5))
		for _, ws := range st.Weights.Tensors {
			for i := range ws {
				ws[i] = f16.ToFloat32(f16.FromFloat32(ws[i]))
			}
		}
		st.LossScale = 1024
		dev, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}, st)
		if err != nil {
			t.Fatal(err)
		}
		img, tgt := randomBatch(sc, 20)
		r, err := dev.Step(st, img, tgt, lr)
		if err != nil || r.Skipped {
			t.Fatalf("packed %v: %v (skipped %v)", packed, err, r.Skipped)
		}
		losses[k], norms[k] = r.Loss, r.GradNorm
		if err := dev.Pull(st); err != nil {
			t.Fatal(err)
		}
		dev.Close()
		states[k] = st
	}
	want, got := states[0], states[1]
	if losses[0] != losses[1] {
		t.Errorf("loss: packed step %.9g, unpacked %.9g", losses[1], losses[0])
	}
	if rel(norms[1], norms[0]) > 1e-4 {
		t.Errorf("gradient norm: packed step %.9g, unpacked %.9g", norms[1], norms[0])
	}
	// close checks |a − b| ≤ rel·|b| + abs element by element, and that the tensors are not all zero.
	close := func(what string, a, b []float32, rel, abs float64) {
		t.Helper()
		if len(a) != len(b) {
			t.Fatalf("%s: %d values, want %d", what, len(a), len(b))
		}
		nonzero := false
		for i := range b {
			nonzero = nonzero || b[i] != 0
			if d := math.Abs(float64(a[i] - b[i])); d > rel*math.Abs(float64(b[i]))+abs || math.IsNaN(float64(a[i])) {
				t.Fatalf("%s[%d]: packed step %.9g, unpacked %.9g", what, i, a[i], b[i])
			}
		}
		if !nonzero {
			t.Fatalf("%s is all zero", what)
		}
	}
	var gmax float64
	for _, v := range want.M {
		gmax = math.Max(gmax, math.Abs(float64(v)))
	}
	for _, p := range want.Arch.Params() {
		a, b := got.Weights.Tensors[p.Name], want.Weights.Tensors[p.Name]
		if p.Kind.Trainable() {
			close(p.Name, a, b, 1e-6, 1e-3*lr) // a step of lr·m̂/(√v̂+ε): the gradient's rounding moves it by ≤ 2^-11 of lr
		} else {
			close(p.Name, a, b, 0, 0) // running statistics: the same forward
		}
	}
	close("adam.m", got.M, want.M, 1.0/1024, 1e-6*gmax)
	close("adam.v", got.V, want.V, 2.0/1024, 1e-12*gmax*gmax)
}

// TestFusedAdamStepMatches: the FP16 train step with the fused AdamW operator against the same
// step with AdamW in ONNX operators (both with the packing operators, so both round alike),
// bit for bit on the CPU provider: four steps, without and with gradient clipping, then
// every state tensor; and a step whose gradients overflow keeps every state tensor in both.
func TestFusedAdamStepMatches(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	for _, clip := range []float64{0, 0.5} {
		cfg := DefaultTrainConfig()
		cfg.Batch, cfg.Height, cfg.Width, cfg.Precision, cfg.ClipNorm = 2, 64, 96, "fp16", clip
		var states [2]*State
		var reports [2][]StepResult
		for k, fused := range []bool{false, true} {
			sc := cfg.StepConfig()
			UseFusedOps(&sc, FusedSet{Pack: true, Adam: fused})
			st, _ := NewState(sc.Arch, model.Init(sc.Arch, 5))
			st.LossScale = 1024
			dev, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}, st)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				if i == 2 { // this step's scaled gradients overflow float16: skipped, scale halved
					if err := dev.Pull(st); err != nil {
						t.Fatal(err)
					}
					st.LossScale = 1 << 40
					if err := dev.Push(st); err != nil {
						t.Fatal(err)
					}
				}
				img, tgt := randomBatch(sc, uint64(30+i))
				r, err := dev.Step(st, img, tgt, 2e-3)
				if err != nil {
					t.Fatal(err)
				}
				if r.Skipped != (i == 2) {
					t.Fatalf("fused %v, clip %v, step %d: skipped %v", fused, clip, i, r.Skipped)
				}
				reports[k] = append(reports[k], r)
				if i == 2 {
					if err := dev.Pull(st); err != nil {
						t.Fatal(err)
					}
					st.LossScale = 512
					if err := dev.Push(st); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := dev.Pull(st); err != nil {
				t.Fatal(err)
			}
			dev.Close()
			states[k] = st
		}
		for i := range reports[0] {
			a, b := reports[1][i], reports[0][i]
			nan := math.IsNaN(float64(a.GradNorm)) && math.IsNaN(float64(b.GradNorm)) // the overflowing step's
			if a.Loss != b.Loss || (a.GradNorm != b.GradNorm && !nan) {
				t.Errorf("clip %v, step %d: fused loss %.9g grad norm %.9g, unfused %.9g %.9g", clip, i, a.Loss, a.GradNorm, b.Loss, b.GradNorm)
			}
		}
		want, got := states[0], states[1]
		same := func(what string, a, b []float32) {
			t.Helper()
			for i := range b {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("clip %v: %s[%d]: fused %.9g, unfused %.9g", clip, what, i, a[i], b[i])
				}
			}
		}
		for _, p := range want.Arch.Params() {
			same(p.Name, got.Weights.Tensors[p.Name], want.Weights.Tensors[p.Name])
		}
		same("adam.m", got.M, want.M)
		same("adam.v", got.V, want.V)
		if got.Step != want.Step || got.Step != 4 || got.LossScale != want.LossScale {
			t.Errorf("clip %v: step %d, scale %g; unfused %d, %g", clip, got.Step, got.LossScale, want.Step, want.LossScale)
		}
	}
}

// runGraphOnce runs a graph once on the CPU provider with our operators registered.
func runGraphOnce(t *testing.T, b []byte, in map[string]*runtime.Tensor) map[string]*runtime.Tensor {
	t.Helper()
	s, err := runtime.NewDeviceSession("once", b, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2, CustomOps: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ins, outs := map[string]*runtime.DeviceTensor{}, map[string]*runtime.DeviceTensor{}
	for _, info := range s.Inputs() {
		d, err := s.NewTensorFor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Upload(in[info.Name]); err != nil {
			t.Fatalf("%s: %v", info.Name, err)
		}
		ins[info.Name] = d
	}
	for _, info := range s.Outputs() {
		d, err := s.NewTensorFor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		outs[info.Name] = d
	}
	bind, err := s.NewBinding(-1, ins, outs)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(bind); err != nil {
		t.Fatal(err)
	}
	res := map[string]*runtime.Tensor{}
	for name, d := range outs {
		if res[name], err = d.Fetch(); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// TestFusedLossMatches: the FP16 gradient graph with the loss operators (FusedLoss: SegLoss16
// and its gradient on the float16 logits) against the same graph with the loss in float32 ONNX
// operators, on the CPU provider: the loss and its terms within float32 summation error, every
// parameter's gradient within float16 rounding of the logits' gradient (relative L2). The batch
// has a label outside the classes, which counts in no sum.
func TestFusedLossMatches(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width, cfg.Precision = 2, 64, 96, "fp16"
	st, _ := NewState(cfg.StepConfig().Arch, model.Init(cfg.StepConfig().Arch, 5))
	var res [2]map[string]*runtime.Tensor
	for k, fused := range []bool{false, true} {
		sc := cfg.StepConfig()
		sc.FusedLoss = fused
		b := gradModel(t, sc, false)
		img, tgt := randomBatch(sc, 40)
		tgt[17] = 5 // no class
		in := map[string]*runtime.Tensor{
			step.InputImage:     runtime.MustNew([]int64{2, 3, 64, 96}, img),
			step.InputTarget:    runtime.MustNew([]int64{2, 64, 96}, tgt),
			step.InputLossScale: runtime.MustNew([]int64{}, []float32{1024}),
		}
		for _, p := range sc.Arch.Params() {
			in[p.Name] = runtime.MustNew([]int64(p.Shape), st.Weights.Tensors[p.Name])
		}
		res[k] = runGraphOnce(t, b, in)
	}
	for _, name := range []string{step.OutLoss, step.OutCE, step.OutDice} {
		a, b := runtime.Data[float32](res[1][name])[0], runtime.Data[float32](res[0][name])[0]
		if rel(a, b) > 2e-5 {
			t.Errorf("%s: fused %.8g, ONNX operators %.8g", name, a, b)
		}
	}
	worst, at := 0.0, ""
	for name, want := range res[0] {
		if !strings.HasPrefix(name, "grad.") {
			continue
		}
		if e := relL2(runtime.Data[float32](res[1][name]), runtime.Data[float32](want)); e > worst || math.IsNaN(e) || at == "" {
			worst, at = e, name
		}
	}
	t.Logf("worst gradient: %s, relative L2 difference %.2e (of %d outputs); loss %v %v", at, worst, len(res[0]), runtime.Data[float32](res[0][step.OutLoss]), runtime.Data[float32](res[1][step.OutLoss]))
	if worst > 5e-3 || at == "" {
		t.Errorf("gradients differ: %s by %.2e (relative L2)", at, worst)
	}
}

// TestFusedLayerOpsMatch: the FP16 gradients of the whole network with our layer operators
// (their CPU kernels), and the running statistics of one step, against FP32 — each variant
// no farther from FP32 than the step in ONNX operators with float16 rounding after every node
// (graphs.Graph.MarshalEmulatingHalf, what the CUDA provider does). It checks the operators'
// wiring in the network, which the operator tests cannot: which layers take them, each
// layer's activation, what the backward saves and reads, the statistics' route to the
// running averages.
//
// The bounds are wide because the gradient itself is: at this size (2 images of 64×96 at
// initialisation) rounding any one block's forward to float16 moves the parameter gradients
// by 1–7%, all blocks together by a median 10% (relative L2), and in FP32 a relative change
// of 1e-3 in the input image moves them by 7%. A wrong wire moves a gradient by its own size.
func TestFusedLayerOpsMatch(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width, cfg.Precision = 2, 64, 96, "fp16"
	arch := cfg.StepConfig().Arch
	init := model.Init(arch, 6)
	img, tgt := randomBatch(cfg.StepConfig(), 41)
	inputs := func(fp16 bool) map[string]*runtime.Tensor {
		in := map[string]*runtime.Tensor{
			step.InputImage:  runtime.MustNew([]int64{2, 3, 64, 96}, img),
			step.InputTarget: runtime.MustNew([]int64{2, 64, 96}, tgt),
		}
		if fp16 {
			in[step.InputLossScale] = runtime.MustNew([]int64{}, []float32{1024})
		}
		for _, p := range arch.Params() {
			in[p.Name] = runtime.MustNew([]int64(p.Shape), init.Tensors[p.Name])
		}
		return in
	}
	grads := func(sc step.Config, emulate bool) map[string][]float32 {
		out := map[string][]float32{}
		for name, v := range runGraphOnce(t, gradModel(t, sc, emulate), inputs(sc.FP16)) {
			out[name] = runtime.Data[float32](v)
		}
		return out
	}
	// stats: one train step from running statistics of zero, so the new running mean and
	// variance are the momentum times the batch's.
	stats := func(sc step.Config) map[string][]float32 {
		w := &model.Weights{Tensors: map[string][]float32{}}
		for _, p := range arch.Params() {
			w.Tensors[p.Name] = append([]float32(nil), init.Tensors[p.Name]...)
			if !p.Kind.Trainable() {
				clear(w.Tensors[p.Name])
			}
		}
		st, err := NewState(arch, w)
		if err != nil {
			t.Fatal(err)
		}
		st.LossScale = 1024
		d, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}, st)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Load(img, tgt); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Run(st, 1e-3, nil); err != nil {
			t.Fatal(err)
		}
		if err := d.Pull(st); err != nil {
			t.Fatal(err)
		}
		if st.Step != 1 {
			t.Fatalf("the step was skipped (step %d)", st.Step)
		}
		out := map[string][]float32{}
		for _, p := range arch.Params() {
			if !p.Kind.Trainable() {
				out[p.Name] = st.Weights.Tensors[p.Name]
			}
		}
		return out
	}
	median := func(x []float64) float64 {
		s := append([]float64(nil), x...)
		sort.Float64s(s)
		return s[len(s)/2]
	}

	sc32 := cfg.StepConfig()
	sc32.FP16 = false
	ref := grads(sc32, false)
	emu := grads(cfg.StepConfig(), true)
	refStats := stats(cfg.StepConfig()) // ONNX operators on the CPU: float32 arithmetic
	// The gradients compared: those FP32 gives a size the rounding does not swamp. The
	// biases of batch norms followed by a convolution and another batch norm have a gradient
	// of zero in exact arithmetic (the next batch norm's input gradient sums to zero per
	// channel), so they are rounding alone.
	var names []string
	var emuErr []float64
	for name, r := range ref {
		if !strings.HasPrefix(name, "grad.") {
			continue
		}
		if e := relL2(emu[name], r); e < 1 {
			names = append(names, name)
			emuErr = append(emuErr, e)
		}
	}
	sort.Strings(names)
	if len(names) < 150 {
		t.Fatalf("only %d gradients to compare", len(names))
	}
	emuMed := median(emuErr)
	t.Logf("ONNX operators rounding like the GPU: median gradient %.3f from FP32 (%d tensors)", emuMed, len(names))

	for _, f := range []FusedSet{
		{BN: true},
		{BN: true, Act: true},
		{DWConv: true, DWGrad: true},
		{DWGrad: true},
		{SE: true},
		{BN: true, Act: true, DWConv: true, DWGrad: true, SE: true},
	} {
		sc := cfg.StepConfig()
		UseFusedOps(&sc, f)
		got := grads(sc, false)
		if a, b := got[step.OutLoss][0], ref[step.OutLoss][0]; rel(a, b) > 2e-3 {
			t.Errorf("%s: loss %.6g, FP32 %.6g", f, a, b)
		}
		var errs []float64
		worst, at := 0.0, ""
		for _, name := range names {
			e := relL2(got[name], ref[name])
			errs = append(errs, e)
			if e > worst || math.IsNaN(e) {
				worst, at = e, name
			}
		}
		med := median(errs)
		// The running statistics: the mean's difference in units of the batch's standard
		// deviation (a mean can be zero by construction, as above), the variance's relative.
		gotStats := stats(sc)
		sworst, sat := 0.0, ""
		for _, p := range arch.Params() {
			if p.Kind != model.BNMean {
				continue
			}
			vname := strings.TrimSuffix(p.Name, "running_mean") + "running_var"
			// new mean m·μ, new variance m·σ²·n/(n−1): ‖Δμ‖/‖σ‖ ≈ ‖Δ(m·μ)‖ / √(m·Σ m·σ²)
			var vs float64
			for _, v := range refStats[vname] {
				vs += float64(v)
			}
			em := math.Sqrt(sqDist(gotStats[p.Name], refStats[p.Name]) / math.Max(float64(p.Momentum)*vs, 1e-30))
			ev := relL2(gotStats[vname], refStats[vname])
			for _, e := range []struct {
				v    float64
				name string
			}{{em, p.Name}, {ev, vname}} {
				if e.v > sworst || math.IsNaN(e.v) {
					sworst, sat = e.v, e.name
				}
			}
		}
		t.Logf("%s: gradients from FP32 median %.3f, worst %.3f (%s); worst running statistic %.2e (%s)", f, med, worst, at, sworst, sat)
		if !(med <= 1.25*emuMed) {
			t.Errorf("%s: gradients a median %.3f from FP32, the step in ONNX operators %.3f", f, med, emuMed)
		}
		if !(worst <= 0.5) {
			t.Errorf("%s: gradient %s %.3f from FP32 (relative L2)", f, at, worst)
		}
		if !(sworst <= 0.02) {
			t.Errorf("%s: running statistic %s off by %.3f", f, sat, sworst)
		}
	}
}

// gradModel is step.GradGraph(sc) serialised, with float16 rounding emulated after every node
// (graphs.Graph.MarshalEmulatingHalf) when emulate is set.
func gradModel(t *testing.T, sc step.Config, emulate bool) []byte {
	t.Helper()
	g, err := step.GradGraph(sc)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	if emulate {
		b, err = g.MarshalEmulatingHalf(nil)
	} else {
		b, err = g.Marshal()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// relL2 is ‖got − want‖ / ‖want‖.
func relL2(got, want []float32) float64 {
	var d2, w2 float64
	for i, w := range want {
		d := float64(got[i] - w)
		d2 += d * d
		w2 += float64(w) * float64(w)
	}
	return math.Sqrt(d2 / math.Max(w2, 1e-30))
}

func sqDist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s
}
