package model

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
)

const batchesTrackedSuffix = ".num_batches_tracked"

// ToSafetensors lays the weights out as torchvision's state_dict: every tensor by name with its
// shape, plus <bn>.num_batches_tracked (int64 scalar) for each batch-norm layer, so
// `model.load_state_dict(..., strict=True)` accepts it.
func (a Arch) ToSafetensors(w *Weights, meta map[string]string) (safetensors.File, error) {
	if err := a.Check(w); err != nil {
		return safetensors.File{}, err
	}
	f := safetensors.File{Tensors: map[string]safetensors.Tensor{}, Metadata: map[string]string{}}
	for k, v := range meta {
		f.Metadata[k] = v
	}
	for _, p := range a.Params() {
		t, err := safetensors.FromFloat32(w.Tensors[p.Name], p.Shape...)
		if err != nil {
			return f, fmt.Errorf("%s: %w", p.Name, err)
		}
		f.Tensors[p.Name] = t
		if p.Kind == BNMean {
			name := strings.TrimSuffix(p.Name, ".running_mean") + batchesTrackedSuffix
			t, err := safetensors.FromInt64([]int64{w.BatchesTracked})
			if err != nil {
				return f, err
			}
			f.Tensors[name] = t
		}
	}
	return f, nil
}

// FromSafetensors reads weights by torchvision name, strictly: every tensor of the
// architecture must be there with its exact shape, and nothing else (num_batches_tracked
// aside). Float16, bfloat16 and float64 files are converted.
func (a Arch) FromSafetensors(f safetensors.File, source string) (*Weights, error) {
	w := &Weights{Tensors: map[string][]float32{}}
	known := map[string]bool{}
	var problems []string
	for _, p := range a.Params() {
		known[p.Name] = true
		t, ok := f.Tensors[p.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("missing %s %v", p.Name, p.Shape))
			continue
		}
		if !sameShape(t.Shape, p.Shape) {
			problems = append(problems, fmt.Sprintf("%s has shape %v, want %v", p.Name, t.Shape, p.Shape))
			continue
		}
		d, err := t.Float32s()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", p.Name, err))
			continue
		}
		w.Tensors[p.Name] = d
		if p.Kind == BNMean {
			name := strings.TrimSuffix(p.Name, ".running_mean") + batchesTrackedSuffix
			known[name] = true
			if bt, ok := f.Tensors[name]; ok {
				v, err := bt.Int64s()
				if err != nil || len(v) != 1 {
					problems = append(problems, fmt.Sprintf("%s is not an integer scalar", name))
				} else if v[0] > w.BatchesTracked {
					w.BatchesTracked = v[0]
				}
			}
		}
	}
	var extra []string
	for _, n := range f.Names() {
		if !known[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("... (%d more)", len(extra)-5))
		}
		problems = append(problems, "unexpected tensors "+strings.Join(extra, ", "))
	}
	if len(problems) > 0 {
		if len(problems) > 8 {
			problems = append(problems[:8], fmt.Sprintf("... (%d more problems)", len(problems)-8))
		}
		return nil, fmt.Errorf("%s does not fit the architecture: %s", source, strings.Join(problems, "; "))
	}
	return w, nil
}

// SaveWeights writes the weights as a safetensors file (atomically).
func (a Arch) SaveWeights(path string, w *Weights, meta map[string]string) error {
	f, err := a.ToSafetensors(w, meta)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := safetensors.WriteFile(path, f); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// LoadWeights reads a safetensors file written by SaveWeights or by PyTorch tooling.
func (a Arch) LoadWeights(path string) (*Weights, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return a.FromSafetensors(f, path)
}

func sameShape(a []int64, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// OverlayReport says what Overlay took from a file.
type OverlayReport struct {
	Loaded  []string // network tensors set from the file
	Kept    []string // network tensors the file lacks (they keep their value)
	Unused  []string // file tensors with no counterpart in the network
	Renamed int      // tensors found under torchvision's classification name (features.N → backbone.N)
}

// Overlay sets the tensors of w that f holds, by torchvision name, and keeps the others: a
// start from pretrained weights, e.g. a torchvision MobileNetV3-Large ImageNet classifier
// saved as safetensors (its features.N tensors are the segmentation model's backbone.N, so
// they are found under either name) or another segmentation checkpoint. A tensor whose shape
// differs is an error naming it; so is a file that sets nothing.
func (a Arch) Overlay(w *Weights, f safetensors.File, source string) (OverlayReport, error) {
	var r OverlayReport
	used := map[string]bool{}
	var problems []string
	for _, p := range a.Params() {
		name := p.Name
		t, ok := f.Tensors[name]
		if !ok && strings.HasPrefix(name, "backbone.") {
			name = "features." + strings.TrimPrefix(name, "backbone.")
			t, ok = f.Tensors[name]
			if ok {
				r.Renamed++
			}
		}
		if !ok {
			r.Kept = append(r.Kept, p.Name)
			continue
		}
		used[name] = true
		if p.Kind == BNMean {
			used[strings.TrimSuffix(name, ".running_mean")+batchesTrackedSuffix] = true
		}
		if !sameShape(t.Shape, p.Shape) {
			problems = append(problems, fmt.Sprintf("%s has shape %v, the network's %s is %v", name, t.Shape, p.Name, p.Shape))
			continue
		}
		d, err := t.Float32s()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		w.Tensors[p.Name] = d
		r.Loaded = append(r.Loaded, p.Name)
	}
	for _, n := range f.Names() {
		if !used[n] {
			r.Unused = append(r.Unused, n)
		}
	}
	if len(problems) > 0 {
		if len(problems) > 8 {
			problems = append(problems[:8], fmt.Sprintf("... (%d more problems)", len(problems)-8))
		}
		return r, fmt.Errorf("%s: %s", source, strings.Join(problems, "; "))
	}
	if len(r.Loaded) == 0 {
		return r, fmt.Errorf("%s: none of its %d tensors is a tensor of this network (torchvision names expected, e.g. backbone.0.0.weight or features.0.0.weight)", source, len(f.Tensors))
	}
	return r, nil
}
