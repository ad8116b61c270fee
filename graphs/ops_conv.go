package graphs

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ConvOpts are a 2-D convolution's hyper-parameters. Zero values mean stride 1, no padding,
// dilation 1, one group. Pads are [top, left, bottom, right].
type ConvOpts struct {
	Strides   [2]int64
	Pads      [4]int64
	Dilations [2]int64
	Group     int64
}

func (o ConvOpts) norm() ConvOpts {
	for i := range o.Strides {
		if o.Strides[i] == 0 {
			o.Strides[i] = 1
		}
		if o.Dilations[i] == 0 {
			o.Dilations[i] = 1
		}
	}
	if o.Group == 0 {
		o.Group = 1
	}
	return o
}

func (o ConvOpts) attrs(kernel []int64) []Attr {
	return []Attr{
		{"dilations", []int64{o.Dilations[0], o.Dilations[1]}},
		{"group", o.Group},
		{"kernel_shape", append([]int64(nil), kernel...)},
		{"pads", []int64{o.Pads[0], o.Pads[1], o.Pads[2], o.Pads[3]}},
		{"strides", []int64{o.Strides[0], o.Strides[1]}},
	}
}

func convOptsOf(n *Node) ConvOpts {
	var o ConvOpts
	s, p, d := n.Ints("strides"), n.Ints("pads"), n.Ints("dilations")
	copy(o.Strides[:], s)
	copy(o.Pads[:], p)
	copy(o.Dilations[:], d)
	o.Group = n.Int("group", 1)
	return o.norm()
}

func convOutDim(in, k, s, pb, pe, d int64) int64 {
	if in < 0 {
		return -1
	}
	return (in+pb+pe-d*(k-1)-1)/s + 1
}

// Conv is a 2-D convolution: x [N,Cin,H,W], w [Cout,Cin/group,kh,kw], optional bias b [Cout].
// With Graph.NCHWcBlock set, depthwise convolutions (the network's and those inside gradient
// rules alike) run on ONNX Runtime's blocked kernels.
func Conv(x, w, b *Value, o ConvOpts) *Value {
	o = o.norm()
	if x.Rank() != 4 || w.Rank() != 4 {
		panic(fmt.Sprintf("graphs: Conv(%v, %v): want rank-4 input and weight", x, w))
	}
	cin, cout := x.shape[1], w.shape[0]
	if cin%o.Group != 0 || cout%o.Group != 0 || w.shape[1] != cin/o.Group {
		panic(fmt.Sprintf("graphs: Conv(%v, %v, group %d): channel mismatch", x, w, o.Group))
	}
	if b != nil && (b.Rank() != 1 || b.shape[0] != cout) {
		panic(fmt.Sprintf("graphs: Conv bias %v for %d output channels", b, cout))
	}
	kh, kw := w.shape[2], w.shape[3]
	ho := convOutDim(x.shape[2], kh, o.Strides[0], o.Pads[0], o.Pads[2], o.Dilations[0])
	wo := convOutDim(x.shape[3], kw, o.Strides[1], o.Pads[1], o.Pads[3], o.Dilations[1])
	if (ho != -1 && ho <= 0) || (wo != -1 && wo <= 0) {
		panic(fmt.Sprintf("graphs: Conv(%v, %v): empty output", x, w))
	}
	if blockedDepthwise(x, w, o) {
		return depthwiseBlocked(x, w, b, o, Shape{x.shape[0], cout, ho, wo})
	}
	ins := []*Value{x, w}
	if b != nil {
		ins = append(ins, b)
	}
	return x.g.addNode("Conv", ins, o.attrs([]int64{kh, kw}), []outSpec{{x.dtype, Shape{x.shape[0], cout, ho, wo}}})[0]
}

func isPointwise(w *Value, o ConvOpts) bool {
	return w.shape[2] == 1 && w.shape[3] == 1 && o.Group == 1 && o.Strides == [2]int64{1, 1} &&
		o.Pads == [4]int64{} && o.Dilations == [2]int64{1, 1}
}

// gradConv: bias gradient is a sum over batch and space. For 1×1 convolutions both gradients
// are MatMuls. Otherwise the input gradient is a ConvTranspose with the same weights, and the
// weight gradient one grouped Conv of the input with the output gradient as kernel, with the
// batch folded into channels (stride and dilation swap roles).
func gradConv(n *Node, dy []*Value, want []bool) []*Value {
	x, w := n.Inputs[0], n.Inputs[1]
	g := dy[0]
	o := convOptsOf(n)
	out := make([]*Value, len(n.Inputs))
	if len(n.Inputs) == 3 && want[2] {
		out[2] = ChannelSum(g, false)
	}
	N, cin, H, W := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, ho, wo := g.shape[1], g.shape[2], g.shape[3]
	if isPointwise(w, o) {
		g3 := Reshape(g, Shape{N, cout, ho * wo})
		w2 := Reshape(w, Shape{cout, cin})
		if want[0] {
			out[0] = Reshape(MatMul(Transpose(w2, 1, 0), g3), x.shape)
		}
		if want[1] && useBlockDiag(x.g, N, cout, cin, H*W) {
			out[1] = Reshape(blockDiagProduct(g3, Reshape(x, Shape{N, cin, H * W})), w.shape)
		} else if want[1] {
			x3 := Reshape(x, Shape{N, cin, H * W})
			out[1] = Reshape(ReduceSum(MatMul(g3, Transpose(x3, 0, 2, 1)), false, 0), w.shape)
		}
		return out
	}
	kh, kw := w.shape[2], w.shape[3]
	if want[0] && o.Group == cin && o.Group == cout && o.Strides == [2]int64{1, 1} {
		out[0] = depthwiseInputGrad(g, w, x.shape, o)
	} else if want[0] {
		opH := H - (o.Strides[0]*(ho-1) + (kh-1)*o.Dilations[0] + 1 - o.Pads[0] - o.Pads[2])
		opW := W - (o.Strides[1]*(wo-1) + (kw-1)*o.Dilations[1] + 1 - o.Pads[1] - o.Pads[3])
		out[0] = ConvTranspose(g, w, o, [2]int64{opH, opW})
	}
	form := x.g.Grad.DepthwiseWeightGrad
	if form == "" && o.Group == 1 {
		// A dense convolution (the stem: 3 input channels, 16 outputs, 240×320) folds the
		// batch into channels in the conv form, one kernel as large as a whole feature map
		// per input channel; unfolding its 3·9 patch planes and one MatMul is faster on the
		// CPU (8×3×240×320, stride 2: 13 against 22 ms).
		form = "im2col"
	}
	if form == "fused" {
		if want[1] && x.dtype == Float16 && o.Group == cin && o.Group == cout && fusedDepthwise(w.shape) {
			out[1] = DepthwiseWeightGrad16(x, g, w.shape, o)
			return out
		}
		form = "gather" // dense layers (the stem) and other kernel sizes
	}
	if want[1] && (form == "im2col" || form == "gather") {
		out[1] = convWeightGradIm2col(x, g, w.shape, o, form == "gather")
	} else if want[1] && o.Group == cin && o.Group == cout && form == "taps" {
		out[1] = depthwiseWeightGradTaps(x, g, w.shape, o)
	} else if want[1] {
		out[1] = convWeightGradConv(x, g, w.shape, o)
	}
	return out
}

// blockDiagProduct is Σ_n d[n]·c[n]ᵀ for d [N, A, M] and c [N, B, M], as one MatMul of the
// whole batch, [N·A, M] by [M, N·B] (free reshapes, the second transposed inside the
// product), whose diagonal blocks (image n by image n) are kept and summed: [A, B]. The blocks
// are selected (Where), not multiplied by a 0/1 mask: in float16 with loss scaling an
// off-diagonal block could overflow where the diagonal ones do not, and Inf·0 would make the
// sum NaN. GradOptions.WeightGradProduct "blockdiag".
func blockDiagProduct(d, c *Value) *Value {
	N, A, M, B := d.shape[0], d.shape[1], d.shape[2], c.shape[1]
	all := Reshape(MatMul(Reshape(d, Shape{N * A, M}), Transpose(Reshape(c, Shape{N * B, M}), 1, 0)), Shape{N, A, N, B})
	eye := make([]float32, N*N)
	for i := int64(0); i < N; i++ {
		eye[i*N+i] = 1
	}
	keep := Greater(d.g.ConstFloat(Shape{N, 1, N, 1}, eye...), Scalar(d.g, 0.5)) // folded by ORT
	return ReduceSum(Where(keep, all, ScalarLike(all, 0)), false, 0, 2)
}

// useBlockDiag reports whether GradOptions.WeightGradProduct takes the weight gradient
// Σ_n d[n]·c[n]ᵀ ([N, A, M] by [N, B, M]) as blockDiagProduct.
func useBlockDiag(g *Graph, N, A, B, M int64) bool {
	switch g.Grad.WeightGradProduct {
	case "blockdiag-all":
		return true
	case "blockdiag":
		return N*N*A*B <= BlockDiagMaxOut && M >= BlockDiagMinHW
	}
	return false
}

// convWeightGradConv is a convolution's weight gradient as one grouped Conv of the input with
// the output gradient as the kernel: dW[co,ci,i,j] = Σ_{n,y,x} dy[n,co,y,x] ·
// xpad[n,ci,y·s+i·d, x·s+j·d], a correlation in which the layer's stride becomes the dilation
// and its dilation the stride. The end padding is trimmed so that the correlation yields
// exactly k×k taps (with stride 2 the padded input would give one more row and column of
// taps, 78% more work for a 3×3 kernel). A depthwise layer folds the batch into the groups
// ([1, N·C, H, W] by the [N·C, 1, Ho, Wo] gradient, no transposes) and sums the N partial
// kernels; other layers fold the batch into the input channels ([Cin/G, G·N, H, W] by
// [G·Cout/G, N, Ho, Wo]).
func convWeightGradConv(x, dy *Value, wShape Shape, o ConvOpts) *Value {
	N, cin, H, W := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, ho, wo := dy.shape[1], dy.shape[2], dy.shape[3]
	kh, kw := wShape[2], wShape[3]
	x, pads := weightGradPads(x, [2]int64{kh, kw}, [2]int64{ho, wo}, o, func(v *Value, axis int, end int64) *Value { return Slice(v, axis, 0, end) })
	H, W = x.shape[2], x.shape[3]
	co := ConvOpts{Strides: o.Dilations, Dilations: o.Strides, Pads: pads}
	G := o.Group
	if G == cin && G == cout {
		co.Group = N * cin
		dw := Conv(Reshape(x, Shape{1, N * cin, H, W}), Reshape(dy, Shape{N * cin, 1, ho, wo}), nil, co)
		return Reshape(ReduceSum(Reshape(dw, Shape{N, cin, kh, kw}), false, 0), wShape)
	}
	ci, cg := cin/G, cout/G
	xf := Reshape(Transpose(Reshape(x, Shape{N, G, ci, H, W}), 2, 1, 0, 3, 4), Shape{ci, G * N, H, W})
	gf := Reshape(Transpose(Reshape(dy, Shape{N, G, cg, ho, wo}), 1, 2, 0, 3, 4), Shape{G * cg, N, ho, wo})
	co.Group = G
	dw := Conv(xf, gf, nil, co) // [ci, G·cg, kh, kw]
	return Transpose(dw, 1, 0, 2, 3)
}

// weightGradPads is the padding of the weight-gradient correlation (convWeightGradConv) of a
// convolution with kernel k and output size out over x: the end padding trimmed so that the
// correlation yields exactly k taps, and x cut (cut(x, axis, end) keeps [0, end) of a spatial
// axis) where rows or columns past the end padding are read by no tap.
func weightGradPads(x *Value, k, out [2]int64, o ConvOpts, cut func(v *Value, axis int, end int64) *Value) (*Value, [4]int64) {
	pads := o.Pads
	size := [2]int64{x.shape[2], x.shape[3]}
	for a := 0; a < 2; a++ {
		need := o.Strides[a]*(out[a]-1) + (k[a]-1)*o.Dilations[a] + 1 // padded extent the taps read
		excess := size[a] + pads[a] + pads[a+2] - need
		trim := min(excess, pads[a+2])
		pads[a+2] -= trim
		if excess > trim { // rows or columns past the end padding that no tap reads
			x = cut(x, 2+a, size[a]-(excess-trim))
		}
	}
	return x, pads
}

// inputGradPads is the padding of the correlation that gives a convolution's input gradient
// (spatial size size, kernel k) from up, the output gradient with the stride's zeros inserted;
// where inserted zeros fall beyond the input, up is cut (as in weightGradPads).
func inputGradPads(up *Value, size, k [2]int64, o ConvOpts, cut func(v *Value, axis int, end int64) *Value) (*Value, [4]int64) {
	var pads [4]int64
	for a := 0; a < 2; a++ {
		span := (k[a] - 1) * o.Dilations[a]
		pb := span - o.Pads[a]
		pe := size[a] - up.shape[2+a] - pb + span
		if pb < 0 {
			panic(fmt.Sprintf("graphs: depthwise gradient with padding %d beyond the kernel span %d", o.Pads[a], span))
		}
		if pe < 0 { // only inserted zeros fall off the end
			up = cut(up, 2+a, up.shape[2+a]+pe)
			pe = 0
		}
		pads[a], pads[a+2] = pb, pe
	}
	return up, pads
}

// convWeightGradIm2col is a (grouped or dense) convolution's weight gradient as a batched
// MatMul over unfolded input patches, cols [N·Cin, k², Ho, Wo]: dW[g] = Σ_n dy[n,g] ·
// cols[n,g]ᵀ, per group a [Cout/G, Ho·Wo] × [Ho·Wo, Cin/G·k²] product, summed over the batch.
// Every kernel involved is a common shape (cuDNN has no fast algorithm for the "conv"
// formulation's feature-map-sized kernels); the cost is cols, k² times the input (after
// striding) in memory. The patches are unfolded by one Conv with one-hot k×k kernels over the
// input viewed as N·Cin single-channel images, or with gather by one Gather of each padded
// plane at precomputed positions (unfoldGather).
func convWeightGradIm2col(x, dy *Value, wShape Shape, o ConvOpts, gather bool) *Value {
	N, cin, H, W := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, ho, wo := dy.shape[1], dy.shape[2], dy.shape[3]
	kh, kw := wShape[2], wShape[3]
	G := o.Group
	ci, co, K, M := cin/G, cout/G, kh*kw, ho*wo
	var cols *Value
	if gather {
		cols = unfoldGather(x, kh, kw, o, ho, wo)
	} else {
		eye := make([]float32, K*K)
		for k := int64(0); k < K; k++ {
			eye[k*K+k] = 1
		}
		onehot := ConstLike(x, Shape{K, 1, kh, kw}, eye...)
		cols = Conv(Reshape(x, Shape{N * cin, 1, H, W}), onehot, nil, ConvOpts{Strides: o.Strides, Dilations: o.Dilations, Pads: o.Pads})
	}
	if cols.shape[2] != ho || cols.shape[3] != wo {
		panic(fmt.Sprintf("graphs: im2col of %v gives %v, want %dx%d", x.shape, cols.shape, ho, wo))
	}
	if gather && G == 1 && N > 1 && useBlockDiag(x.g, N, cout, cin*K, M) {
		// The same product without the transposes: the whole batch at once, its diagonal
		// blocks summed.
		return Reshape(blockDiagProduct(Reshape(dy, Shape{N, cout, M}), Reshape(cols, Shape{N, cin * K, M})), wShape)
	}
	if gather && G == 1 && N > 1 {
		// A dense layer (the stem) on the GPU: the batch joins the inner dimension, one
		// [Cout, N·M] × [N·M, Cin·k²] product. Batched per image, cuBLAS ran the stem's
		// 8 products of 16×27 outputs over 76,800 pixels as one block each (670 µs on an
		// H100); the two transposes copy 50 MB.
		cm := Reshape(Transpose(Reshape(cols, Shape{N, cin * K, M}), 1, 0, 2), Shape{cin * K, N * M})
		dm := Reshape(Transpose(Reshape(dy, Shape{N, cout, M}), 1, 0, 2), Shape{cout, N * M})
		return Reshape(MatMul(dm, Transpose(cm, 1, 0)), wShape)
	}
	cols = Reshape(cols, Shape{N, G, ci * K, M})
	d := Reshape(dy, Shape{N, G, co, M})
	dw := MatMul(d, Transpose(cols, 0, 1, 3, 2)) // [N, G, co, ci·k²]; ORT fuses the transpose into the MatMul
	return Reshape(ReduceSum(dw, false, 0), wShape)
}

// unfoldGather unfolds the k×k patches of x [N,C,H,W] (the layer's stride, dilation and
// padding) into [N·C, k², Ho, Wo]: each zero-padded plane, flattened, is gathered at int32
// positions computed here, one constant per layer geometry. One pass that writes cols and
// reads the input k² times from cache, where cuDNN's one-hot convolution with a single input
// channel ran at a small fraction of the memory bandwidth (H200, FP16: 3.8 ms for a 460 MB
// [7680,25,30,40] result).
func unfoldGather(x *Value, kh, kw int64, o ConvOpts, ho, wo int64) *Value {
	g := x.g
	N, C, H, W := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	xp := x
	if o.Pads != [4]int64{} {
		xp = Pad(x, []int64{0, 0, o.Pads[0], o.Pads[1], 0, 0, o.Pads[2], o.Pads[3]})
	}
	Hp, Wp := H+o.Pads[0]+o.Pads[2], W+o.Pads[1]+o.Pads[3]
	key := fmt.Sprintf("unfold %dx%d k%dx%d s%v d%v o%dx%d", Hp, Wp, kh, kw, o.Strides, o.Dilations, ho, wo)
	idx, ok := g.constant[key]
	if !ok {
		raw := make([]byte, 0, 4*kh*kw*ho*wo)
		for i := int64(0); i < kh; i++ {
			for j := int64(0); j < kw; j++ {
				for y := int64(0); y < ho; y++ {
					for xx := int64(0); xx < wo; xx++ {
						pos := (y*o.Strides[0]+i*o.Dilations[0])*Wp + xx*o.Strides[1] + j*o.Dilations[1]
						raw = binary.LittleEndian.AppendUint32(raw, uint32(pos))
					}
				}
			}
		}
		idx = g.initRaw(g.uniqueName("unfold_index"), Int32, Shape{kh * kw, ho, wo}, raw)
		g.constant[key] = idx
	}
	flat := Reshape(xp, Shape{N * C, Hp * Wp})
	return g.addNode("Gather", []*Value{flat, idx}, []Attr{{"axis", int64(1)}}, []outSpec{{x.dtype, Shape{N * C, kh * kw, ho, wo}}})[0]
}

// depthwiseWeightGradTaps is a depthwise convolution's weight gradient tap by tap:
// dW[c,0,i,j] = Σ_{n,y,x} dy[n,c,y,x] · xpad[n,c, y·s+i·d, x·s+j·d], each tap one strided slice
// of the padded input, a product with dy and a sum over batch and space.
func depthwiseWeightGradTaps(x, dy *Value, wShape Shape, o ConvOpts) *Value {
	C, ho, wo := x.shape[1], dy.shape[2], dy.shape[3]
	kh, kw := wShape[2], wShape[3]
	xp := x
	if o.Pads != [4]int64{} {
		xp = Pad(x, []int64{0, 0, o.Pads[0], o.Pads[1], 0, 0, o.Pads[2], o.Pads[3]})
	}
	taps := make([]*Value, 0, kh*kw)
	for i := int64(0); i < kh; i++ {
		for j := int64(0); j < kw; j++ {
			y0, x0 := i*o.Dilations[0], j*o.Dilations[1]
			s := stridedSlice2D(xp, y0, y0+(ho-1)*o.Strides[0]+1, o.Strides[0], x0, x0+(wo-1)*o.Strides[1]+1, o.Strides[1])
			taps = append(taps, Reshape(ChannelSum(Mul(s, dy), false), Shape{C, 1}))
		}
	}
	return Reshape(Concat(1, taps...), Shape{C, 1, kh, kw})
}

// stridedSlice2D takes rows [y0,y1) step sy and columns [x0,x1) step sx of a rank-4 value;
// no gradient rule (it appears only inside gradients).
func stridedSlice2D(v *Value, y0, y1, sy, x0, x1, sx int64) *Value {
	g := v.g
	shape := v.shape.clone()
	shape[2] = (y1 - y0 + sy - 1) / sy
	shape[3] = (x1 - x0 + sx - 1) / sx
	return g.addNode("Slice", []*Value{v, g.Ints1D(y0, x0), g.Ints1D(y1, x1), g.Ints1D(2, 3), g.Ints1D(sy, sx)}, nil,
		[]outSpec{{v.dtype, shape}})[0]
}

// depthwiseInputGrad is the input gradient of a depthwise conv as a depthwise Conv of the
// output gradient with the spatially flipped kernel: for stride s the gradient is first spread
// out with s−1 zeros between elements (Reshape, Pad, Reshape). For stride 1 ORT runs this
// faster than the equivalent grouped ConvTranspose (8×960×15×20, 5×5 dilated: 23 vs 36 ms);
// for stride 2 its 6-D Pad costs more than it saves, so gradConv uses it for stride 1 only.
func depthwiseInputGrad(dy, w *Value, xShape Shape, o ConvOpts) *Value {
	N, C, Ho, Wo := dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3]
	H, W := xShape[2], xShape[3]
	k := [2]int64{w.shape[2], w.shape[3]}
	sh, sw := o.Strides[0], o.Strides[1]
	up := dy
	if sh > 1 || sw > 1 {
		up = Reshape(up, Shape{N, C, Ho, 1, Wo, 1})
		up = Pad(up, []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1})
		up = Reshape(up, Shape{N, C, Ho * sh, Wo * sw})
	}
	up, pads := inputGradPads(up, [2]int64{H, W}, k, o, func(v *Value, axis int, end int64) *Value { return Slice(v, axis, 0, end) })
	return Conv(up, Flip2D(w), nil, ConvOpts{Pads: pads, Dilations: o.Dilations, Group: C})
}

// Flip2D reverses the last two axes (a kernel rotated by 180°); no gradient rule.
func Flip2D(w *Value) *Value {
	g := w.g
	min := int64(math.MinInt64)
	return g.addNode("Slice", []*Value{w, g.Ints1D(-1, -1), g.Ints1D(min, min), g.Ints1D(2, 3), g.Ints1D(-1, -1)}, nil,
		[]outSpec{{w.dtype, w.shape}})[0]
}

// ConvTranspose is the transpose (gradient) of Conv with weights w [Cin_of_conv... see ONNX]:
// dy [N,Cout,Ho,Wo], w [Cout,Cin/group,kh,kw] -> [N,Cin,H,W]. outPad resolves the output size.
func ConvTranspose(dy, w *Value, o ConvOpts, outPad [2]int64) *Value {
	o = o.norm()
	kh, kw := w.shape[2], w.shape[3]
	cin := w.shape[1] * o.Group
	h := o.Strides[0]*(dy.shape[2]-1) + outPad[0] + (kh-1)*o.Dilations[0] + 1 - o.Pads[0] - o.Pads[2]
	wd := o.Strides[1]*(dy.shape[3]-1) + outPad[1] + (kw-1)*o.Dilations[1] + 1 - o.Pads[1] - o.Pads[3]
	attrs := append(o.attrs([]int64{kh, kw}), Attr{"output_padding", []int64{outPad[0], outPad[1]}})
	return dy.g.addNode("ConvTranspose", []*Value{dy, w}, attrs, []outSpec{{dy.dtype, Shape{dy.shape[0], cin, h, wd}}})[0]
}

// BatchNormInference is ONNX BatchNormalization in inference mode (running statistics).
func BatchNormInference(x, scale, bias, mean, variance *Value, eps float32) *Value {
	return x.g.addNode("BatchNormalization", []*Value{x, scale, bias, mean, variance},
		[]Attr{{"epsilon", eps}}, []outSpec{{x.dtype, x.shape}})[0]
}
