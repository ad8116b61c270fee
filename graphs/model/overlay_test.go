package model

import (
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
)

// TestOverlay: a classifier-style file (features.N names, no head, an extra fc tensor) sets
// the backbone and leaves the head; a wrong shape and a file of strangers are errors.
func TestOverlay(t *testing.T) {
	a := MobileNetV3Large(1, 2)
	src := Init(a, 7)
	f := safetensors.File{Tensors: map[string]safetensors.Tensor{}}
	for _, p := range a.Params() {
		if !strings.HasPrefix(p.Name, "backbone.") {
			continue
		}
		tt, err := safetensors.FromFloat32(src.Tensors[p.Name], p.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		f.Tensors["features."+strings.TrimPrefix(p.Name, "backbone.")] = tt
	}
	fc, _ := safetensors.FromFloat32(make([]float32, 6), 2, 3)
	f.Tensors["classifier.3.weight"] = fc
	w := Init(a, 1)
	head := append([]float32(nil), w.Tensors["classifier.low_classifier.weight"]...)
	r, err := a.Overlay(w, f, "test.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if r.Renamed != len(r.Loaded) || len(r.Loaded) == 0 || len(r.Unused) != 1 || r.Unused[0] != "classifier.3.weight" {
		t.Fatalf("report: loaded %d renamed %d unused %v", len(r.Loaded), r.Renamed, r.Unused)
	}
	for _, n := range r.Loaded {
		for i, v := range w.Tensors[n] {
			if v != src.Tensors[n][i] {
				t.Fatalf("%s not taken from the file", n)
			}
		}
	}
	for i, v := range w.Tensors["classifier.low_classifier.weight"] {
		if v != head[i] {
			t.Fatal("a tensor the file lacks was changed")
		}
	}
	bad, _ := safetensors.FromFloat32(make([]float32, 4), 2, 2)
	f.Tensors["features.0.0.weight"] = bad
	if _, err := a.Overlay(Init(a, 1), f, "bad.safetensors"); err == nil || !strings.Contains(err.Error(), "features.0.0.weight") {
		t.Fatalf("wrong shape: %v", err)
	}
	strangers := safetensors.File{Tensors: map[string]safetensors.Tensor{"x": fc}}
	if _, err := a.Overlay(Init(a, 1), strangers, "other.safetensors"); err == nil {
		t.Fatal("a file of strangers accepted")
	}
}
