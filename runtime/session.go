package runtime

import (
	"fmt"
	"os"
	"sort"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// SessionOptions configures a session. The zero value is CPU with ORT's default threading.
type SessionOptions struct {
	Provider       Provider // auto, cpu or cuda
	IntraOpThreads int      // 0: ORT's default
	InterOpThreads int      // 0: ORT's default
	CUDADevice     int
	// CUDAOptions are extra CUDA provider options, e.g. "use_tf32": "0" for float32
	// convolutions and matrix products without TF32 rounding.
	CUDAOptions map[string]string
	// DisableOptimizations turns ORT's graph optimisations off (for debugging a graph).
	DisableOptimizations bool
	// DisableMemPattern turns off ORT's memory-pattern planning. With it on, each run's
	// intermediate tensors are laid out in one block, allocated beside the CPU arena for the
	// run (about 1 GB for a training step at batch 8, 240×320) while the arena holds its own
	// chunks too; off, every tensor comes from the arena, which reuses freed chunks within
	// and across runs. The CPU train step at that size peaks at 1.28 GB instead of 2.16 GB,
	// at the same speed (4 alternating runs each: medians 1006–1116 against 951–1127 ms).
	DisableMemPattern bool
	// ProfilePrefix, when set, makes ORT write a per-node timing profile (Chrome trace JSON)
	// to files starting with this prefix.
	ProfilePrefix string
}

// IOInfo describes one model input or output. Symbolic dimensions are -1.
type IOInfo struct {
	Name  string
	DType DType
	Shape []int64
}

func (i IOInfo) String() string {
	dims := make([]string, len(i.Shape))
	for k, d := range i.Shape {
		if d < 0 {
			dims[k] = "?"
		} else {
			dims[k] = fmt.Sprint(d)
		}
	}
	return fmt.Sprintf("%s %v[%s]", i.Name, i.DType, strings.Join(dims, ","))
}

// Session is an ONNX Runtime inference session over one model.
type Session struct {
	name     string
	sess     *ort.DynamicAdvancedSession
	inputs   []IOInfo
	outputs  []IOInfo
	provider Provider
}

// NewSessionFromFile opens the model at path.
func NewSessionFromFile(path string, opts SessionOptions) (*Session, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	s, err := NewSession(path, b, opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// NewSession opens a model held in memory; name is used in errors.
func NewSession(name string, model []byte, opts SessionOptions) (*Session, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	prov, err := ResolveProvider(opts.Provider)
	if err != nil {
		return nil, fmt.Errorf("session for %s: %w", name, err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("read model %s: %w", name, err)
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if opts.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
			return nil, err
		}
	}
	if opts.DisableMemPattern {
		if err := so.SetMemPattern(false); err != nil {
			return nil, err
		}
	}
	if opts.InterOpThreads > 0 {
		if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
			return nil, err
		}
	}
	if opts.DisableOptimizations {
		if err := so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelDisableAll); err != nil {
			return nil, err
		}
	}
	if opts.ProfilePrefix != "" {
		if err := so.EnableProfiling(opts.ProfilePrefix); err != nil {
			return nil, err
		}
	}
	if prov == ProviderCUDA {
		halfGemmFP32Reductions()
		co, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		defer co.Destroy()
		kv := map[string]string{"device_id": fmt.Sprint(opts.CUDADevice)}
		for k, v := range opts.CUDAOptions {
			kv[k] = v
		}
		if err := co.Update(kv); err != nil {
			return nil, fmt.Errorf("CUDA provider options: %w", err)
		}
		if err := so.AppendExecutionProviderCUDA(co); err != nil {
			return nil, fmt.Errorf("enable CUDA provider (%s): %w", CheckCUDA().ProviderLibrary, err)
		}
	}
	s := &Session{name: name, provider: prov}
	for _, i := range ins {
		s.inputs = append(s.inputs, ioInfo(i))
	}
	for _, o := range outs {
		s.outputs = append(s.outputs, ioInfo(o))
	}
	s.sess, err = ort.NewDynamicAdvancedSessionWithONNXData(model, names(s.inputs), names(s.outputs), so)
	if err != nil {
		return nil, fmt.Errorf("create session for %s: %w", name, err)
	}
	return s, nil
}

func ioInfo(i ort.InputOutputInfo) IOInfo {
	return IOInfo{Name: i.Name, DType: DType(i.DataType), Shape: append([]int64(nil), i.Dimensions...)}
}

func names(infos []IOInfo) []string {
	out := make([]string, len(infos))
	for i, x := range infos {
		out[i] = x.Name
	}
	return out
}

// Inputs and Outputs describe the model's interface.
func (s *Session) Inputs() []IOInfo  { return s.inputs }
func (s *Session) Outputs() []IOInfo { return s.outputs }

// Provider is the execution provider the session runs on.
func (s *Session) Provider() Provider { return s.provider }

// Close releases the session.
func (s *Session) Close() error {
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	return err
}

// Run feeds every model input by name and returns every output by name. Inputs are checked
// against the model's declared types and static dimensions first, so a mismatch names the
// input instead of surfacing as an ORT kernel error. Outputs with static shapes are
// pre-allocated (no copy). Float16 outputs are always pre-allocated, because onnxruntime_go
// copies only half the bytes of float16 outputs that ORT allocates; a symbolic dimension of a
// float16 output takes the value of the first input's symbolic dimension on the same axis (the
// batch dimension, in every graph cardseg-ort builds).
func (s *Session) Run(inputs map[string]*Tensor) (map[string]*Tensor, error) {
	if s.sess == nil {
		return nil, fmt.Errorf("run %s: session closed", s.name)
	}
	var unknown []string
	for n := range inputs {
		if !hasName(s.inputs, n) {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("run %s: unknown input(s) %s; the model takes %s", s.name, strings.Join(unknown, ", "), describe(s.inputs))
	}
	// Symbolic dims are reported as -1 by ORT without names, so bind them positionally: an
	// output's dim -1 at axis k takes the value of the first input dim -1 at axis k.
	dynamicByAxis := map[int]int64{}
	ins := make([]ort.Value, len(s.inputs))
	defer func() {
		for _, v := range ins {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, info := range s.inputs {
		t, ok := inputs[info.Name]
		if !ok || t == nil {
			return nil, fmt.Errorf("run %s: missing input %s", s.name, info)
		}
		if t.DType != info.DType {
			return nil, fmt.Errorf("run %s: input %s is %v, the model wants %v", s.name, info.Name, t.DType, info.DType)
		}
		if len(t.Shape) != len(info.Shape) {
			return nil, fmt.Errorf("run %s: input %s has shape %v, the model wants %s", s.name, info.Name, t.Shape, info)
		}
		for k, d := range info.Shape {
			if d >= 0 && t.Shape[k] != d {
				return nil, fmt.Errorf("run %s: input %s has shape %v, the model wants %s", s.name, info.Name, t.Shape, info)
			}
			if d < 0 {
				if _, seen := dynamicByAxis[k]; !seen {
					dynamicByAxis[k] = t.Shape[k]
				}
			}
		}
		v, err := t.ortValue()
		if err != nil {
			return nil, fmt.Errorf("run %s: input %s: %w", s.name, info.Name, err)
		}
		ins[i] = v
	}
	outs := make([]ort.Value, len(s.outputs))
	results := make([]*Tensor, len(s.outputs))
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, info := range s.outputs {
		shape, known := resolveShape(info.Shape, nil)
		if !known && info.DType == Float16 {
			shape, known = resolveShape(info.Shape, dynamicByAxis)
		}
		if !known {
			if info.DType == Float16 {
				return nil, fmt.Errorf("run %s: float16 output %s has a shape that cannot be known before running; give it static dimensions", s.name, info)
			}
			continue
		}
		t, err := Zeros(info.DType, shape)
		if err != nil {
			return nil, fmt.Errorf("run %s: output %s: %w", s.name, info.Name, err)
		}
		v, err := t.ortValue()
		if err != nil {
			return nil, fmt.Errorf("run %s: output %s: %w", s.name, info.Name, err)
		}
		outs[i], results[i] = v, t
	}
	if err := s.sess.Run(ins, outs); err != nil {
		return nil, fmt.Errorf("run %s: %w", s.name, err)
	}
	res := make(map[string]*Tensor, len(s.outputs))
	for i, info := range s.outputs {
		if results[i] != nil && len(results[i].Shape) == 0 {
			copyScalarBack(outs[i], results[i])
		}
		if results[i] == nil {
			t, err := fromOrtValue(outs[i])
			if err != nil {
				return nil, fmt.Errorf("run %s: output %s: %w", s.name, info.Name, err)
			}
			results[i] = t
		}
		res[info.Name] = results[i]
	}
	return res, nil
}

func resolveShape(shape []int64, dyn map[int]int64) ([]int64, bool) {
	out := make([]int64, len(shape))
	for k, d := range shape {
		if d >= 0 {
			out[k] = d
			continue
		}
		v, ok := dyn[k]
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

func hasName(infos []IOInfo, n string) bool {
	for _, i := range infos {
		if i.Name == n {
			return true
		}
	}
	return false
}

func describe(infos []IOInfo) string {
	parts := make([]string, len(infos))
	for i, x := range infos {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}
