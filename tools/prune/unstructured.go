package prune

import (
	"fmt"
	"math"
	"slices"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// LayerSparsity is one convolution weight's share of zeros.
type LayerSparsity struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Size     int     `json:"size"`
	Zeros    int     `json:"zeros"`
	Sparsity float64 `json:"sparsity"`
	// Skipped says why unstructured pruning leaves the tensor alone ("" when it prunes it).
	Skipped string `json:"skipped,omitempty"`
}

// Tensors that unstructured pruning leaves dense, and why. Batch-norm scales and shifts and
// conv biases are skipped by kind: one value per channel, a few thousand in all, and zeroing
// one silences or shifts a whole channel, which is structured pruning's business.
var keepDense = map[string]string{
	"backbone.0.0.weight":               "the stem conv reads the image: 432 weights, the most sensitive layer",
	"classifier.low_classifier.weight":  "a final classifier: it writes the logits from few weights",
	"classifier.high_classifier.weight": "a final classifier: it writes the logits from few weights",
}

// unstructuredSkip says why a tensor is not pruned by magnitude ("" when it is).
func unstructuredSkip(p model.ParamSpec) string {
	switch p.Kind {
	case model.ConvWeight, model.ConvWeightPT:
		return keepDense[p.Name]
	case model.BNWeight, model.BNBias:
		return "batch-norm scale/shift"
	case model.BNMean, model.BNVar:
		return "batch-norm running statistic (not a parameter)"
	default:
		return "bias"
	}
}

// candidate is one prunable tensor: its weights' magnitudes (-1 where the mask already holds a
// zero, so those go first and stay pruned).
type candidate struct {
	name  string
	score []float64
}

// pruneWeights zeroes the smallest-magnitude conv weights: Amount of all prunable weights
// (global) or of each prunable tensor (layerwise), never fewer than the mask already holds.
func pruneWeights(a model.Arch, w *model.Weights, flatMask []float32, opts Options) (*Result, error) {
	out := w.Clone()
	mask := splitMask(a, flatMask)
	if mask == nil {
		mask = map[string][]float32{}
	}
	var cands []candidate
	specs := a.Params()
	for _, p := range specs {
		if unstructuredSkip(p) != "" {
			continue
		}
		d := out.Tensors[p.Name]
		s := make([]float64, len(d))
		m := mask[p.Name]
		for i, v := range d {
			s[i] = math.Abs(float64(v))
			if m != nil && m[i] == 0 {
				s[i] = -1
			}
		}
		cands = append(cands, candidate{name: p.Name, score: s})
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("prune: the architecture has no prunable conv weights")
	}
	prune := func(group []candidate) {
		n := 0
		for _, c := range group {
			n += len(c.score)
		}
		k := int(math.Round(opts.Amount * float64(n)))
		for _, i := range smallest(group, k) {
			c := group[i.tensor]
			out.Tensors[c.name][i.index] = 0
			if mask[c.name] == nil {
				mask[c.name] = ones(len(c.score))
			}
			mask[c.name][i.index] = 0
		}
	}
	if opts.Scope == Global {
		prune(cands)
	} else {
		for _, c := range cands {
			prune([]candidate{c})
		}
	}
	res := &Result{Arch: a, Weights: out}
	if len(mask) > 0 {
		flat, err := joinMask(a, mask)
		if err != nil {
			return nil, err
		}
		res.Mask = flat
	}
	res.Layers = Sparsity(a, out)
	return res, nil
}

type position struct{ tensor, index int }

// smallest returns the k lowest-scoring positions of a group (at least every masked one),
// ties broken by tensor then index so the choice is reproducible.
func smallest(group []candidate, k int) []position {
	var all []float64
	masked := 0
	for _, c := range group {
		all = append(all, c.score...)
		for _, s := range c.score {
			if s < 0 {
				masked++
			}
		}
	}
	k = min(max(k, masked), len(all))
	if k == 0 {
		return nil
	}
	slices.Sort(all)
	threshold := all[k-1]
	below := 0 // strictly below the threshold: all pruned
	for _, s := range all[:k] {
		if s < threshold {
			below++
		}
	}
	atThreshold := k - below
	out := make([]position, 0, k)
	for t, c := range group {
		for i, s := range c.score {
			switch {
			case s < threshold:
				out = append(out, position{t, i})
			case s == threshold && atThreshold > 0:
				out = append(out, position{t, i})
				atThreshold--
			}
		}
	}
	return out
}

func ones(n int) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = 1
	}
	return d
}

// Sparsity reports every convolution weight's zeros, marking those unstructured pruning skips.
func Sparsity(a model.Arch, w *model.Weights) []LayerSparsity {
	var out []LayerSparsity
	for _, p := range a.Params() {
		if p.Kind != model.ConvWeight && p.Kind != model.ConvWeightPT {
			continue
		}
		zeros := 0
		for _, v := range w.Tensors[p.Name] {
			if v == 0 {
				zeros++
			}
		}
		out = append(out, LayerSparsity{Name: p.Name, Shape: []int64(p.Shape), Size: p.Size(), Zeros: zeros,
			Sparsity: float64(zeros) / float64(p.Size()), Skipped: unstructuredSkip(p)})
	}
	return out
}
