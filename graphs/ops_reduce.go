package graphs

import (
	"fmt"
	"sort"
)

func normAxes(op string, rank int, axes []int64) []int64 {
	out := make([]int64, len(axes))
	for i, a := range axes {
		if a < 0 {
			a += int64(rank)
		}
		if a < 0 || a >= int64(rank) {
			panic(fmt.Sprintf("graphs: %s: axis %d out of range for rank %d", op, axes[i], rank))
		}
		out[i] = a
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func reducedShape(s Shape, axes []int64, keep bool) Shape {
	var out Shape
	for i, d := range s {
		r := false
		for _, a := range axes {
			if int64(i) == a {
				r = true
			}
		}
		switch {
		case !r:
			out = append(out, d)
		case keep:
			out = append(out, 1)
		}
	}
	if out == nil {
		out = Shape{}
	}
	return out
}

func keepInt(keep bool) int64 {
	if keep {
		return 1
	}
	return 0
}

// ReduceSum sums over axes (all axes when none are given).
func ReduceSum(x *Value, keep bool, axes ...int64) *Value {
	if len(axes) == 0 {
		for i := range x.shape {
			axes = append(axes, int64(i))
		}
	}
	axes = normAxes("ReduceSum", x.Rank(), axes)
	return x.g.addNode("ReduceSum", []*Value{x, x.g.Ints1D(axes...)}, []Attr{{"keepdims", keepInt(keep)}},
		[]outSpec{{x.dtype, reducedShape(x.shape, axes, keep)}})[0]
}

// ChannelSum sums a rank-4 [N,C,H,W] value over batch and space: [C], or [1,C,1,1] with keep.
// It is two reductions of contiguous axes (each image's space, then the batch) rather than one
// over axes 0,2,3: ONNX Runtime's CUDA provider sums contiguous leading or trailing axes with
// its own matrix-reduction kernels and otherwise falls back to cuDNN's general reduction,
// measured 10–20 times slower on batch-norm-sized tensors.
func ChannelSum(x *Value, keep bool) *Value {
	if x.Rank() != 4 {
		panic(fmt.Sprintf("graphs: ChannelSum of %v: want rank 4", x))
	}
	N, C := x.shape[0], x.shape[1]
	s := ReduceSum(Reshape(x, Shape{N, C, x.shape[2] * x.shape[3]}), false, 2)
	s = ReduceSum(s, false, 0)
	if keep {
		s = Reshape(s, Shape{1, C, 1, 1})
	}
	return s
}

// ChannelMean is ChannelSum divided by N·H·W (ReduceSum's fast path, which ReduceMean lacks
// on CUDA).
func ChannelMean(x *Value, keep bool) *Value {
	return Mul(ChannelSum(x, keep), ScalarLike(x, 1/float32(x.shape[0]*x.shape[2]*x.shape[3])))
}

// ChannelSumSquare is the sum of squares of a rank-4 [N,C,H,W] value over batch and space, [C]
// or [1,C,1,1] with keep: one ReduceSumSquare over each image's space (no squared copy of the
// tensor is written), then a sum over the batch.
func ChannelSumSquare(x *Value, keep bool) *Value {
	if x.Rank() != 4 {
		panic(fmt.Sprintf("graphs: ChannelSumSquare of %v: want rank 4", x))
	}
	N, C := x.shape[0], x.shape[1]
	s := ReduceSum(ReduceSumSquare(Reshape(x, Shape{N, C, x.shape[2] * x.shape[3]}), false, 2), false, 0)
	if keep {
		s = Reshape(s, Shape{1, C, 1, 1})
	}
	return s
}

// ReduceSumSquare sums the squares over axes (attribute form, opset 17; all axes when none
// are given).
func ReduceSumSquare(x *Value, keep bool, axes ...int64) *Value {
	return reduceAttr("ReduceSumSquare", x, keep, axes)
}

// d Σx² = 2x·dy.
func gradReduceSumSquare(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	return []*Value{Mul(broadcastBack(n, dy[0]), Add(x, x))}
}

// reduceAttr adds a reduction whose axes are an attribute (opset 17's ReduceMean, ReduceMax,
// ReduceSumSquare; ReduceSum takes them as an input), over all axes when none are given.
func reduceAttr(op string, x *Value, keep bool, axes []int64) *Value {
	if len(axes) == 0 {
		for i := range x.shape {
			axes = append(axes, int64(i))
		}
	}
	axes = normAxes(op, x.Rank(), axes)
	return x.g.addNode(op, []*Value{x}, []Attr{{"axes", axes}, {"keepdims", keepInt(keep)}},
		[]outSpec{{x.dtype, reducedShape(x.shape, axes, keep)}})[0]
}

// reduceAxes reads a reduction node's axes (input for ReduceSum, attribute otherwise).
func reduceAxes(n *Node) []int64 {
	if n.Op == "ReduceSum" {
		return n.Inputs[1].init.Int64
	}
	return n.Ints("axes")
}

// broadcastBack expands a reduction's output gradient to the input's shape.
func broadcastBack(n *Node, dy *Value) *Value {
	x := n.Inputs[0]
	keepShape := reducedShape(x.shape, reduceAxes(n), true)
	if !dy.shape.Equal(keepShape) {
		dy = Reshape(dy, keepShape)
	}
	return Expand(dy, x.shape)
}

func gradReduceSum(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{broadcastBack(n, dy[0]), nil}
}

// ReduceMean averages over axes (attribute form, opset 17).
func ReduceMean(x *Value, keep bool, axes ...int64) *Value {
	return reduceAttr("ReduceMean", x, keep, axes)
}

func gradReduceMean(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	count := int64(1)
	for _, a := range reduceAxes(n) {
		count *= x.shape[a]
	}
	if count < 0 {
		panic(fmt.Sprintf("graphs: gradient of %s over a symbolic dimension", n))
	}
	// Scaled before the broadcast: one full-size pass (the Expand), not two.
	return []*Value{broadcastBack(n, Mul(dy[0], ScalarLike(dy[0], 1/float32(count))))}
}

// ReduceMax takes the maximum over axes (no gradient rule: used only for statistics).
func ReduceMax(x *Value, keep bool, axes ...int64) *Value {
	return reduceAttr("ReduceMax", x, keep, axes)
}

// sumToShape reduces a broadcast gradient back to the shape of the operand it was broadcast
// from (summing over the added leading axes and the axes that were 1).
func sumToShape(dy *Value, shape Shape) *Value {
	if dy.shape.Equal(shape) {
		return dy
	}
	lead := len(dy.shape) - len(shape)
	if lead < 0 {
		panic(fmt.Sprintf("graphs: cannot reduce %v to %v", dy.shape, shape))
	}
	var axes []int64
	for i := range dy.shape {
		if i < lead {
			axes = append(axes, int64(i))
			continue
		}
		if shape[i-lead] == 1 && dy.shape[i] != 1 {
			axes = append(axes, int64(i))
		}
	}
	out := dy
	if len(axes) > 0 {
		out = ReduceSum(dy, true, axes...)
	}
	if !out.shape.Equal(shape) {
		out = Reshape(out, shape)
	}
	return out
}
