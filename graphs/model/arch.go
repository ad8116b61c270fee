// Package model declares the network cardseg-ort trains: torchvision's
// lraspp_mobilenet_v3_large (MobileNetV3-Large backbone with a dilated last stage, LR-ASPP head)
// as an architecture table, its parameters under torchvision's state_dict names, seeded
// initialisation following torchvision's, and the forward graph in training, evaluation and
// batch-norm-folded (inference) form.
//
// It may import graphs and the standard library.
package model

import "fmt"

// Block is one inverted-residual row of MobileNetV3's table (torchvision's
// InvertedResidualConfig), channels already scaled by the width multiplier.
type Block struct {
	In, Kernel, Expanded, Out int
	SE                        bool // squeeze-and-excite after the depthwise conv
	HardSwish                 bool // activation: hardswish, else ReLU
	Stride, Dilation          int
	Squeeze                   int // squeeze-and-excite width (derived unless pruned)
}

// Residual: the block adds its input to its output.
func (b Block) Residual() bool { return b.Stride == 1 && b.In == b.Out }

// DepthwiseStride is the stride the depthwise conv applies: dilated blocks keep resolution.
func (b Block) DepthwiseStride() int {
	if b.Dilation > 1 {
		return 1
	}
	return b.Stride
}

// Arch is the whole network's shape: everything the graphs are generated from. Structured
// pruning edits it and regenerates the graphs.
type Arch struct {
	Stem     int     // channels of the first 3×3 stride-2 conv
	Blocks   []Block // backbone.1 ... backbone.15
	LastConv int     // channels of the final 1×1 conv (backbone.16)
	LowTap   int     // backbone index whose output feeds the low classifier
	Inter    int     // LR-ASPP inter channels (classifier.cbr)
	Classes  int
}

// makeDivisible rounds v to a multiple of 8, never more than 10% down (torchvision).
func makeDivisible(v float64, divisor int) int {
	nv := int(v+float64(divisor)/2) / divisor * divisor
	if nv < divisor {
		nv = divisor
	}
	if float64(nv) < 0.9*v {
		nv += divisor
	}
	return nv
}

// MobileNetV3Large is the table of torchvision's mobilenet_v3_large(dilated=True) under an
// LR-ASPP head, scaled by width.
func MobileNetV3Large(width float64, classes int) Arch {
	c := func(ch int) int { return makeDivisible(float64(ch)*width, 8) }
	type row struct {
		in, k, exp, out int
		se, hs          bool
		stride, dil     int
	}
	rows := []row{
		{16, 3, 16, 16, false, false, 1, 1},
		{16, 3, 64, 24, false, false, 2, 1}, // C1, stride 4
		{24, 3, 72, 24, false, false, 1, 1},
		{24, 5, 72, 40, true, false, 2, 1}, // C2, stride 8: the low tap
		{40, 5, 120, 40, true, false, 1, 1},
		{40, 5, 120, 40, true, false, 1, 1},
		{40, 3, 240, 80, false, true, 2, 1}, // C3, stride 16
		{80, 3, 200, 80, false, true, 1, 1},
		{80, 3, 184, 80, false, true, 1, 1},
		{80, 3, 184, 80, false, true, 1, 1},
		{80, 3, 480, 112, true, true, 1, 1},
		{112, 3, 672, 112, true, true, 1, 1},
		{112, 5, 672, 160, true, true, 2, 2}, // C4: dilated instead of strided, stays at 16
		{160, 5, 960, 160, true, true, 1, 2},
		{160, 5, 960, 160, true, true, 1, 2},
	}
	a := Arch{Stem: c(16), Inter: 128, Classes: classes}
	for _, r := range rows {
		b := Block{In: c(r.in), Kernel: r.k, Expanded: c(r.exp), Out: c(r.out), SE: r.se, HardSwish: r.hs, Stride: r.stride, Dilation: r.dil}
		if b.SE {
			b.Squeeze = makeDivisible(float64(b.Expanded/4), 8)
		}
		a.Blocks = append(a.Blocks, b)
	}
	a.LastConv = 6 * a.Blocks[len(a.Blocks)-1].Out
	// torchvision's segmentation backbone taps the output of the last stride-2 block before
	// stride 16 ("C2"): stage indices are [0, blocks with stride>1..., last]; low = stage[-4].
	stages := []int{0}
	for i, b := range a.Blocks {
		if b.Stride > 1 {
			stages = append(stages, i+1)
		}
	}
	stages = append(stages, len(a.Blocks)+1)
	a.LowTap = stages[len(stages)-4]
	return a
}

// Validate checks that consecutive blocks agree on channel counts.
func (a Arch) Validate() error {
	prev := a.Stem
	for i, b := range a.Blocks {
		if b.In != prev {
			return fmt.Errorf("arch: backbone.%d takes %d channels but receives %d", i+1, b.In, prev)
		}
		if b.Expanded <= 0 || b.Out <= 0 || (b.SE && b.Squeeze <= 0) {
			return fmt.Errorf("arch: backbone.%d has an empty layer", i+1)
		}
		prev = b.Out
	}
	if a.LowTap < 1 || a.LowTap > len(a.Blocks) {
		return fmt.Errorf("arch: low tap backbone.%d out of range", a.LowTap)
	}
	return nil
}

// LowChannels is the width of the low tap.
func (a Arch) LowChannels() int { return a.Blocks[a.LowTap-1].Out }

// OutputStride of the high features (16 for the dilated table).
func (a Arch) OutputStride() int {
	s := 2
	for _, b := range a.Blocks {
		s *= b.DepthwiseStride()
	}
	return s
}
