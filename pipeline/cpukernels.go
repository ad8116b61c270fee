package pipeline

import (
	"fmt"
	"os"
	"sync"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// EnvStandardOps, set to 1, keeps CPU step graphs standard ONNX (no NCHWc kernels): slower,
// for comparisons and for ONNX Runtime builds whose NCHWc kernels misbehave.
const EnvStandardOps = "CARDSEG_STANDARD_OPS"

// EnvEmulateHalf, set to 1, runs FP16 graphs on the CPU with float16 rounding emulated
// (graphs.Graph.MarshalEmulatingHalf): ORT's CPU provider otherwise computes them in float32
// throughout. For studying mixed-precision training without a GPU; several times slower.
const EnvEmulateHalf = "CARDSEG_EMULATE_HALF"

// marshalFor serialises a step graph for a session on provider p: FP16 graphs on the CPU
// with float16 rounding emulated when CARDSEG_EMULATE_HALF=1.
func marshalFor(g *graphs.Graph, cfg step.Config, p runtime.Provider) ([]byte, error) {
	if cfg.FP16 && onCPU(p) && os.Getenv(EnvEmulateHalf) == "1" {
		if cfg.CustomOps() {
			return nil, fmt.Errorf("%s=1 emulates float16 in float32 operators; our fused operators take float16 only (set %s=0)", EnvEmulateHalf, EnvFusedOps)
		}
		return g.MarshalEmulatingHalf(nil)
	}
	return g.Marshal()
}

// EnvMemPattern, set to 1, keeps ONNX Runtime's memory-pattern planning on for CPU train
// sessions (noMemPattern), for comparisons.
const EnvMemPattern = "CARDSEG_ORT_MEM_PATTERN"

// noMemPattern reports whether a train session on provider p turns ORT's memory pattern off:
// on the CPU (runtime.SessionOptions.DisableMemPattern says why) unless CARDSEG_ORT_MEM_PATTERN=1.
func noMemPattern(p runtime.Provider) bool {
	return onCPU(p) && os.Getenv(EnvMemPattern) != "1"
}

var nchwc struct {
	once  sync.Once
	block int64
	err   error
}

// NCHWcBlock is the block size of this machine's ONNX Runtime NCHWc CPU kernels, probed once
// per process; an error says why there are none (the step graphs then stay standard ONNX).
func NCHWcBlock() (int64, error) {
	nchwc.once.Do(func() {
		if nchwc.err = runtime.Init(); nchwc.err != nil {
			return
		}
		var b []byte
		if b, nchwc.err = graphs.NCHWcProbe().Marshal(); nchwc.err == nil {
			nchwc.block, nchwc.err = runtime.NCHWcBlock(b)
		}
	})
	return nchwc.block, nchwc.err
}

// onCPU reports whether a session for provider p runs on the CPU provider.
func onCPU(p runtime.Provider) bool {
	rp, err := runtime.ResolveProvider(p)
	return err == nil && rp == runtime.ProviderCPU
}

// cpuKernels settles cfg.NCHWcBlock for a session on provider p: on the CPU, unless the
// configuration or CARDSEG_STANDARD_OPS=1 says otherwise, the depthwise convolutions run on
// ORT's blocked kernels where the probe finds them (several times faster than ORT's generic
// path for convolutions with runtime weights).
func cpuKernels(cfg step.Config, p runtime.Provider) step.Config {
	if !onCPU(p) {
		cfg.NCHWcBlock = -1
		return cfg
	}
	if cfg.NCHWcBlock != 0 {
		return cfg
	}
	cfg.NCHWcBlock = -1
	if os.Getenv(EnvStandardOps) == "1" {
		return cfg
	}
	if b, err := NCHWcBlock(); err == nil {
		cfg.NCHWcBlock = b
	}
	return cfg
}
