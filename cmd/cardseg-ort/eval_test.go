package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// evalFixture writes our inference model (random weights, 64×96) and a two-image test split.
func evalFixture(t *testing.T) (modelPath, data string) {
	t.Helper()
	dir := t.TempDir()
	arch := model.MobileNetV3Large(1, 2)
	cfg := step.Config{Arch: arch, Batch: 1, Height: 64, Width: 96, Loss: step.DefaultLoss, Adam: step.DefaultAdamW}
	g, err := step.Inference(cfg, model.Init(arch, 1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	modelPath = filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(modelPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	data = filepath.Join(dir, "data")
	for i, size := range [][2]int{{96, 64}, {150, 100}} {
		w, h := size[0], size[1]
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		mask := image.NewGray(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				card := x > w/4 && x < 3*w/4 && y > h/5
				c := color.RGBA{30, 60, 90, 255}
				if card {
					c = color.RGBA{220, 210, 190, 255}
					mask.SetGray(x, y, color.Gray{255})
				}
				img.SetRGBA(x, y, c)
			}
		}
		name := string(rune('a' + i))
		writeTestPNG(t, filepath.Join(data, "test", "image", name+".png"), img)
		writeTestPNG(t, filepath.Join(data, "test", "mask", name+".png"), mask)
	}
	return modelPath, data
}

func writeTestPNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runSplit runs the CLI with stdout and stderr kept apart.
func runSplit(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(cliBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestEvalCLI(t *testing.T) {
	modelPath, data := evalFixture(t)

	stdout, stderr, code := runSplit(t, "eval", modelPath, "--data", data, "--json", "--device", "cpu")
	if code != 0 {
		t.Fatalf("eval --json exited %d:\n%s", code, stderr)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(stdout), &obj); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"card", "background", "pixel_accuracy", "mean_iou", "images", "per_image_iou_mean"} {
		if _, ok := obj[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if obj["images"] != 2.0 {
		t.Errorf("images = %v, want 2", obj["images"])
	}

	out := filepath.Join(t.TempDir(), "report")
	stdout, stderr, code = runSplit(t, "eval", modelPath, "--data", data, "--out", out, "--analyze-predictions",
		"--find-failures", "1", "--save-plots", "--batch", "2", "--device", "cpu")
	if code != 0 {
		t.Fatalf("eval --out exited %d:\n%s", code, stderr)
	}
	for _, want := range []string{"card", "pixel accuracy", "confusion", "report.html"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	for _, f := range []string{"report.html", "metrics.json", "plots/confusion_matrix.png", "plots/iou_histogram.png", "plots/confidence_histogram.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("eval --out did not write %s: %v", f, err)
		}
	}

	os.Remove(filepath.Join(data, "test", "mask", "b.png"))
	_, stderr, code = runSplit(t, "eval", modelPath, "--data", data, "--device", "cpu")
	if code == 0 || !strings.Contains(stderr, "b.png") || !strings.Contains(stderr, "no mask") {
		t.Errorf("missing mask: exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = runSplit(t, "eval", filepath.Join(data, "test", "image", "a.png"), "--data", data, "--device", "cpu")
	if code == 0 || !strings.Contains(stderr, "a.png") || strings.Contains(stderr, "panic") {
		t.Errorf("an image as the model: exit %d, stderr:\n%s", code, stderr)
	}
}
