package step

import "github.com/cardseg-ort/cardseg-ort/graphs"

// ArgMax over axis, keeping it (int64); no gradient.
func ArgMax(x *graphs.Value, axis int64) *graphs.Value {
	return graphs.CustomNode("ArgMax", []*graphs.Value{x}, []graphs.Attr{{Name: "axis", Value: axis}, {Name: "keepdims", Value: int64(1)}},
		graphs.Int64, reduceKeep(x.Shape(), axis))[0]
}

func reduceKeep(s graphs.Shape, axis int64) graphs.Shape {
	s[axis] = 1
	return s
}
