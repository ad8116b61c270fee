package prune

import (
	"fmt"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// Result is a pruned network: its architecture, weights and parameter mask (nil when the
// pruning leaves nothing to keep at zero), with what changed.
type Result struct {
	Arch    model.Arch
	Weights *model.Weights
	Mask    []float32
	// Layers lists every convolution weight with its sparsity after pruning (unstructured).
	Layers []LayerSparsity `json:"layers,omitempty"`
	// Channels lists every channel group and its width before and after (structured).
	Channels []ChannelChange `json:"channels,omitempty"`
}

// Prune applies opts to a network with optional existing mask (flat over the trainable
// tensors in Arch.Params() order; its zeros stay zeros). The input is not modified.
func Prune(a model.Arch, w *model.Weights, mask []float32, opts Options) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if err := a.Check(w); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	if mask != nil {
		if n := a.TrainableCount(); len(mask) != n {
			return nil, fmt.Errorf("prune: the mask has %d values for %d trainable parameters", len(mask), n)
		}
	}
	if opts.Structured {
		return pruneChannels(a, w, mask, opts)
	}
	return pruneWeights(a, w, mask, opts)
}

// splitMask cuts a flat parameter mask into per-tensor pieces (copies).
func splitMask(a model.Arch, flat []float32) map[string][]float32 {
	if flat == nil {
		return nil
	}
	out := map[string][]float32{}
	off := 0
	for _, p := range a.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		out[p.Name] = append([]float32(nil), flat[off:off+p.Size()]...)
		off += p.Size()
	}
	return out
}

// joinMask lays per-tensor masks out flat in a's parameter order; tensors without a piece are
// all ones.
func joinMask(a model.Arch, m map[string][]float32) ([]float32, error) {
	var flat []float32
	for _, p := range a.Params() {
		if !p.Kind.Trainable() {
			continue
		}
		piece, ok := m[p.Name]
		if !ok {
			for range p.Size() {
				flat = append(flat, 1)
			}
			continue
		}
		if len(piece) != p.Size() {
			return nil, fmt.Errorf("prune: mask of %s has %d values, the tensor %d", p.Name, len(piece), p.Size())
		}
		flat = append(flat, piece...)
	}
	return flat, nil
}

// MaskedZeros counts the weights a mask holds at zero, and those of them that are not zero
// (which a correct masked fine-tuning never produces).
func MaskedZeros(a model.Arch, w *model.Weights, mask []float32) (masked, nonzero int) {
	for name, piece := range splitMask(a, mask) {
		d := w.Tensors[name]
		for i, m := range piece {
			if m == 0 {
				masked++
				if d[i] != 0 {
					nonzero++
				}
			}
		}
	}
	return masked, nonzero
}
