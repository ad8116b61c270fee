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

// LogSoftmax along axis.
func LogSoftmax(x *Value, axis int) *Value { return unary("LogSoftmax", x, Attr{"axis", int64(axis)}) }

// dx = dy − e^y·Σ dy.
func gradLogSoftmax(n *Node, dy []*Value, want []bool) []*Value {
	y := n.Outputs[0]
	axis := n.Int("axis", -1)
	s := ReduceSum(dy[0], true, axis)
	return []*Value{Sub(dy[0], Mul(Exp(y), s))}
}
