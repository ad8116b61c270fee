package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// cliBinary builds the command once per test run, so tests exercise exactly what users run.
func cliBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cardseg-cli-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cardseg-ort")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return binPath
}

func runCLI(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(cliBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestDoctorReportsRuntime(t *testing.T) {
	out, code := runCLI(t, nil, "doctor")
	if code != 0 {
		t.Fatalf("doctor exited %d:\n%s", code, out)
	}
	for _, want := range []string{"ONNX Runtime:   1.29.", "CPUExecutionProvider"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

func TestDoctorMissingLibrary(t *testing.T) {
	out, code := runCLI(t, []string{"ORT_LIB=/nonexistent"}, "doctor")
	if code == 0 {
		t.Fatalf("doctor succeeded with ORT_LIB=/nonexistent:\n%s", out)
	}
	if !strings.Contains(out, "/nonexistent") {
		t.Errorf("error does not name the path:\n%s", out)
	}
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("doctor panicked:\n%s", out)
	}
}

func TestDoctorJSON(t *testing.T) {
	out, code := runCLI(t, nil, "doctor", "--json")
	if code != 0 || !strings.Contains(out, `"ort_version":"1.29.`) {
		t.Fatalf("doctor --json exited %d:\n%s", code, out)
	}
}
