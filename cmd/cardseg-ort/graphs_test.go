package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
)

func TestGraphsBuildAndCheckGrad(t *testing.T) {
	dir := t.TempDir()
	out, code := runCLI(t, nil, "graphs", "build", "--out", dir, "--height", "64", "--width", "96", "--batch", "2", "--seed", "7")
	if code != 0 {
		t.Fatalf("graphs build exited %d:\n%s", code, out)
	}
	for _, f := range []string{"train_step.onnx", "eval_step.onnx", "inference.onnx", "weights.safetensors"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s missing: %v", f, err)
		}
	}
	if exec.Command("/usr/bin/python3", "-c", "import onnx").Run() == nil {
		script := "import onnx,sys\nfor f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)\nprint('checked')"
		args := []string{"-c", script}
		for _, f := range []string{"train_step.onnx", "eval_step.onnx", "inference.onnx"} {
			args = append(args, filepath.Join(dir, f))
		}
		if o, err := exec.Command("/usr/bin/python3", args...).CombinedOutput(); err != nil || !strings.Contains(string(o), "checked") {
			t.Fatalf("onnx.checker: %v\n%s", err, o)
		}
	}
	// A batch of two 64x96 images: half card, half background.
	const n, h, w = 2, 64, 96
	img := make([]float32, n*3*h*w)
	for i := range img {
		img[i] = float32(math.Sin(float64(i) * 0.01))
	}
	tgt := make([]uint8, n*h*w)
	for i := range tgt {
		if (i/w)%h >= h/2 {
			tgt[i] = 1
		}
	}
	it, _ := safetensors.FromFloat32(img, n, 3, h, w)
	tt, _ := safetensors.FromUint8(tgt, n, h, w)
	batch := filepath.Join(dir, "batch.safetensors")
	if err := safetensors.WriteFile(batch, safetensors.File{Tensors: map[string]safetensors.Tensor{"image": it, "target": tt}}); err != nil {
		t.Fatal(err)
	}
	grads := filepath.Join(dir, "grads.safetensors")
	out, code = runCLI(t, nil, "graphs", "check-grad", "--weights", filepath.Join(dir, "weights.safetensors"), "--batch", batch, "--out", grads)
	if code != 0 {
		t.Fatalf("check-grad exited %d:\n%s", code, out)
	}
	f, err := safetensors.ReadFile(grads)
	if err != nil {
		t.Fatal(err)
	}
	a := model.MobileNetV3Large(1, 2)
	count := 0
	for _, p := range a.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		g, ok := f.Tensors["grad."+p.Name]
		if !ok {
			t.Fatalf("no grad.%s", p.Name)
		}
		d, _ := g.Float32s()
		count += len(d)
	}
	if count != a.TrainableCount() {
		t.Fatalf("gradients cover %d values, want %d", count, a.TrainableCount())
	}
	loss, _ := f.Tensors["loss"].Float32s()
	if len(loss) != 1 || !(loss[0] > 0 && loss[0] < 5) {
		t.Fatalf("loss %v", loss)
	}
	// Bad input: a target with a class outside {0,1} is refused, naming the file.
	bad := filepath.Join(dir, "bad.safetensors")
	tgt[5] = 3
	tt, _ = safetensors.FromUint8(tgt, n, h, w)
	safetensors.WriteFile(bad, safetensors.File{Tensors: map[string]safetensors.Tensor{"image": it, "target": tt}})
	out, code = runCLI(t, nil, "graphs", "check-grad", "--weights", filepath.Join(dir, "weights.safetensors"), "--batch", bad, "--out", grads)
	if code == 0 || !strings.Contains(out, "bad.safetensors") || !strings.Contains(out, "target[5] = 3") {
		t.Fatalf("bad target accepted (exit %d):\n%s", code, out)
	}
}
