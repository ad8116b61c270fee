package step_test

import (
	"math"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// TestRunningStatisticsUpdate ties the train step's running-statistics outputs to the batch
// statistics graph on the same batch and weights: PyTorch's update, (1−m)·running +
// m·(the unbiased batch variance, or the batch mean), for every batch-norm buffer. The step
// folds the variance's count/(count−1) into its constants; this checks the fold without
// PyTorch (TestGradientsMatchPyTorch checks it against torch where torch is installed).
func TestRunningStatisticsUpdate(t *testing.T) {
	if err := runtime.Init(); err != nil {
		t.Fatal(err)
	}
	const n, h, w = 2, 64, 96
	a := model.MobileNetV3Large(1, 2)
	c := step.Config{Arch: a, Batch: n, Height: h, Width: w, Loss: step.DefaultLoss, Adam: step.DefaultAdamW}
	st := newTrainState(a, n, h, w, 7)
	for _, p := range a.Params() { // running statistics away from their initial zeros and ones
		if !p.Kind.Trainable() {
			for i := range st.w.Tensors[p.Name] {
				st.w.Tensors[p.Name][i] = 0.5 + 0.01*float32(i%7)
			}
		}
	}
	g, err := step.TrainStep(c)
	out := runGraph(t, g, err, st.feeds(c, 1e-3))
	sg, err := step.BNStats(c)
	feeds := map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{n, 3, h, w}, st.img)}
	for _, p := range a.Params() {
		feeds[p.Name] = runtime.MustNew([]int64(p.Shape), st.w.Tensors[p.Name])
	}
	stats := runGraph(t, sg, err, feeds)
	checked := 0
	for _, p := range a.Params() {
		if p.Kind.Trainable() {
			continue
		}
		got := runtime.Data[float32](out[step.Next(p.Name)])
		batch := runtime.Data[float32](stats[step.BNStatName(p.Name)])
		old := st.w.Tensors[p.Name]
		m := float64(p.Momentum)
		for i := range got {
			want := (1-m)*float64(old[i]) + m*float64(batch[i])
			if d := math.Abs(float64(got[i]) - want); d > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("%s[%d] = %.8g, want %.8g (momentum %g, batch %.8g)", p.Name, i, got[i], want, m, batch[i])
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no running statistics in the network")
	}
}
