package export

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

const python = "/usr/bin/python3"

func requireTorch(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("PyTorch comparison skipped in -short mode")
	}
	// find_spec locates the packages without the seconds an import of torch takes.
	probe := "import importlib.util as u, sys; sys.exit(0 if u.find_spec('torch') and u.find_spec('torchvision') else 1)"
	if err := exec.Command(python, "-c", probe).Run(); err != nil {
		t.Skip("Debian python3-torch / python3-torchvision not installed")
	}
}

// TestFP32MatchesTorchvision: the FP32 ONNX export (batch norm folded) computes what
// torchvision's lraspp_mobilenet_v3_large computes (float64, eval mode) with the exported
// safetensors weights loaded strictly, within 1e-4 of the logits' magnitude. The narrow network
// is built from torchvision's own MobileNetV3 configuration with the width multiplier, as the
// package README tells PyTorch users.
func TestFP32MatchesTorchvision(t *testing.T) {
	requireORT(t)
	requireTorch(t)
	type model struct {
		name     string
		width    float64
		out      string
		got      []float32
		in, want string
	}
	models := []*model{{name: "lraspp_mobilenet_v3_large", width: 1}, {name: "width 0.5", width: 0.5}}
	const n = 2
	r := rand.New(rand.NewPCG(9, 9))
	img := make([]float32, n*3*testH*testW)
	for i := range img {
		img[i] = float32(r.NormFloat64())
	}
	dir := t.TempDir()
	var args []string
	for i, m := range models {
		cfg := smokeConfig("x")
		cfg.WidthMult = m.width
		st, err := pipeline.NewState(cfg.StepConfig().Arch, randomWeights(cfg, 5))
		if err != nil {
			t.Fatal(err)
		}
		ck := filepath.Join(dir, fmt.Sprintf("ck%d.onnx", i))
		if err := pipeline.SaveCheckpoint(ck, cfg, st, pipeline.Progress{}); err != nil {
			t.Fatal(err)
		}
		src, err := LoadSource(ck, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		m.out = filepath.Join(dir, fmt.Sprintf("out%d", i))
		if _, err := Export(context.Background(), src, Options{Out: m.out, Formats: []string{FormatONNX, FormatSafetensors},
			DynamicBatch: true, Session: cpu()}); err != nil {
			t.Fatal(err)
		}
		s, err := runtime.NewSessionFromFile(filepath.Join(m.out, "cardseg.onnx"), cpu())
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Run(map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{n, 3, testH, testW}, img)})
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		m.got = runtime.Data[float32](res[step.OutLogits])
		m.in, m.want = filepath.Join(dir, fmt.Sprintf("in%d.safetensors", i)), filepath.Join(dir, fmt.Sprintf("ref%d.safetensors", i))
		it, _ := safetensors.FromFloat32(img, n, 3, testH, testW)
		if err := safetensors.WriteFile(m.in, safetensors.File{Tensors: map[string]safetensors.Tensor{"image": it}}); err != nil {
			t.Fatal(err)
		}
		args = append(args, filepath.Join(m.out, "cardseg.safetensors"), m.in, m.want)
	}
	msg, err := exec.Command(python, append([]string{filepath.Join("testdata", "torch_forward.py")}, args...)...).CombinedOutput()
	if err != nil || strings.Count(string(msg), "ok") != len(models) {
		t.Fatalf("torchvision reference: %v\n%s", err, msg)
	}
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			f, err := safetensors.ReadFile(m.want)
			if err != nil {
				t.Fatal(err)
			}
			want, err := f.Tensors["logits"].Float32s()
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != len(m.got) {
				t.Fatalf("torchvision returned %d logits, ONNX %d", len(want), len(m.got))
			}
			diff, scale := maxAbsDiff(m.got, want)
			if rel := diff / scale; rel > 1e-4 || math.IsNaN(rel) {
				t.Fatalf("FP32 export differs from torchvision by %.2e of the logits' magnitude %.3g (limit 1e-4)", rel, scale)
			} else {
				t.Logf("FP32 export vs torchvision (strict load of the exported safetensors): max diff %.2e, %.2e relative", diff, rel)
			}
		})
	}
}

func cpu() runtime.SessionOptions {
	return runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2}
}
