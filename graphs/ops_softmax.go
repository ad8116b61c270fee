package graphs

// Softmax along axis.
func Softmax(x *Value, axis int) *Value { return unary("Softmax", x, Attr{"axis", int64(axis)}) }

// dx = y·(dy − Σ dy·y).
func gradSoftmax(n *Node, dy []*Value, want []bool) []*Value {
	y := n.Outputs[0]
	axis := n.Int("axis", -1)
	s := ReduceSum(Mul(dy[0], y), true, axis)
	return []*Value{Mul(y, Sub(dy[0], s))}
}

// LogSoftmax along axis. Along the last axis it is one LogSoftmax node. Along any other axis
// ONNX Runtime's CPU kernel transposes the axis to the end and back, which for the loss's
// [8,2,240,320] logits took 37 ms; there it is written out as x − m − log Σ e^(x−m), m the
// maximum along the axis (7 ms), a composite with LogSoftmax's own gradient rule.
func LogSoftmax(x *Value, axis int) *Value {
	a := int64(axis)
	if a < 0 {
		a += int64(x.Rank())
	}
	if a == int64(x.Rank()-1) {
		return unary("LogSoftmax", x, Attr{"axis", a})
	}
	var y *Value
	return x.g.Composite("log_softmax", []*Value{x}, func() []*Value {
		xm := Sub(x, ReduceMax(x, true, a))
		y = Sub(xm, Log(ReduceSum(Exp(xm), true, a)))
		return []*Value{y}
	}, func(dy []*Value, want []bool) []*Value {
		return []*Value{logSoftmaxVJP(y, dy[0], a)}
	})[0]
}

// dx = dy − e^y·Σ dy.
func logSoftmaxVJP(y, dy *Value, axis int64) *Value {
	return Sub(dy, Mul(Exp(y), ReduceSum(dy, true, axis)))
}

func gradLogSoftmax(n *Node, dy []*Value, want []bool) []*Value {
	return []*Value{logSoftmaxVJP(n.Outputs[0], dy[0], n.Int("axis", -1))}
}
