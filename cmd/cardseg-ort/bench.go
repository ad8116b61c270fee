package main

// BenchCmd groups the benchmarks; each prints human text or one JSON line.
type BenchCmd struct {
	Train BenchTrainCmd `cmd:"" help:"Time the training step (median ms, img/s, peak RSS); --compare-torch adds PyTorch's on the same machine."`
}
