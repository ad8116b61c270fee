package graphs

import "fmt"

// MatMul is numpy-style batched matrix multiplication of tensors of rank ≥ 2.
func MatMul(a, b *Value) *Value {
	if a.Rank() < 2 || b.Rank() < 2 || a.dtype != b.dtype {
		panic(fmt.Sprintf("graphs: MatMul(%v, %v)", a, b))
	}
	m, k := a.Dim(-2), a.Dim(-1)
	k2, n := b.Dim(-2), b.Dim(-1)
	if k != k2 {
		panic(fmt.Sprintf("graphs: MatMul(%v, %v): inner dimensions differ", a, b))
	}
	batch := broadcastShape("MatMul", a.shape[:a.Rank()-2], b.shape[:b.Rank()-2])
	shape := append(batch.clone(), m, n)
	return a.g.addNode("MatMul", []*Value{a, b}, nil, []outSpec{{a.dtype, shape}})[0]
}

// swapLast transposes the last two axes.
func swapLast(x *Value) *Value {
	perm := make([]int64, x.Rank())
	for i := range perm {
		perm[i] = int64(i)
	}
	r := x.Rank()
	perm[r-2], perm[r-1] = perm[r-1], perm[r-2]
	return Transpose(x, perm...)
}

// dA = dY·Bᵀ, dB = Aᵀ·dY, each summed over the batch axes it was broadcast along.
func gradMatMul(n *Node, dy []*Value, want []bool) []*Value {
	a, b := n.Inputs[0], n.Inputs[1]
	var da, db *Value
	if want[0] {
		da = sumToShape(MatMul(dy[0], swapLast(b)), a.shape)
	}
	if want[1] {
		db = sumToShape(MatMul(swapLast(a), dy[0]), b.shape)
	}
	return []*Value{da, db}
}
