package prune

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// BenchmarkInference times the exported model at the CPU preset's 144×192, batch 1, one ORT
// thread: dense, and after the CLI's default 30% structured pruning.
func BenchmarkInference(b *testing.B) {
	const h, w = 144, 192
	a := model.MobileNetV3Large(1, 2)
	weights := perturbedWeights(a, 1)
	pruned, err := Prune(a, weights, nil, Options{Amount: 0.3, Structured: true, Squeeze: true, Multiple: 8})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    model.Arch
		w    *model.Weights
	}{
		{"dense", a, weights},
		{"structured-30", pruned.Arch, pruned.Weights},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g, err := step.Inference(step.Config{Arch: tc.a, Batch: 1, Height: h, Width: w}, tc.w)
			if err != nil {
				b.Fatal(err)
			}
			m, err := g.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			s, err := runtime.NewSession(tc.name, m, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			feeds := map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{1, 3, h, w}, randomImages(1, h, w, 1))}
			for b.Loop() {
				if _, err := s.Run(feeds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
