package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// Kind says what a named tensor is and how it is initialised.
type Kind int

const (
	ConvWeight   Kind = iota // backbone convs: kaiming normal, fan_out (torchvision MobileNetV3)
	ConvWeightPT             // head convs: PyTorch's Conv2d default, kaiming uniform a=√5
	ConvBias                 // backbone conv biases: zeros
	ConvBiasPT               // head conv biases: uniform ±1/√fan_in
	BNWeight                 // ones
	BNBias                   // zeros
	BNMean                   // running mean: zeros (buffer, not trained)
	BNVar                    // running variance: ones (buffer, not trained)
	FoldedBias               // conv bias produced by folding batch norm (inference only)
)

// Trainable reports whether the optimizer updates tensors of this kind.
func (k Kind) Trainable() bool { return k != BNMean && k != BNVar }

// ParamSpec is one named tensor of the network (a torchvision state_dict key).
type ParamSpec struct {
	Name   string
	Shape  graphs.Shape
	Kind   Kind
	FanIn  int
	FanOut int
	// For BN tensors: the layer's eps and momentum and the conv it follows.
	Eps, Momentum float32
	Conv          string
}

// Size is the element count.
func (p ParamSpec) Size() int { return int(p.Shape.Size()) }

// Weights holds every float tensor of the network by name, plus torchvision's
// num_batches_tracked counter (the same for every batch-norm layer).
type Weights struct {
	Tensors        map[string][]float32
	BatchesTracked int64
}

// Clone deep-copies the weights.
func (w *Weights) Clone() *Weights {
	c := &Weights{Tensors: make(map[string][]float32, len(w.Tensors)), BatchesTracked: w.BatchesTracked}
	for k, v := range w.Tensors {
		c.Tensors[k] = append([]float32(nil), v...)
	}
	return c
}

// Params lists the network's tensors in definition order (trainable parameters and BN
// buffers), as recorded by building the forward graph once.
func (a Arch) Params() []ParamSpec {
	rec := &recorder{}
	g := graphs.New("params")
	x := g.Input("image", graphs.Float, graphs.Shape{1, 3, 64, 64})
	if err := graphs.Build(func() error { Forward(g, x, a, rec, Train); return nil }); err != nil {
		panic(fmt.Sprintf("model: %v", err))
	}
	return rec.specs
}

// TrainableCount is the number of trainable parameters (3,218,308 at width 1.0, 2 classes).
func (a Arch) TrainableCount() int {
	n := 0
	for _, p := range a.Params() {
		if p.Kind.Trainable() {
			n += p.Size()
		}
	}
	return n
}

// recorder is a ParamSource that records the specs and hands out placeholders.
type recorder struct{ specs []ParamSpec }

func (r *recorder) Param(g *graphs.Graph, s ParamSpec) *graphs.Value {
	r.specs = append(r.specs, s)
	return g.Input(s.Name, graphs.Float, s.Shape)
}

// Init draws initial weights from seed, following torchvision: backbone convs kaiming-normal
// (fan_out, gain √2) with zero biases; the LR-ASPP head's convs PyTorch's Conv2d default
// (kaiming-uniform a=√5, bias uniform ±1/√fan_in); batch norm γ=1, β=0, running mean 0, var 1.
func Init(a Arch, seed uint64) *Weights {
	rng := rand.New(rand.NewPCG(seed, 0x6361726473656721))
	w := &Weights{Tensors: map[string][]float32{}}
	for _, p := range a.Params() {
		d := make([]float32, p.Size())
		switch p.Kind {
		case ConvWeight:
			std := math.Sqrt(2 / float64(p.FanOut))
			for i := range d {
				d[i] = float32(rng.NormFloat64() * std)
			}
		case ConvWeightPT, ConvBiasPT:
			bound := 1 / math.Sqrt(float64(p.FanIn))
			for i := range d {
				d[i] = float32((2*rng.Float64() - 1) * bound)
			}
		case BNWeight, BNVar:
			for i := range d {
				d[i] = 1
			}
		}
		w.Tensors[p.Name] = d
	}
	return w
}

// Check verifies that w has every tensor of the architecture with the right size, and nothing
// else.
func (a Arch) Check(w *Weights) error {
	specs := a.Params()
	seen := map[string]bool{}
	for _, p := range specs {
		d, ok := w.Tensors[p.Name]
		if !ok {
			return fmt.Errorf("weights lack %s %v", p.Name, p.Shape)
		}
		if len(d) != p.Size() {
			return fmt.Errorf("weights: %s has %d values, the architecture wants %v (%d)", p.Name, len(d), p.Shape, p.Size())
		}
		seen[p.Name] = true
	}
	var extra []string
	for k := range w.Tensors {
		if !seen[k] {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("weights have tensors the architecture lacks: %v", extra)
	}
	return nil
}

// FoldBN returns inference weights: each conv followed by batch norm gets w·γ/√(var+eps) and a
// bias β − mean·γ/√(var+eps) (named <conv>.bias); BN tensors are dropped.
func FoldBN(a Arch, w *Weights) (*Weights, error) {
	if err := a.Check(w); err != nil {
		return nil, err
	}
	out := &Weights{Tensors: map[string][]float32{}}
	specs := a.Params()
	bnOf := map[string]ParamSpec{}
	for _, p := range specs {
		if p.Kind == BNWeight {
			bnOf[p.Conv] = p
		}
	}
	for _, p := range specs {
		switch p.Kind {
		case BNWeight, BNBias, BNMean, BNVar:
			continue
		case ConvWeight, ConvWeightPT:
			bn, ok := bnOf[p.Name]
			if !ok {
				out.Tensors[p.Name] = append([]float32(nil), w.Tensors[p.Name]...)
				continue
			}
			prefix := bn.Name[:len(bn.Name)-len(".weight")]
			gamma, beta := w.Tensors[prefix+".weight"], w.Tensors[prefix+".bias"]
			mean, variance := w.Tensors[prefix+".running_mean"], w.Tensors[prefix+".running_var"]
			src := w.Tensors[p.Name]
			cout := int(p.Shape[0])
			per := len(src) / cout
			fw := make([]float32, len(src))
			fb := make([]float32, cout)
			for c := 0; c < cout; c++ {
				s := float64(gamma[c]) / math.Sqrt(float64(variance[c])+float64(bn.Eps))
				for k := 0; k < per; k++ {
					fw[c*per+k] = float32(float64(src[c*per+k]) * s)
				}
				fb[c] = float32(float64(beta[c]) - float64(mean[c])*s)
			}
			out.Tensors[p.Name] = fw
			out.Tensors[biasName(p.Name)] = fb
		default:
			out.Tensors[p.Name] = append([]float32(nil), w.Tensors[p.Name]...)
		}
	}
	return out, nil
}

func biasName(weight string) string { return weight[:len(weight)-len(".weight")] + ".bias" }
