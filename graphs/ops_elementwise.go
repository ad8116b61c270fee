package graphs

import "fmt"

// broadcastShape applies numpy broadcasting (ONNX multidirectional broadcasting).
func broadcastShape(op string, a, b Shape) Shape {
	n := len(a)
	if len(b) > n {
		n = len(b)
	}
	out := make(Shape, n)
	for i := 0; i < n; i++ {
		da, db := int64(1), int64(1)
		if k := i - (n - len(a)); k >= 0 {
			da = a[k]
		}
		if k := i - (n - len(b)); k >= 0 {
			db = b[k]
		}
		switch {
		case da == db:
			out[i] = da
		case da == 1:
			out[i] = db
		case db == 1:
			out[i] = da
		default:
			panic(fmt.Sprintf("graphs: %s: shapes %v and %v do not broadcast", op, a, b))
		}
	}
	return out
}

func binaryOp(op string, a, b *Value) *Value {
	if a.dtype != b.dtype {
		panic(fmt.Sprintf("graphs: %s: element types %v (%s) and %v (%s) differ", op, a.dtype, a.name, b.dtype, b.name))
	}
	return a.g.addNode(op, []*Value{a, b}, nil, []outSpec{{a.dtype, broadcastShape(op, a.shape, b.shape)}})[0]
}

func unary(op string, x *Value, attrs ...Attr) *Value {
	return x.g.addNode(op, []*Value{x}, attrs, []outSpec{{x.dtype, x.shape}})[0]
}

func compare(op string, a, b *Value) *Value {
	if a.dtype != b.dtype {
		panic(fmt.Sprintf("graphs: %s: element types %v and %v differ", op, a.dtype, b.dtype))
	}
	return a.g.addNode(op, []*Value{a, b}, nil, []outSpec{{Bool, broadcastShape(op, a.shape, b.shape)}})[0]
}

// Add, Sub, Mul, Div: elementwise with broadcasting.
func Add(a, b *Value) *Value { return binaryOp("Add", a, b) }
func Sub(a, b *Value) *Value { return binaryOp("Sub", a, b) }
func Mul(a, b *Value) *Value { return binaryOp("Mul", a, b) }
func Div(a, b *Value) *Value { return binaryOp("Div", a, b) }

func gradAdd(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{sumToShape(dy[0], n.Inputs[0].shape), sumToShape(dy[0], n.Inputs[1].shape)}
}

func gradSub(n *Node, dy []*Value, want []bool) []*Value {
	var db *Value
	if want[1] {
		db = sumToShape(Neg(dy[0]), n.Inputs[1].shape)
	}
	return []*Value{sumToShape(dy[0], n.Inputs[0].shape), db}
}

func gradMul(n *Node, dy []*Value, want []bool) []*Value {
	a, b := n.Inputs[0], n.Inputs[1]
	var da, db *Value
	if want[0] {
		da = sumToShape(Mul(dy[0], b), a.shape)
	}
	if want[1] {
		db = sumToShape(Mul(dy[0], a), b.shape)
	}
	return []*Value{da, db}
}

// d(a/b) = dy/b, -dy·a/b² = -dy·y/b.
func gradDiv(n *Node, dy []*Value, want []bool) []*Value {
	a, b, y := n.Inputs[0], n.Inputs[1], n.Outputs[0]
	var da, db *Value
	if want[0] {
		da = sumToShape(Div(dy[0], b), a.shape)
	}
	if want[1] {
		db = sumToShape(Neg(Div(Mul(dy[0], y), b)), b.shape)
	}
	return []*Value{da, db}
}

// Neg is -x.
func Neg(x *Value) *Value { return unary("Neg", x) }

func gradNeg(n *Node, dy []*Value, want []bool) []*Value { return []*Value{Neg(dy[0])} }

// Exp is e^x.
func Exp(x *Value) *Value { return unary("Exp", x) }

func gradExp(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{Mul(dy[0], n.Outputs[0])}
}

// Log is the natural logarithm.
func Log(x *Value) *Value { return unary("Log", x) }

func gradLog(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{Div(dy[0], n.Inputs[0])}
}

// Sqrt is the square root.
func Sqrt(x *Value) *Value { return unary("Sqrt", x) }

// d sqrt(x) = dy / (2 sqrt(x)).
func gradSqrt(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{Div(dy[0], Mul(n.Outputs[0], ScalarLike(dy[0], 2)))}
}

// Reciprocal is 1/x.
func Reciprocal(x *Value) *Value { return unary("Reciprocal", x) }

// d(1/x) = -dy·y².
func gradReciprocal(n *Node, dy []*Value, want []bool) []*Value {
	y := n.Outputs[0]
	return []*Value{Neg(Mul(dy[0], Mul(y, y)))}
}

// Relu is max(x, 0).
func Relu(x *Value) *Value { return unary("Relu", x) }

// At the kink x = 0 the gradient is 0, as in PyTorch (threshold_backward uses x > 0). The
// 0/1 mask of y = relu(x) ≥ 0 is, in float32, HardSigmoid(y) with slope 2¹²⁶ and offset 0:
// clip(2¹²⁶·y, 0, 1) is 1 for every normal positive float and 0 at 0 (a subnormal y, below
// 2⁻¹²⁶, would get a fraction). One in-place unary pass where Greater and Cast take two full
// passes (ORT CPU: 0.4 ms against 1.9 ms at 8×960×15×20). float16 cannot hold the slope and
// keeps the comparison.
func gradRelu(n *Node, dy []*Value, want []bool) []*Value {
	y := n.Outputs[0]
	if y.dtype == Float {
		mask := unary("HardSigmoid", y, Attr{"alpha", float32(0x1p126)}, Attr{"beta", float32(0)})
		return []*Value{Mul(dy[0], mask)}
	}
	return []*Value{Mul(dy[0], Cast(Greater(y, ScalarLike(y, 0)), y.dtype))}
}

// Sigmoid is 1/(1+e^-x).
func Sigmoid(x *Value) *Value { return unary("Sigmoid", x) }

func gradSigmoid(n *Node, dy []*Value, want []bool) []*Value {
	y := n.Outputs[0]
	return []*Value{Mul(dy[0], Mul(y, Sub(ScalarLike(y, 1), y)))}
}

// HardSigmoid is clip(x/6 + 1/2, 0, 1), PyTorch's nn.Hardsigmoid.
func HardSigmoid(x *Value) *Value {
	return unary("HardSigmoid", x, Attr{"alpha", float32(1.0 / 6)}, Attr{"beta", float32(0.5)})
}

// Gradient alpha inside the linear part (PyTorch: -3 < x < 3, open at both ends), else 0.
func gradHardSigmoid(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	alpha, beta := n.Float("alpha", 0.2), n.Float("beta", 0.5)
	lo, hi := -beta/alpha, (1-beta)/alpha
	inside := And(Greater(x, ScalarLike(x, lo)), Less(x, ScalarLike(x, hi)))
	return []*Value{Where(inside, Mul(dy[0], ScalarLike(x, alpha)), ScalarLike(x, 0))}
}

// HardSwish is x·relu6(x+3)/6.
func HardSwish(x *Value) *Value { return unary("HardSwish", x) }

// d/dx = 0 for x < -3, 1 for x > 3, (2x+3)/6 between. PyTorch's hardswish_backward takes the
// middle branch at x = -3 (giving -1/2) and the right branch at x = 3; we give 0 at x = -3
// and within one float32 step above it (the branch is decided on the rounded g below), and
// match it elsewhere (TestActivationSlopesExact).
//
// The slope is built from in-place unary activations and scalar arithmetic, which ORT's CPU
// provider runs at a fraction of the cost of comparisons and Where (8×960×15×20: the old
// Less/Greater/Where form 14 ms, this one 4 ms; Shrink, the obvious tool for the first
// jump, is itself slower than all of it):
//
//	g = HardSigmoid(x; −1/6, 1/2) = clip(1/2 − x/6, 0, 1)   (0 exactly for x ≥ 3, 1 for x ≤ −3)
//	q = ThresholdedRelu(g − 1/4; alpha −1/4)                (g − 1/4, and 0 where g = 0)
//	s = ThresholdedRelu(1 − 2q; alpha −1/2)
//
// Between the bends 1 − 2q = 1 − 2(1/2 − x/6 − 1/4) = 1/2 + x/3. For x ≥ 3, q = 0 and s = 1.
// For x ≤ −3, 1 − 2q is exactly −1/2, which ThresholdedRelu (keeps values > alpha) sends to
// 0.
func gradHardSwish(n *Node, dy []*Value, want []bool) []*Value {
	x := n.Inputs[0]
	g := unary("HardSigmoid", x, Attr{"alpha", float32(-1.0 / 6)}, Attr{"beta", float32(0.5)})
	q := unary("ThresholdedRelu", Add(g, ScalarLike(x, -0.25)), Attr{"alpha", float32(-0.25)})
	s := Add(Mul(q, ScalarLike(x, -2)), ScalarLike(x, 1))
	s = unary("ThresholdedRelu", s, Attr{"alpha", float32(-0.5)})
	return []*Value{Mul(dy[0], s)}
}

// Cast converts the element type.
func Cast(x *Value, to DType) *Value {
	return x.g.addNode("Cast", []*Value{x}, []Attr{{"to", int64(to)}}, []outSpec{{to, x.shape}})[0]
}

// The gradient of a cast between float types is the cast back.
func gradCast(n *Node, dy []*Value, want []bool) []*Value {
	if !n.Inputs[0].dtype.IsFloat() {
		return []*Value{nil}
	}
	return []*Value{Cast(dy[0], n.Inputs[0].dtype)}
}

// Identity passes x through.
func Identity(x *Value) *Value { return unary("Identity", x) }

func gradIdentity(n *Node, dy []*Value, want []bool) []*Value { return []*Value{dy[0]} }

// Comparisons give bool tensors (no gradient).
func Greater(a, b *Value) *Value { return compare("Greater", a, b) }
func Less(a, b *Value) *Value    { return compare("Less", a, b) }
func Equal(a, b *Value) *Value   { return compare("Equal", a, b) }

// And is the logical and of two bool tensors.
func And(a, b *Value) *Value {
	return a.g.addNode("And", []*Value{a, b}, nil, []outSpec{{Bool, broadcastShape("And", a.shape, b.shape)}})[0]
}

// Or is the logical or of two bool tensors.
func Or(a, b *Value) *Value {
	return a.g.addNode("Or", []*Value{a, b}, nil, []outSpec{{Bool, broadcastShape("Or", a.shape, b.shape)}})[0]
}

// Not is the logical not.
func Not(a *Value) *Value { return unary("Not", a) }

// IsInf and IsNaN flag non-finite elements.
func IsInf(x *Value) *Value {
	return x.g.addNode("IsInf", []*Value{x}, nil, []outSpec{{Bool, x.shape}})[0]
}
func IsNaN(x *Value) *Value {
	return x.g.addNode("IsNaN", []*Value{x}, nil, []outSpec{{Bool, x.shape}})[0]
}

// Where selects a where cond is true, else b.
func Where(cond, a, b *Value) *Value {
	if cond.dtype != Bool || a.dtype != b.dtype {
		panic(fmt.Sprintf("graphs: Where(%v, %v, %v)", cond, a, b))
	}
	shape := broadcastShape("Where", cond.shape, broadcastShape("Where", a.shape, b.shape))
	return a.g.addNode("Where", []*Value{cond, a, b}, nil, []outSpec{{a.dtype, shape}})[0]
}

func gradWhere(n *Node, dy []*Value, want []bool) []*Value {
	cond, a, b := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	zero := ScalarLike(dy[0], 0)
	var da, db *Value
	if want[1] {
		da = sumToShape(Where(cond, dy[0], zero), a.shape)
	}
	if want[2] {
		db = sumToShape(Where(cond, zero, dy[0]), b.shape)
	}
	return []*Value{nil, da, db}
}

// Max is the elementwise maximum of two tensors.
func Max(a, b *Value) *Value { return binaryOp("Max", a, b) }

// Pow raises x to a constant power.
func Pow(x *Value, p float32) *Value { return binaryOp("Pow", x, ScalarLike(x, p)) }

// d x^p = p·x^(p-1)·dy (exponent is constant).
func gradPow(n *Node, dy []*Value, want []bool) []*Value {
	x, p := n.Inputs[0], n.Inputs[1]
	if want[1] {
		panic("graphs: gradient of Pow with respect to its exponent is not supported")
	}
	pm1 := Sub(p, ScalarLike(p, 1))
	return []*Value{sumToShape(Mul(dy[0], Mul(p, binaryOp("Pow", x, pm1))), x.shape), nil}
}
