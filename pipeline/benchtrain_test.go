package pipeline

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// BenchmarkTrainStep times one CPU training step at batch 4, 128×160 (2 threads); the full
// comparison with PyTorch is `just bench-train`.
func BenchmarkTrainStep(b *testing.B) {
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width = 4, 128, 160
	sc := cfg.StepConfig()
	ts, err := NewTrainSession(sc, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	st, err := NewState(sc.Arch, model.Init(sc.Arch, 1))
	if err != nil {
		b.Fatal(err)
	}
	img, tgt := randomBatch(sc, 1)
	if _, err := ts.Step(st, img, tgt, 1e-3); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ts.Step(st, img, tgt, 1e-3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(sc.Batch)*float64(b.N)/b.Elapsed().Seconds(), "img/s")
	b.ReportMetric(PeakRSSMB(), "peak-rss-MiB")
}
