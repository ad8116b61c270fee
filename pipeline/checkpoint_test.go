package pipeline

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

func smallState(t testing.TB, cfg TrainConfig, seed uint64) *State {
	t.Helper()
	a := cfg.StepConfig().Arch
	st, err := NewState(a, model.Init(a, seed))
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.M {
		st.M[i] = float32(i%7) * 0.1
		st.V[i] = float32(i%5) * 0.01
	}
	st.Step = 17
	st.Weights.BatchesTracked = 17
	return st
}

func TestCheckpointRoundTripAndORTRunsIt(t *testing.T) {
	cfg := tinyConfig("data")
	st := smallState(t, cfg, 1)
	path := filepath.Join(t.TempDir(), "ck.onnx")
	p := Progress{Step: 17, Epoch: 3, BatchInEpoch: 0, BestIoU: 0.5, BestEpoch: 2, BadEpochs: 1}
	if err := SaveCheckpoint(path, cfg, st, p); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, "round trip", st, ck.State)
	if ck.Progress.Epoch != 3 || ck.Progress.BestIoU != 0.5 || ck.Progress.Config.Height != cfg.Height || ck.State.Weights.BatchesTracked != 17 {
		t.Fatalf("progress %+v", ck.Progress)
	}
	// ONNX Runtime runs the checkpoint as it is.
	s, err := runtime.NewSessionFromFile(path, runtime.SessionOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, w := int64(cfg.Height), int64(cfg.Width)
	out, err := s.Run(map[string]*runtime.Tensor{"image": runtime.MustNew([]int64{2, 3, h, w}, make([]float32, 2*3*h*w))})
	if err != nil {
		t.Fatal(err)
	}
	if got := out["logits"].Shape; len(got) != 4 || got[0] != 2 || got[1] != 2 || got[2] != h || got[3] != w {
		t.Fatalf("logits shape %v", got)
	}
	if exec.Command("/usr/bin/python3", "-c", "import onnx").Run() == nil {
		o, err := exec.Command("/usr/bin/python3", "-c", "import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')", path).CombinedOutput()
		if err != nil || !strings.Contains(string(o), "ok") {
			t.Fatalf("onnx.checker: %v\n%s", err, o)
		}
	}
}

func TestLoadCheckpointErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.onnx")
	os.WriteFile(junk, []byte("not a model at all"), 0o644)
	if _, err := LoadCheckpoint(junk); err == nil || !strings.Contains(err.Error(), "junk.onnx") {
		t.Fatalf("junk: %v", err)
	}
	if _, err := LoadCheckpoint(filepath.Join(dir, "missing.onnx")); err == nil || !strings.Contains(err.Error(), "missing.onnx") {
		t.Fatalf("missing: %v", err)
	}
	// A truncated checkpoint (what a non-atomic writer would leave) is refused, not misread.
	cfg := tinyConfig("data")
	good := filepath.Join(dir, "good.onnx")
	if err := SaveCheckpoint(good, cfg, smallState(t, cfg, 1), Progress{}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	cut := filepath.Join(dir, "cut.onnx")
	os.WriteFile(cut, b[:len(b)/2], 0o644)
	if _, err := LoadCheckpoint(cut); err == nil {
		t.Fatal("a truncated checkpoint loaded")
	}
}

// TestCheckpointDiskFull fills a small tmpfs: the second save fails with an error saying so,
// the first checkpoint stays intact and loadable, and no temporary file is left behind.
func TestCheckpointDiskFull(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyConfig("data")
	st := smallState(t, cfg, 1)
	probe := filepath.Join(t.TempDir(), "probe.onnx")
	if err := SaveCheckpoint(probe, cfg, st, Progress{}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(probe)
	size := fi.Size()*3/2 + 1<<20 // room for one checkpoint, not two
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+itoa(size)); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (%v)", err)
	}
	defer syscall.Unmount(dir, 0)
	path := filepath.Join(dir, "last.onnx")
	if err := SaveCheckpoint(path, cfg, st, Progress{Step: 1}); err != nil {
		t.Fatal(err)
	}
	st2 := smallState(t, cfg, 2)
	err := SaveCheckpoint(path, cfg, st2, Progress{Step: 2})
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "last.onnx") {
		t.Fatalf("second save on a full disk: %v", err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatalf("previous checkpoint lost: %v", err)
	}
	sameWeights(t, "previous checkpoint", st, ck.State)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
