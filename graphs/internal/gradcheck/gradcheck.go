// Package gradcheck checks gradient rules against central finite differences evaluated by
// ONNX Runtime, and runs Debian's onnx.checker over models. It serves the tests of graphs and
// its sub-packages.
//
// It may import graphs, runtime and the standard library.
package gradcheck

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// In describes one input of a gradient check.
type In struct {
	Shape graphs.Shape
	Gen   func(r *rand.Rand) float64 // element generator (default uniform [-2, 2])
	Diff  bool                       // check the gradient w.r.t. this input
}

func Uniform(lo, hi float64) func(*rand.Rand) float64 {
	return func(r *rand.Rand) float64 { return lo + (hi-lo)*r.Float64() }
}

// awayFrom draws from [-a, a] but never within gap of any kink point.
func AwayFrom(a, gap float64, kinks ...float64) func(*rand.Rand) float64 {
	return func(r *rand.Rand) float64 {
		for {
			x := -a + 2*a*r.Float64()
			ok := true
			for _, k := range kinks {
				if math.Abs(x-k) < gap {
					ok = false
				}
			}
			if ok {
				return x
			}
		}
	}
}

// Case is one gradient check: the function of the inputs whose gradient is checked.
type Case struct {
	Name  string
	DType graphs.DType // Double where ORT's CPU kernels have it, else Float
	Ins   []In
	F     func(xs []*graphs.Value) *graphs.Value
}

func newTensor(dt graphs.DType, shape graphs.Shape, data []float64) *runtime.Tensor {
	if dt == graphs.Double {
		return runtime.MustNew([]int64(shape), data)
	}
	f := make([]float32, len(data))
	for i, v := range data {
		f[i] = float32(v)
	}
	return runtime.MustNew([]int64(shape), f)
}

func toF64(t *runtime.Tensor) []float64 {
	if t.DType == runtime.Float64 {
		return runtime.Data[float64](t)
	}
	f := t.Float32s()
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out
}

// Session opens g on ONNX Runtime's CPU provider with one thread, closed when the test ends.
func Session(t testing.TB, g *graphs.Graph) *runtime.Session {
	t.Helper()
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.NewSession(g.Name, b, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkGrad compares Grad's result for L = Σ r ⊙ f(x) (r fixed random weights) with central
// finite differences of L evaluated by ONNX Runtime on the forward graph.
func Check(t *testing.T, tc Case, modelDir string) {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(len(tc.Name))))
	g := graphs.New("grad_" + strings.ReplaceAll(tc.Name, " ", "_"))
	var xs, diffs []*graphs.Value
	data := make([][]float64, len(tc.Ins))
	for i, spec := range tc.Ins {
		x := g.Input("x"+string(rune('0'+i)), tc.DType, spec.Shape)
		xs = append(xs, x)
		gen := spec.Gen
		if gen == nil {
			gen = Uniform(-2, 2)
		}
		data[i] = make([]float64, spec.Shape.Size())
		for k := range data[i] {
			data[i][k] = gen(rng)
		}
		if spec.Diff {
			diffs = append(diffs, x)
		}
	}
	y := tc.F(xs)
	wdata := make([]float32, y.Size())
	for k := range wdata {
		wdata[k] = float32(rng.Float64()*2 - 1)
	}
	w := g.InitFloat("weights", y.Shape(), wdata)
	if y.DType() != graphs.Float {
		w = graphs.Cast(w, y.DType())
	}
	loss := graphs.ReduceSum(graphs.Mul(y, w), false)
	grads, err := graphs.Grad(loss, diffs)
	if err != nil {
		t.Fatal(err)
	}
	g.Output("loss", loss)
	for i, d := range grads {
		g.Output("grad_"+diffs[i].Name(), d)
	}
	SaveModel(t, g, modelDir)
	s := Session(t, g)
	feeds := func() map[string]*runtime.Tensor {
		m := map[string]*runtime.Tensor{}
		for i, x := range xs {
			m[x.Name()] = newTensor(tc.DType, tc.Ins[i].Shape, data[i])
		}
		return m
	}
	out, err := s.Run(feeds())
	if err != nil {
		t.Fatal(err)
	}
	lossAt := func() float64 {
		o, err := s.Run(feeds())
		if err != nil {
			t.Fatal(err)
		}
		return toF64(o["loss"])[0]
	}
	eps, rtol, atol := 1e-6, 1e-6, 1e-7
	if tc.DType == graphs.Float {
		eps, rtol, atol = 1e-2, 2e-2, 2e-3
	}
	for i, spec := range tc.Ins {
		if !spec.Diff {
			continue
		}
		analytic := toF64(out["grad_"+xs[i].Name()])
		if len(analytic) != len(data[i]) {
			t.Fatalf("%s: gradient has %d elements, want %d", xs[i].Name(), len(analytic), len(data[i]))
		}
		// Check every element of small inputs, a random sample of large ones.
		idx := rng.Perm(len(data[i]))
		if len(idx) > 40 {
			idx = idx[:40]
		}
		for _, k := range idx {
			orig := data[i][k]
			data[i][k] = orig + eps
			lp := lossAt()
			data[i][k] = orig - eps
			lm := lossAt()
			data[i][k] = orig
			fd := (lp - lm) / (2 * eps)
			if d := math.Abs(fd - analytic[k]); d > atol+rtol*math.Max(math.Abs(fd), 1) {
				t.Errorf("%s[%d]: analytic %.8g, finite difference %.8g (diff %.3g)", xs[i].Name(), k, analytic[k], fd, d)
			}
		}
	}
}

// saveModel writes the graph's model into dir for a later batched onnx.checker run.
func SaveModel(t testing.TB, g *graphs.Graph, dir string) {
	t.Helper()
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, g.Name+".onnx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkModels runs Debian's onnx.checker (full check, with shape inference) on every model in
// dir in one Python process; it skips when python3-onnx is not installed.
func CheckModels(t *testing.T, dir string) {
	t.Helper()
	const py = "/usr/bin/python3"
	if exec.Command(py, "-c", "import onnx").Run() != nil {
		t.Log("python3-onnx not installed: onnx.checker skipped")
		return
	}
	script := `
import onnx, sys, glob
bad = 0
files = sorted(glob.glob(sys.argv[1] + "/*.onnx"))
for f in files:
    try:
        onnx.checker.check_model(onnx.load(f), full_check=True)
    except Exception as e:
        bad += 1
        print(f, e)
print("checked", len(files))
sys.exit(1 if bad else 0)
`
	out, err := exec.Command(py, "-c", script, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("onnx.checker: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "checked") {
		t.Fatalf("onnx.checker printed %s", out)
	}
}

// NCHWcBlock is the block size of ONNX Runtime's NCHWc CPU kernels here; the test is skipped
// where the build or CPU has none.
func NCHWcBlock(t testing.TB) int64 {
	t.Helper()
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	b, err := graphs.NCHWcProbe().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	block, err := runtime.NCHWcBlock(b)
	if err != nil {
		t.Skip(err)
	}
	return block
}
