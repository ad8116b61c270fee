package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// DoctorCmd reports what cardseg-ort can run on. It exits non-zero when ONNX Runtime itself
// cannot be loaded; a missing GPU is reported, not an error.
type DoctorCmd struct {
	JSON bool `help:"Print one JSON object instead of text."`
}

type doctorReport struct {
	ORTVersion string             `json:"ort_version"`
	Library    string             `json:"library"`
	Source     string             `json:"library_source"`
	Providers  []string           `json:"providers"`
	CUDA       runtime.CUDAReport `json:"cuda"`
	Error      string             `json:"error,omitempty"`
}

func (c *DoctorCmd) Run() error {
	var r doctorReport
	lib, src, err := runtime.LibraryPath()
	r.Library, r.Source = lib, string(src)
	if err == nil {
		err = runtime.Init()
	}
	if err != nil {
		r.Error = err.Error()
		c.print(r)
		return &exitError{code: 2, err: fmt.Errorf("ONNX Runtime unavailable: %w", err)}
	}
	r.ORTVersion = runtime.Version()
	r.Providers = []string{"CPUExecutionProvider"}
	r.CUDA = runtime.CheckCUDA()
	if r.CUDA.Usable {
		r.Providers = append(r.Providers, "CUDAExecutionProvider")
	}
	c.print(r)
	return nil
}

func (c *DoctorCmd) print(r doctorReport) {
	if c.JSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	w := os.Stdout
	if r.Error != "" {
		fmt.Fprintf(w, "ONNX Runtime: NOT AVAILABLE\n  %s\n", r.Error)
		return
	}
	fmt.Fprintf(w, "ONNX Runtime:   %s\n", r.ORTVersion)
	fmt.Fprintf(w, "library:        %s (from %s)\n", r.Library, r.Source)
	fmt.Fprintf(w, "providers:      %s\n", strings.Join(r.Providers, ", "))
	fmt.Fprintf(w, "CUDA provider:  %s %s\n", yesNo(r.CUDA.ProviderFound), r.CUDA.ProviderLibrary)
	for _, l := range r.CUDA.Libraries {
		fmt.Fprintf(w, "  %-20s %s\n", l.Name, yesNo(l.Found))
	}
	if len(r.CUDA.GPUs) == 0 {
		fmt.Fprintf(w, "GPUs:           none visible\n")
	} else {
		fmt.Fprintf(w, "GPUs:           %s\n", strings.Join(r.CUDA.GPUs, ", "))
	}
	if r.CUDA.Usable {
		fmt.Fprintf(w, "CUDA:           usable\n")
	} else {
		fmt.Fprintf(w, "CUDA:           not usable: %s\n", r.CUDA.Problem)
	}
}

func yesNo(b bool) string {
	if b {
		return "found"
	}
	return "missing"
}
