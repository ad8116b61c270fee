package graphs

import "fmt"

// Reshape to a static shape. A -1 in the target at an axis where x's dimension is symbolic
// keeps that dimension (ONNX's 0 = copy).
func Reshape(x *Value, shape Shape) *Value {
	spec := make([]int64, len(shape))
	for i, d := range shape {
		spec[i] = d
		if d < 0 {
			if i >= len(x.shape) || x.shape[i] >= 0 {
				panic(fmt.Sprintf("graphs: Reshape %v to %v: -1 only copies a symbolic dimension", x, shape))
			}
			spec[i] = 0
		}
	}
	if xs, ts := x.shape.Size(), shape.Size(); xs >= 0 && ts >= 0 && xs != ts {
		panic(fmt.Sprintf("graphs: Reshape %v to %v: %d elements vs %d", x, shape, xs, ts))
	}
	return x.g.addNode("Reshape", []*Value{x, x.g.Ints1D(spec...)}, nil, []outSpec{{x.dtype, shape}})[0]
}

func gradReshape(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{Reshape(dy[0], n.Inputs[0].shape), nil}
}

// Transpose permutes the axes.
func Transpose(x *Value, perm ...int64) *Value {
	if len(perm) != x.Rank() {
		panic(fmt.Sprintf("graphs: Transpose %v with perm %v", x, perm))
	}
	shape := make(Shape, len(perm))
	for i, p := range perm {
		shape[i] = x.shape[p]
	}
	return x.g.addNode("Transpose", []*Value{x}, []Attr{{"perm", append([]int64(nil), perm...)}}, []outSpec{{x.dtype, shape}})[0]
}

func gradTranspose(n *Node, dy []*Value, want []bool) []*Value {
	perm := n.Ints("perm")
	inv := make([]int64, len(perm))
	for i, p := range perm {
		inv[p] = int64(i)
	}
	return []*Value{Transpose(dy[0], inv...)}
}

// Slice takes [start, end) along one axis.
func Slice(x *Value, axis int, start, end int64) *Value {
	if axis < 0 {
		axis += x.Rank()
	}
	d := x.shape[axis]
	if start < 0 || end > d || start >= end {
		panic(fmt.Sprintf("graphs: Slice %v axis %d [%d,%d)", x, axis, start, end))
	}
	shape := x.shape.clone()
	shape[axis] = end - start
	g := x.g
	return g.addNode("Slice", []*Value{x, g.Ints1D(start), g.Ints1D(end), g.Ints1D(int64(axis))}, nil, []outSpec{{x.dtype, shape}})[0]
}

// The gradient of a slice pads the slice's gradient with zeros back to the input's shape.
func gradSlice(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	start, end, axis := n.Inputs[1].init.Int64[0], n.Inputs[2].init.Int64[0], n.Inputs[3].init.Int64[0]
	pads := make([]int64, 2*x.Rank())
	pads[axis] = start
	pads[int(axis)+x.Rank()] = x.shape[axis] - end
	return []*Value{Pad(dy[0], pads), nil, nil, nil}
}

// Pad pads with zeros; pads = [begin_0, ..., begin_r, end_0, ..., end_r].
//
// A pad of one axis that is not among the last two of a tensor of rank 2 to 4 is written as
// the same pad of the last axis of a [outer, axis·inner] view (two free Reshapes): ONNX
// Runtime's CUDA provider has a fast kernel for pads of the last two axes of such tensors only,
// and its general one took 585 µs for a 20 MB loss gradient, against ~40 µs for the fast one
// on larger tensors (H100, FP16 step at batch 8, 480×640).
func Pad(x *Value, pads []int64) *Value {
	r := x.Rank()
	axis, padded, negative := -1, 0, false
	for i := 0; i < r; i++ {
		if pads[i] != 0 || pads[i+r] != 0 {
			axis, padded = i, padded+1
			negative = negative || pads[i] < 0 || pads[i+r] < 0
		}
	}
	if padded == 1 && !negative && (r < 2 || r > 4 || axis < r-2) {
		outer, inner := int64(1), int64(1)
		for i := 0; i < axis; i++ {
			outer *= x.shape[i]
		}
		for i := axis + 1; i < r; i++ {
			inner *= x.shape[i]
		}
		v := padNode(Reshape(x, Shape{outer, x.shape[axis] * inner}), []int64{0, pads[axis] * inner, 0, pads[axis+r] * inner})
		shape := x.shape.clone()
		shape[axis] += pads[axis] + pads[axis+r]
		return Reshape(v, shape)
	}
	return padNode(x, pads)
}

func padNode(x *Value, pads []int64) *Value {
	r := x.Rank()
	shape := x.shape.clone()
	for i := 0; i < r; i++ {
		shape[i] += pads[i] + pads[i+r]
	}
	return x.g.addNode("Pad", []*Value{x, x.g.Ints1D(pads...)}, nil, []outSpec{{x.dtype, shape}})[0]
}

func gradPad(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	pads := n.Inputs[1].init.Int64
	out := dy[0]
	for i := 0; i < x.Rank(); i++ {
		if pads[i] != 0 || pads[i+x.Rank()] != 0 {
			if pads[i] < 0 || pads[i+x.Rank()] < 0 {
				panic("graphs: gradient of a negative Pad")
			}
			out = Slice(out, i, pads[i], pads[i]+x.shape[i])
		}
	}
	return []*Value{out, nil}
}

// Expand broadcasts x to shape.
func Expand(x *Value, shape Shape) *Value {
	out := broadcastShape("Expand", x.shape, shape)
	return x.g.addNode("Expand", []*Value{x, x.g.Ints1D(shape...)}, nil, []outSpec{{x.dtype, out}})[0]
}

func gradExpand(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{sumToShape(dy[0], n.Inputs[0].shape), nil}
}

// Concat joins tensors along axis.
func Concat(axis int, xs ...*Value) *Value {
	if axis < 0 {
		axis += xs[0].Rank()
	}
	shape := xs[0].shape.clone()
	shape[axis] = 0
	for _, x := range xs {
		if x.Rank() != len(shape) || x.dtype != xs[0].dtype {
			panic(fmt.Sprintf("graphs: Concat of %v and %v", xs[0], x))
		}
		shape[axis] += x.shape[axis]
	}
	return xs[0].g.addNode("Concat", xs, []Attr{{"axis", int64(axis)}}, []outSpec{{xs[0].dtype, shape}})[0]
}

func gradConcat(n *Node, dy []*Value, want []bool) []*Value {
	axis := int(n.Int("axis", 0))
	out := make([]*Value, len(n.Inputs))
	var off int64
	for i, x := range n.Inputs {
		if want[i] {
			out[i] = Slice(dy[0], axis, off, off+x.shape[axis])
		}
		off += x.shape[axis]
	}
	return out
}

// Split cuts x along axis into pieces of the given sizes (no gradient rule: used by the
// optimizer, which is not differentiated).
func Split(x *Value, axis int, sizes []int64) []*Value {
	if axis < 0 {
		axis += x.Rank()
	}
	var total int64
	outs := make([]outSpec, len(sizes))
	for i, s := range sizes {
		shape := x.shape.clone()
		shape[axis] = s
		outs[i] = outSpec{x.dtype, shape}
		total += s
	}
	if total != x.shape[axis] {
		panic(fmt.Sprintf("graphs: Split %v axis %d into %v", x, axis, sizes))
	}
	return x.g.addNode("Split", []*Value{x, x.g.Ints1D(sizes...)}, []Attr{{"axis", int64(axis)}}, outs)
}
