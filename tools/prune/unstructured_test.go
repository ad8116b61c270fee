package prune

import (
	"math"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// prunableSpecs are the tensors unstructured pruning ranks.
func prunableSpecs(a model.Arch) []model.ParamSpec {
	var out []model.ParamSpec
	for _, p := range a.Params() {
		if unstructuredSkip(p) == "" {
			out = append(out, p)
		}
	}
	return out
}

func abs(v float32) float64 { return math.Abs(float64(v)) }

// Magnitude pruning zeroes exactly the requested share, the smallest weights first (per
// tensor or across all), leaves the skipped tensors alone, and masks exactly what it zeroed.
func TestUnstructuredMagnitude(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	w := perturbedWeights(a, 4)
	for _, tc := range []struct {
		name   string
		scope  Scope
		amount float64
	}{
		{"layerwise 40%", Layerwise, 0.4},
		{"global 60%", Global, 0.6},
		{"global 0%", Global, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Prune(a, w, nil, Options{Amount: tc.amount, Scope: tc.scope})
			if err != nil {
				t.Fatal(err)
			}
			if res.Arch.TrainableCount() != a.TrainableCount() {
				t.Fatal("unstructured pruning changed the architecture")
			}
			masks := splitMask(a, res.Mask)
			total, zeros := 0, 0
			maxPruned, minKept := 0.0, math.Inf(1)
			sparsities := map[float64]bool{}
			for _, p := range prunableSpecs(a) {
				before, after := w.Tensors[p.Name], res.Weights.Tensors[p.Name]
				z := 0
				lMaxPruned, lMinKept := 0.0, math.Inf(1)
				for i := range after {
					pruned := after[i] == 0
					if pruned {
						z++
						lMaxPruned = math.Max(lMaxPruned, abs(before[i]))
					} else {
						lMinKept = math.Min(lMinKept, abs(before[i]))
						if after[i] != before[i] {
							t.Fatalf("%s[%d] changed from %g to %g", p.Name, i, before[i], after[i])
						}
					}
					if m := masks[p.Name]; m != nil && (m[i] == 0) != pruned {
						t.Fatalf("%s[%d]: weight %g, mask %g", p.Name, i, after[i], m[i])
					}
				}
				if tc.scope == Layerwise {
					if want := int(math.Round(tc.amount * float64(len(after)))); z != want {
						t.Fatalf("%s: %d zeros, want %d", p.Name, z, want)
					}
					if lMaxPruned > lMinKept {
						t.Fatalf("%s: pruned |w| %g above kept %g", p.Name, lMaxPruned, lMinKept)
					}
				}
				maxPruned, minKept = math.Max(maxPruned, lMaxPruned), math.Min(minKept, lMinKept)
				sparsities[math.Round(100*float64(z)/float64(len(after)))] = true
				total += len(after)
				zeros += z
			}
			if want := int(math.Round(tc.amount * float64(total))); tc.scope == Global && zeros != want {
				t.Fatalf("%d zeros of %d, want %d", zeros, total, want)
			}
			if tc.scope == Global && tc.amount > 0 {
				if maxPruned > minKept {
					t.Fatalf("pruned |w| up to %g, kept from %g", maxPruned, minKept)
				}
				if len(sparsities) < 5 {
					t.Fatalf("global pruning gave every layer the same sparsity: %v", sparsities)
				}
			}
			// Skipped tensors are untouched.
			for _, p := range a.Params() {
				if unstructuredSkip(p) == "" {
					continue
				}
				for i, v := range res.Weights.Tensors[p.Name] {
					if v != w.Tensors[p.Name][i] {
						t.Fatalf("%s (not pruned: %s) changed", p.Name, unstructuredSkip(p))
					}
				}
			}
			// The report lists every conv weight.
			convs := 0
			for _, l := range res.Layers {
				if l.Skipped == "" {
					convs++
				}
			}
			if convs != len(prunableSpecs(a)) {
				t.Fatalf("report lists %d pruned conv weights, want %d", convs, len(prunableSpecs(a)))
			}
		})
	}
}

// Pruning a pruned network keeps every zero the mask holds, even where the new ranking would
// rather keep the weight, and reaches the new share overall.
func TestUnstructuredKeepsEarlierMask(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	w := perturbedWeights(a, 6)
	first, err := Prune(a, w, nil, Options{Amount: 0.3, Scope: Layerwise})
	if err != nil {
		t.Fatal(err)
	}
	// Fine-tuning may leave masked weights anywhere in the ranking: give them large values in
	// the weights (they are zero in a real run; this checks the mask, not the value, rules).
	w2 := first.Weights.Clone()
	masks := splitMask(a, first.Mask)
	for name, m := range masks {
		for i, v := range m {
			if v == 0 {
				w2.Tensors[name][i] = 10
			}
		}
	}
	for _, tc := range []struct {
		name   string
		amount float64
		want   float64
	}{
		{"smaller share", 0.1, 0.3},
		{"larger share", 0.5, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Prune(a, w2, first.Mask, Options{Amount: tc.amount, Scope: Global})
			if err != nil {
				t.Fatal(err)
			}
			m2 := splitMask(a, res.Mask)
			total, masked := 0, 0
			for _, p := range prunableSpecs(a) {
				for i := range m2[p.Name] {
					if masks[p.Name][i] == 0 && (m2[p.Name][i] != 0 || res.Weights.Tensors[p.Name][i] != 0) {
						t.Fatalf("%s[%d] was pruned and came back", p.Name, i)
					}
					if m2[p.Name][i] == 0 {
						masked++
					}
				}
				total += len(m2[p.Name])
			}
			if got := float64(masked) / float64(total); math.Abs(got-tc.want) > 1e-4 {
				t.Fatalf("%.4f of the prunable weights masked, want %.2f", got, tc.want)
			}
		})
	}
}
