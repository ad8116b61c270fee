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

// TestOverfitOneBatch: 30 AdamW steps on one small batch drive the loss far down (the whole
// chain — forward, loss, gradients, optimizer, state hand-over between steps — works).
func TestOverfitOneBatch(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.Batch, cfg.Height, cfg.Width = 2, 64, 96
	sc := cfg.StepConfig()
	ts, err := NewTrainSession(sc, runtime.SessionOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	st, err := NewState(sc.Arch, model.Init(sc.Arch, 5))
	if err != nil {
		t.Fatal(err)
	}
	img, tgt := randomBatch(sc, 3)
	var first, last StepResult
	for i := 0; i < 30; i++ {
		r, err := ts.Step(st, img, tgt, 1e-3)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r
		}
		last = r
	}
	t.Logf("loss %.4f -> %.4f (CE %.4f -> %.4f, Dice %.4f -> %.4f)", first.Loss, last.Loss, first.CE, last.CE, first.Dice, last.Dice)
	if !(last.Loss < 0.25*first.Loss) || !(last.Dice < first.Dice) || !(last.CE < first.CE) {
		t.Fatalf("30 steps on one batch: loss %.4f -> %.4f", first.Loss, last.Loss)
	}
	if st.Step != 30 || st.Weights.BatchesTracked != 30 {
		t.Fatalf("step %d, batches tracked %d", st.Step, st.Weights.BatchesTracked)
	}
}
