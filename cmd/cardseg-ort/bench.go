package main

// BenchCmd groups the benchmarks; each prints human text or one JSON line.
type BenchCmd struct {
	Data  BenchDataCmd  `cmd:"" help:"Time the data loader: decode, augment, resize and normalise, in images/s and per core."`
	Train BenchTrainCmd `cmd:"" help:"Time the training step (median ms, img/s, peak RSS); --compare-torch adds PyTorch's on the same machine."`
}
