package prune

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// killChannels silences channels of every channel group so that removing exactly them leaves
// the network's function unchanged, and both criteria rank them last: a depthwise filter of
// zeros with a batch norm of γ = β = 0 outputs 0, which ReLU and hardswish keep at 0, so
// nothing downstream reads the channel; likewise a squeeze channel whose fc1 row and bias are
// 0, the last conv's channels and the head's inter channels (filter and γ, β zero). shares
// give the dead fraction of each group (cycled). It returns the live width of every group by
// layer and kind.
func killChannels(a model.Arch, w *model.Weights, shares []float64, head bool, seed uint64) map[string]int {
	r := rand.New(rand.NewPCG(seed, 1))
	live := map[string]int{}
	gi := 0
	kill := func(key string, width int, zero func(c int)) {
		share := shares[gi%len(shares)]
		gi++
		dead := int(math.Round(share * float64(width)))
		for _, c := range r.Perm(width)[:dead] {
			zero(c)
		}
		live[key] = width - dead
	}
	zeroConvBN := func(prefix string) func(int) {
		return func(c int) {
			f := w.Tensors[prefix+".0.weight"]
			per := len(f) / len(w.Tensors[prefix+".1.weight"])
			clear(f[c*per : (c+1)*per])
			w.Tensors[prefix+".1.weight"][c], w.Tensors[prefix+".1.bias"][c] = 0, 0
		}
	}
	for i, b := range a.Blocks {
		l := layersOf(i+1, b)
		if l.expand != "" {
			kill(fmt.Sprintf("backbone.%d %s", i+1, kindExpansion), b.Expanded, zeroConvBN(l.depthwise))
		}
		if b.SE {
			fc1 := w.Tensors[l.se+".fc1.weight"]
			per := len(fc1) / b.Squeeze
			kill(l.se+" "+kindSqueeze, b.Squeeze, func(c int) {
				clear(fc1[c*per : (c+1)*per])
				w.Tensors[l.se+".fc1.bias"][c] = 0
			})
		}
	}
	if head {
		last := fmt.Sprintf("backbone.%d", len(a.Blocks)+1)
		kill(last+" "+kindLastConv, a.LastConv, zeroConvBN(last))
		kill("classifier.cbr "+kindInter, a.Inter, zeroConvBN("classifier.cbr"))
	}
	return live
}

// Removing channels that contribute nothing must leave the network's output unchanged: that
// holds only if every tensor touching a channel is sliced consistently (expansion conv and
// its batch norm, depthwise conv and batch norm, squeeze-and-excite fc1 inputs and fc2
// outputs, projection inputs; fc1 outputs and fc2 inputs; the last conv and the head). Both
// criteria rank silent channels last, layerwise and global.
func TestStructuredRemovesSilentChannelsExactly(t *testing.T) {
	const h, wd = 64, 64
	images := randomImages(2, h, wd, 3)
	for _, tc := range []struct {
		name   string
		opts   Options
		shares []float64
	}{
		{"layerwise l1 expansion only", Options{Scope: Layerwise, Criterion: L1}, []float64{0.3}},
		{"layerwise bn-gamma with squeeze and head", Options{Scope: Layerwise, Criterion: BNGamma, Squeeze: true, Head: true}, []float64{0.3}},
		{"layerwise l1 with squeeze and head", Options{Scope: Layerwise, Criterion: L1, Squeeze: true, Head: true}, []float64{0.25}},
		// Global ranking gives each block its own share; squeeze and head groups stay (their
		// silent shares differ from the expansion channels', and global ranks kinds apart).
		{"global bn-gamma uneven shares", Options{Scope: Global, Criterion: BNGamma}, []float64{0.1, 0.5, 0.25, 0.4}},
		{"global l1 uneven shares", Options{Scope: Global, Criterion: L1}, []float64{0.4, 0.15, 0.3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := model.MobileNetV3Large(1, 2)
			w := perturbedWeights(a, 11)
			live := killChannels(a, w, tc.shares, tc.opts.Head, 5)
			// The amount that removes exactly the silent channels: every group's share
			// (layerwise), or the silent share of each kind (global; the kinds are ranked
			// separately, so the test gives them the same overall share).
			if tc.opts.Scope == Layerwise {
				tc.opts.Amount = tc.shares[0]
			} else {
				var dead, total float64
				for _, b := range a.Blocks[1:] {
					total += float64(b.Expanded)
				}
				for k, n := range live {
					if strings.HasSuffix(k, kindExpansion) {
						dead -= float64(n)
					}
				}
				dead += total
				tc.opts.Amount = dead / total
			}
			tc.opts.Structured = true
			res, err := Prune(a, w, nil, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, c := range res.Channels {
				want, ok := live[c.Layer+" "+c.Kind]
				if !ok {
					continue
				}
				checked++
				if c.After != want {
					t.Errorf("%s %s: %d channels kept, %d are live", c.Layer, c.Kind, c.After, want)
				}
			}
			if checked < 14 {
				t.Fatalf("checked only %d channel groups", checked)
			}
			// No silent channel survives in the depthwise batch norms.
			for i, b := range res.Arch.Blocks {
				if l := layersOf(i+1, b); l.expand != "" {
					for c, g := range res.Weights.Tensors[l.depthwise+".1.weight"] {
						if g == 0 {
							t.Fatalf("backbone.%d kept silent channel %d", i+1, c)
						}
					}
				}
			}
			if res.Arch.TrainableCount() >= a.TrainableCount() {
				t.Fatalf("trainable parameters %d -> %d", a.TrainableCount(), res.Arch.TrainableCount())
			}
			want := logits(t, a, w, h, wd, images)
			got := logits(t, res.Arch, res.Weights, h, wd, images)
			diff, scale := maxDiff(got, want)
			// Float sums in another order differ by ~1e-7 of the logits; a single channel
			// sliced wrong moves them by 1e-3 or more.
			if diff > 1e-5*scale {
				t.Fatalf("pruned logits differ by %.3g (largest logit %.3g)", diff, scale)
			}
		})
	}
}

// The bar: 30% structured pruning (the CLI's defaults: layerwise, bn-gamma, squeeze
// channels too, widths in multiples of 8) removes at least a quarter of the exported model's
// parameters, and the pruned model runs on ONNX Runtime, at batch 1 and 2.
func TestThirtyPercentStructuredShrinksExportedModel(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	w := perturbedWeights(a, 2)
	before := exportedParams(t, a, w)
	for _, tc := range []struct {
		name string
		opts Options
		min  float64
	}{
		{"cli defaults", Options{Amount: 0.3, Structured: true, Squeeze: true, Multiple: 8}, 0.25},
		{"expansion only, exact widths", Options{Amount: 0.3, Structured: true}, 0.25},
		{"global l1", Options{Amount: 0.3, Structured: true, Scope: Global, Criterion: L1, Squeeze: true, Multiple: 8}, 0.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Prune(a, w, nil, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			after := exportedParams(t, res.Arch, res.Weights)
			removed := 1 - float64(after)/float64(before)
			t.Logf("exported parameters %d -> %d (%.1f%% removed)", before, after, 100*removed)
			if removed < tc.min {
				t.Fatalf("removed %.1f%% of the exported parameters, want at least %.0f%%", 100*removed, 100*tc.min)
			}
			for i, b := range res.Arch.Blocks {
				if b.In != a.Blocks[i].In || b.Out != a.Blocks[i].Out {
					t.Fatalf("backbone.%d residual widths changed: %d->%d became %d->%d", i+1, a.Blocks[i].In, a.Blocks[i].Out, b.In, b.Out)
				}
				if a.Blocks[i].Expanded != a.Blocks[i].In && b.Expanded == b.In {
					t.Fatalf("backbone.%d pruned to its input width %d: the expansion conv would vanish", i+1, b.In)
				}
				if tc.opts.Multiple == 8 && (b.Expanded%8 != 0 || b.SE && b.Squeeze%8 != 0) {
					t.Fatalf("backbone.%d widths %d/%d are not multiples of 8", i+1, b.Expanded, b.Squeeze)
				}
			}
			for _, n := range []int{1, 2} {
				y := logits(t, res.Arch, res.Weights, 64, 96, randomImages(n, 64, 96, 4))
				for _, v := range y {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Fatalf("pruned model output %v", v)
					}
				}
			}
		})
	}
}

// A parameter mask from earlier unstructured pruning is sliced with the weights: after
// structured pruning the mask still marks exactly the zero weights.
func TestStructuredSlicesTheMask(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	w := perturbedWeights(a, 3)
	first, err := Prune(a, w, nil, Options{Amount: 0.4})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Prune(a, first.Weights, first.Mask, Options{Amount: 0.3, Structured: true, Squeeze: true, Head: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mask) != res.Arch.TrainableCount() {
		t.Fatalf("mask of %d values for %d parameters", len(res.Mask), res.Arch.TrainableCount())
	}
	masks := splitMask(res.Arch, res.Mask)
	zeros := 0
	for name, m := range masks {
		for i, v := range res.Weights.Tensors[name] {
			if (m[i] == 0) != (v == 0) {
				t.Fatalf("%s[%d] = %g with mask %g", name, i, v, m[i])
			}
			if v == 0 {
				zeros++
			}
		}
	}
	if zeros == 0 {
		t.Fatal("no masked weights left")
	}
}

func TestRoundWidth(t *testing.T) {
	for _, tc := range []struct{ n, width, avoid, m, want int }{
		{45, 64, 16, 1, 45},
		{45, 64, 16, 8, 48},
		{44, 64, 16, 8, 48},
		{43, 64, 16, 8, 40},
		{3, 64, 16, 8, 8},   // at least one multiple
		{0, 64, 16, 1, 1},   // never empty
		{16, 64, 16, 8, 24}, // off the residual width, upwards
		{40, 44, 40, 8, 44}, // upwards, but not past the width
		{70, 64, 0, 8, 64},  // never more than there is
		{1000, 960, 0, 8, 960},
	} {
		if got := roundWidth(tc.n, tc.width, tc.avoid, tc.m); got != tc.want {
			t.Errorf("roundWidth(%d, %d, %d, %d) = %d, want %d", tc.n, tc.width, tc.avoid, tc.m, got, tc.want)
		}
	}
}

func TestOptionsRejected(t *testing.T) {
	a := model.MobileNetV3Large(1, 2)
	w := model.Init(a, 1)
	for _, tc := range []struct {
		name string
		opts Options
		mask []float32
		want string
	}{
		{"amount 1", Options{Amount: 1, Structured: true}, nil, "amount 1"},
		{"negative amount", Options{Amount: -0.1}, nil, "amount -0.1"},
		{"NaN amount", Options{Amount: math.NaN()}, nil, "amount NaN"},
		{"bn-gamma unstructured", Options{Amount: 0.3, Criterion: BNGamma}, nil, "unstructured pruning ranks single weights"},
		{"squeeze unstructured", Options{Amount: 0.3, Squeeze: true}, nil, "use --structured"},
		{"unknown scope", Options{Amount: 0.3, Scope: "sideways"}, nil, `scope "sideways"`},
		{"unknown criterion", Options{Amount: 0.3, Structured: true, Criterion: "l2"}, nil, `criterion "l2"`},
		{"short mask", Options{Amount: 0.3}, make([]float32, 10), "the mask has 10 values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Prune(a, w, tc.mask, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
