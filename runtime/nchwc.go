package runtime

import "fmt"

// NCHWcBlock runs probe, a model that reorders a float32 [1, 4, 1, 1] input "x" into ONNX
// Runtime's blocked-channel layout and outputs it as "y" (graphs.NCHWcProbe), on the CPU
// provider, and returns the block size: the output's channel count, 4 rounded up to the block.
// An error means this ONNX Runtime build or CPU has no NCHWc kernels (no AVX2, a non-x86 CPU,
// or contrib operators left out of the build).
func NCHWcBlock(probe []byte) (int64, error) {
	s, err := NewSession("nchwc_probe", probe, SessionOptions{Provider: ProviderCPU, IntraOpThreads: 1})
	if err != nil {
		return 0, fmt.Errorf("onnxruntime: no NCHWc CPU kernels: %w", err)
	}
	defer s.Close()
	out, err := s.Run(map[string]*Tensor{"x": MustNew([]int64{1, 4, 1, 1}, []float32{1, 2, 3, 4})})
	if err != nil {
		return 0, fmt.Errorf("onnxruntime: NCHWc probe: %w", err)
	}
	y := out["y"]
	if y == nil || len(y.Shape) != 4 || y.Shape[1] < 4 || y.Shape[1]&(y.Shape[1]-1) != 0 {
		return 0, fmt.Errorf("onnxruntime: NCHWc probe gave %v, want [1, block, 1, 1]", y)
	}
	v := y.Float32s()
	for i, want := range []float32{1, 2, 3, 4} { // channels 0..3 are lanes 0..3 of the one block
		if v[i] != want {
			return 0, fmt.Errorf("onnxruntime: NCHWc probe reordered [1 2 3 4] to %v", v)
		}
	}
	return y.Shape[1], nil
}
