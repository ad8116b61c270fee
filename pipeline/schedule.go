package pipeline

import "math"

// LearningRate is the schedule: linear warm-up from 0 over WarmupEpochs, then cosine
// annealing with warm restarts (SGDR: cycles of CosineT0, ·CosineTMult, ... epochs from LR down
// to MinLR), step decay (×StepGamma every StepEvery epochs) or a constant. It is evaluated per
// step at fractional epochs, so it depends only on the step count: resuming needs no state.
func (c TrainConfig) LearningRate(step int64, stepsPerEpoch int) float64 {
	epoch := float64(step) / float64(stepsPerEpoch)
	if c.WarmupEpochs > 0 && epoch < c.WarmupEpochs {
		return c.LR * float64(step+1) / (c.WarmupEpochs * float64(stepsPerEpoch))
	}
	t := epoch - c.WarmupEpochs
	switch c.Schedule {
	case "cosine-restarts":
		period := c.CosineT0
		for t >= period {
			t -= period
			period *= c.CosineTMult
		}
		return c.MinLR + (c.LR-c.MinLR)*(1+math.Cos(math.Pi*t/period))/2
	case "step":
		return c.LR * math.Pow(c.StepGamma, math.Floor(t/c.StepEvery))
	}
	return c.LR
}
