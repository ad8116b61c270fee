package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

func writeTinyDataset(t *testing.T, dir string, n map[string]int, h, w int) {
	t.Helper()
	r := rand.New(rand.NewPCG(9, 9))
	for split, count := range n {
		for _, sub := range []string{"image", "mask"} {
			os.MkdirAll(filepath.Join(dir, split, sub), 0o755)
		}
		for i := 0; i < count; i++ {
			img := image.NewRGBA(image.Rect(0, 0, w, h))
			mask := image.NewGray(image.Rect(0, 0, w, h))
			y0, x0 := r.IntN(h/2), r.IntN(w/2)
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					c := color.RGBA{uint8(r.IntN(90)), 40, 30, 255}
					if y >= y0 && y < y0+h/3 && x >= x0 && x < x0+w/3 {
						c = color.RGBA{230, 220, 200, 255}
						mask.SetGray(x, y, color.Gray{255})
					}
					img.SetRGBA(x, y, c)
				}
			}
			name := fmt.Sprintf("%d.png", i)
			for sub, im := range map[string]image.Image{"image": img, "mask": mask} {
				f, _ := os.Create(filepath.Join(dir, split, sub, name))
				png.Encode(f, im)
				f.Close()
			}
		}
	}
}

func trainArgs(data, out string) []string {
	return []string{"--log-format", "json", "train", "--data", data, "--out", out, "--preset", "smoke", "--device", "cpu",
		"--threads", "1", "--batch", "2", "--epochs", "40", "--max-steps-per-epoch", "1", "--bn-recalib", "1", "--checkpoint-every", "0"}
}

// TestTrainKilledAtAnyInstant kills `cardseg-ort train` with SIGKILL at random instants (while
// it trains, validates and writes checkpoints) and checks every time that the last checkpoint
// loads, then resumes from it.
func TestTrainKilledAtAnyInstant(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills several training processes")
	}
	data, run := t.TempDir(), t.TempDir()
	writeTinyDataset(t, data, map[string]int{"train": 4, "test": 2}, 64, 96)
	bin := cliBinary(t)
	last := filepath.Join(run, "checkpoints", "last.onnx")
	r := rand.New(rand.NewPCG(5, 5))
	var prevStep int64 = -1
	for round := 0; round < 3; round++ {
		args := trainArgs(data, run)
		if round > 0 {
			args = []string{"--log-format", "json", "train", "--resume", last, "--out", run}
		}
		cmd := exec.Command(bin, args...)
		var logs strings.Builder
		cmd.Stderr, cmd.Stdout = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for a checkpoint newer than the last round's, then kill at a random instant.
		deadline := time.Now().Add(90 * time.Second)
		for {
			if ck, err := pipeline.LoadCheckpoint(last); err == nil && ck.Progress.Step > prevStep {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: no new checkpoint in time:\n%s", round, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Duration(r.IntN(1500)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		ck, err := pipeline.LoadCheckpoint(last)
		if err != nil {
			t.Fatalf("round %d: checkpoint after SIGKILL does not load: %v\n%s", round, err, logs.String())
		}
		if ck.Progress.Step <= prevStep {
			t.Fatalf("round %d: step went from %d to %d", round, prevStep, ck.Progress.Step)
		}
		prevStep = ck.Progress.Step
		s, err := runtime.NewSessionFromFile(last, runtime.SessionOptions{Provider: runtime.ProviderCPU})
		if err != nil {
			t.Fatalf("round %d: ORT cannot open the checkpoint: %v", round, err)
		}
		s.Close()
	}
}

// TestTrainInterruptSavesAndExits130 sends SIGINT: the run finishes its step, saves, exits 130.
func TestTrainInterruptSavesAndExits130(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a training process")
	}
	data, run := t.TempDir(), t.TempDir()
	writeTinyDataset(t, data, map[string]int{"train": 4, "test": 2}, 64, 96)
	cmd := exec.Command(cliBinary(t), trainArgs(data, run)...)
	var logs strings.Builder
	cmd.Stderr, cmd.Stdout = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(run, "checkpoints", "last.onnx")
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := os.Stat(last); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no checkpoint:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "--resume") {
		t.Errorf("no resume hint:\n%s", logs.String())
	}
	if _, err := pipeline.LoadCheckpoint(last); err != nil {
		t.Fatal(err)
	}
}

func TestTrainRefusesBrokenDataset(t *testing.T) {
	data, run := t.TempDir(), t.TempDir()
	writeTinyDataset(t, data, map[string]int{"train": 4, "test": 2}, 64, 96)
	os.WriteFile(filepath.Join(data, "train", "image", "broken.png"), []byte("\x89PNG\r\n\x1a\nnope"), 0o644)
	os.WriteFile(filepath.Join(data, "train", "mask", "broken.png"), []byte("\x89PNG\r\n\x1a\nnope"), 0o644)
	out, code := runCLI(t, nil, trainArgs(data, run)...)
	if code == 0 || !strings.Contains(out, "broken.png") || !strings.Contains(out, "--skip-bad") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestTrainInit: --init lays a safetensors file over the random start (here a classifier-
// style file holding only backbone tensors under features.N names) and refuses a file that
// is not safetensors, naming it.
func TestTrainInit(t *testing.T) {
	data, run := t.TempDir(), t.TempDir()
	writeTinyDataset(t, data, map[string]int{"train": 4, "test": 2}, 64, 96)
	a := model.MobileNetV3Large(1, 2)
	w := model.Init(a, 3)
	f := safetensors.File{Tensors: map[string]safetensors.Tensor{}}
	for _, p := range a.Params() {
		if name, ok := strings.CutPrefix(p.Name, "backbone."); ok {
			tt, err := safetensors.FromFloat32(w.Tensors[p.Name], p.Shape...)
			if err != nil {
				t.Fatal(err)
			}
			f.Tensors["features."+name] = tt
		}
	}
	init := filepath.Join(t.TempDir(), "backbone.safetensors")
	if err := safetensors.WriteFile(init, f); err != nil {
		t.Fatal(err)
	}
	args := append(trainArgs(data, run), "--epochs", "1", "--init", init)
	out, code := runCLI(t, nil, args...)
	if code != 0 || !strings.Contains(out, "starting from pretrained weights") || !strings.Contains(out, fmt.Sprintf(`"loaded":%d`, len(f.Tensors))) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(bad, []byte("not safetensors"), 0o644)
	out, code = runCLI(t, nil, append(trainArgs(data, t.TempDir()), "--init", bad)...)
	if code == 0 || !strings.Contains(out, "bad.safetensors") {
		t.Fatalf("bad --init: exit %d:\n%s", code, out)
	}
}

// TestResumeRefusesConfigChanges: --resume keeps the run's configuration, so flags that would
// change the result are refused by name (they used to be ignored silently), execution
// settings are accepted, and a finished run says there is nothing to resume.
func TestResumeRefusesConfigChanges(t *testing.T) {
	data, run := t.TempDir(), t.TempDir()
	writeTinyDataset(t, data, map[string]int{"train": 2, "test": 2}, 64, 96)
	args := trainArgs(data, run)
	for i, a := range args {
		if a == "--epochs" {
			args[i+1] = "1"
		}
	}
	if out, code := runCLI(t, nil, args...); code != 0 {
		t.Fatalf("train exited %d:\n%s", code, out)
	}
	last := filepath.Join(run, "checkpoints", "last.onnx")
	out, code := runCLI(t, nil, "train", "--resume", last, "--epochs", "3", "--lr", "0.1", "--threads", "1")
	if code == 0 || !strings.Contains(out, "--epochs, --lr would change it") {
		t.Errorf("resume with --epochs and --lr: exit %d, want a refusal naming both:\n%s", code, out)
	}
	out, code = runCLI(t, nil, "train", "--resume", last, "--threads", "1", "--device", "cpu")
	if code != 0 || !strings.Contains(out, "already finished (epoch 1 of 1)") {
		t.Errorf("resume of a finished run: exit %d:\n%s", code, out)
	}
}
