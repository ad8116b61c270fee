package graphs

import (
	"fmt"
	"math"
)

// NCHWcDomain is ONNX Runtime's operator set for its blocked-channel ("NCHWc") CPU kernels:
// ReorderInput, ReorderOutput and Conv among others. ORT registers it on x86-64 CPUs with AVX2
// (block 8) or AVX-512 (block 16) and normally uses it only inside its own graph optimiser, for
// convolutions whose weights are constants. A training step's weights are inputs, so ORT's
// optimiser leaves its depthwise convolutions on the generic path (an im2col buffer and a
// one-row GEMM per channel); emitting the blocked kernels ourselves makes them several times
// faster (Graph.NCHWcBlock). These operators are not standard ONNX: only graphs built for an
// in-process ORT CPU session use them, never a file we write for others.
const NCHWcDomain = "com.microsoft.nchwc"

// A blocked tensor is a 4-D value whose logical shape is [N, C, H, W] but whose memory is
// [N, C/b, H, W, b] (b = the block size: channel c of pixel (h, w) sits at block c/b, lane c%b).
// Only NCHWc operators read it as such; Reshape, Slice and elementwise operators see the raw
// memory, which the gradient rules below rely on where they reshape to 5-D views.

func nchwcNode(op string, ins []*Value, attrs []Attr, shape Shape) *Value {
	v := ins[0].g.addNode(op, ins, attrs, []outSpec{{Float, shape}})[0]
	v.node.Domain = NCHWcDomain
	return v
}

// ReorderInput converts a float32 [N, C, H, W] tensor to the blocked layout of
// Graph.NCHWcBlock (C a multiple of the block size).
func ReorderInput(x *Value) *Value {
	b := x.g.NCHWcBlock
	if b <= 0 || x.dtype != Float || x.Rank() != 4 || x.shape[1]%b != 0 {
		panic(fmt.Sprintf("graphs: ReorderInput(%v) with block size %d: want float32 rank 4, channels a multiple of the block", x, b))
	}
	return nchwcNode("ReorderInput", []*Value{x}, nil, x.shape)
}

// ReorderOutput converts a blocked tensor back to [N, C, H, W].
func ReorderOutput(xb *Value) *Value {
	return nchwcNode("ReorderOutput", []*Value{xb}, []Attr{{"channels", xb.shape[1]}}, xb.shape)
}

func gradReorderInput(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{ReorderOutput(dy[0])}
}

func gradReorderOutput(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{ReorderInput(dy[0])}
}

// blockedDepthwise reports whether Conv(x, w, ·, o) runs on the blocked kernels in x's graph.
func blockedDepthwise(x, w *Value, o ConvOpts) bool {
	b := x.g.NCHWcBlock
	C := x.shape[1]
	return b > 0 && x.dtype == Float && o.Group == C && w.shape[0] == C && w.shape[1] == 1 && C%b == 0
}

// depthwiseBlocked is a depthwise Conv on the blocked kernels: the input is reordered into
// blocks, the kernel into ORT's depthwise filter layout ([C/b, kh, kw, b]), and the result back.
// The weight reordering is a Reshape and a Transpose, so the weight's gradient flows through
// their ordinary rules.
func depthwiseBlocked(x, w, bias *Value, o ConvOpts, outShape Shape) *Value {
	xb := ReorderInput(x)
	ins := []*Value{xb, blockFilter(w, x.g.NCHWcBlock)}
	if bias != nil {
		ins = append(ins, bias)
	}
	yb := nchwcNode("Conv", ins, o.attrs([]int64{w.shape[2], w.shape[3]}), outShape)
	return ReorderOutput(yb)
}

// blockFilter reorders a depthwise kernel [C, 1, kh, kw] to the blocked filter layout, memory
// [C/b, kh, kw, b], keeping the logical shape.
func blockFilter(w *Value, b int64) *Value {
	C, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	return Reshape(Transpose(Reshape(w, Shape{C / b, b, kh * kw}), 0, 2, 1), w.shape)
}

// flipBlockedFilter rotates a blocked depthwise filter by 180° (no gradient rule).
func flipBlockedFilter(wr *Value, b int64) *Value {
	g := wr.g
	C, kh, kw := wr.shape[0], wr.shape[2], wr.shape[3]
	v := Reshape(wr, Shape{C / b, kh, kw, b})
	lo := int64(math.MinInt64)
	v = g.addNode("Slice", []*Value{v, g.Ints1D(-1, -1), g.Ints1D(lo, lo), g.Ints1D(1, 2), g.Ints1D(-1, -1)}, nil,
		[]outSpec{{Float, v.shape}})[0]
	return Reshape(v, wr.shape)
}

// blockedSlice slices spatial axis (2 or 3) of a blocked tensor through its 5-D view.
func blockedSlice(xb *Value, axis int, start, end int64, b int64) *Value {
	N, C, H, W := xb.shape[0], xb.shape[1], xb.shape[2], xb.shape[3]
	v := Slice(Reshape(xb, Shape{N, C / b, H, W, b}), axis, start, end)
	return Reshape(v, Shape{N, C, v.shape[2], v.shape[3]})
}

// gradNCHWcConv is the gradient of a blocked depthwise Conv; every full-size tensor stays
// blocked. Input gradient: the blocked Conv of the (stride-dilated) output gradient with the
// rotated kernel. Weight gradient: as convWeightGradConv, the batch folded into the groups;
// a blocked [N, C, H, W] tensor is, byte for byte, the blocked [1, N·C, H, W] one (C is a
// multiple of the block), and the blocked output gradient is, byte for byte, the blocked filter
// [N·C, 1, Ho, Wo], so neither needs a copy; the [1, N·C, kh, kw] result, summed over the
// batch, is already in the filter's blocked layout. Bias gradient: a sum over batch, blocks'
// rows and columns.
func gradNCHWcConv(n *Node, dy []*Value, want []bool) []*Value {
	xb, wr := n.Inputs[0], n.Inputs[1]
	g := dy[0]
	o := convOptsOf(n)
	b := xb.g.NCHWcBlock
	N, C, H, W := xb.shape[0], xb.shape[1], xb.shape[2], xb.shape[3]
	ho, wo := g.shape[2], g.shape[3]
	kh, kw := wr.shape[2], wr.shape[3]
	if o.Group != C || wr.shape[0] != C || wr.shape[1] != 1 || b <= 0 {
		panic(fmt.Sprintf("graphs: no gradient rule for blocked Conv %s other than depthwise (input %v, weight %v, group %d)", n.Name, xb, wr, o.Group))
	}
	cut := func(v *Value, axis int, end int64) *Value { return blockedSlice(v, axis, 0, end, b) }
	out := make([]*Value, len(n.Inputs))
	if len(n.Inputs) == 3 && want[2] {
		s := ReduceSum(Reshape(g, Shape{N, C / b, ho * wo, b}), false, 0, 2)
		out[2] = Reshape(s, Shape{C})
	}
	if want[0] {
		up := g
		s := o.Strides
		if s[0] > 1 || s[1] > 1 {
			up = Reshape(up, Shape{N, C / b, ho, 1, wo, 1, b})
			up = Pad(up, []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, s[0] - 1, 0, s[1] - 1, 0})
			up = Reshape(up, Shape{N, C, ho * s[0], wo * s[1]})
		}
		k := [2]int64{kh, kw}
		up, pads := inputGradPads(up, [2]int64{H, W}, k, o, cut)
		dxo := ConvOpts{Pads: pads, Dilations: o.Dilations, Group: C}.norm()
		out[0] = nchwcNode("Conv", []*Value{up, flipBlockedFilter(wr, b)}, dxo.attrs(k[:]), xb.shape)
	}
	if want[1] {
		x, pads := weightGradPads(xb, [2]int64{kh, kw}, [2]int64{ho, wo}, o, cut)
		xf := Reshape(x, Shape{1, N * C, x.shape[2], x.shape[3]})
		gk := Reshape(g, Shape{N * C, 1, ho, wo})
		co := ConvOpts{Strides: o.Dilations, Dilations: o.Strides, Pads: pads, Group: N * C}.norm()
		r := nchwcNode("Conv", []*Value{xf, gk}, co.attrs([]int64{ho, wo}), Shape{1, N * C, kh, kw})
		out[1] = Reshape(ReduceSum(Reshape(r, Shape{N, C * kh * kw}), false, 0), wr.shape)
	}
	return out
}

// NCHWcProbe is a one-node model that tells the blocked kernels' block size: it reorders a
// [1, 4, 1, 1] input named "x" and outputs "y", whose channel count is rounded up to the block.
// ONNX Runtime builds without the NCHWc operators fail to load it.
func NCHWcProbe() *Graph {
	g := New("nchwc_probe")
	x := g.Input("x", Float, Shape{1, 4, 1, 1})
	g.Output("y", nchwcNode("ReorderInput", []*Value{x}, nil, Shape{1, -1, 1, 1}))
	return g
}
