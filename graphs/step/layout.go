package step

import "github.com/cardseg-ort/cardseg-ort/graphs"

// rowWidth is the width of the matrix the optimizer works on. AdamW runs on all parameters at
// once, laid end to end; as a [P] vector that layout costs ONNX Runtime's CUDA provider dearly:
// its Concat and Split build an index table with one int64 per element of the joined axis on
// the host and copy it to the device on every run (25 MB for P = 3.2M; the two Concats and
// the Split took 60–75 ms of an H200 step). As the rows of a [⌈P/8⌉, 8] matrix the table is
// 8 times smaller. Every MobileNetV3 tensor but the 2-element classifier biases has a multiple
// of 8 elements, so nearly every tensor is one block of whole rows. (PackRows, which packs
// the FusedPack step, uses the same width.)
const rowWidth = graphs.PackRowsWidth

// rowLayout lays tensors end to end (the order and element offsets of a flat [P] vector) as a
// [rows, rowWidth] matrix, zero-padded at the end. Runs of consecutive tensors whose sizes are
// not multiples of the width are joined flat first, until their running size is one.
type rowLayout struct {
	sizes  []int64
	shapes []graphs.Shape
	groups [][]int // consecutive tensor indices; each group but the last spans whole rows
	total  int64   // P
	rows   int64
	// fused packs and unpacks with our PackRows and UnpackRows operators (Config.FusedPack):
	// one node each way, whatever the sizes, float16 tensors converted on the way in.
	fused bool
}

func newRowLayout(shapes []graphs.Shape, fused bool) rowLayout {
	l := rowLayout{shapes: shapes, fused: fused}
	var cur []int
	var run int64
	for i, s := range shapes {
		n := s.Size()
		l.sizes = append(l.sizes, n)
		l.total += n
		cur = append(cur, i)
		run += n
		if run%rowWidth == 0 {
			l.groups = append(l.groups, cur)
			cur, run = nil, 0
		}
	}
	if len(cur) > 0 {
		l.groups = append(l.groups, cur)
	}
	l.rows = (l.total + rowWidth - 1) / rowWidth
	return l
}

func (l rowLayout) pad() int64 { return l.rows*rowWidth - l.total }

func (l rowLayout) groupSize(g []int) int64 {
	var n int64
	for _, i := range g {
		n += l.sizes[i]
	}
	return n
}

// groupRows is the number of rows a group spans (the last group includes the padding).
func (l rowLayout) groupRows(k int) int64 {
	n := l.groupSize(l.groups[k])
	if k == len(l.groups)-1 {
		n += l.pad()
	}
	return n / rowWidth
}

// pack lays vs (the layout's tensors, in order) out as the [rows, rowWidth] matrix.
func (l rowLayout) pack(vs []*graphs.Value) *graphs.Value {
	if l.fused {
		return graphs.PackRows(l.rows, vs...)
	}
	blocks := make([]*graphs.Value, len(l.groups))
	for k, grp := range l.groups {
		parts := make([]*graphs.Value, len(grp))
		for j, i := range grp {
			parts[j] = graphs.Reshape(vs[i], graphs.Shape{l.sizes[i]})
		}
		flat := parts[0]
		if len(parts) > 1 {
			flat = graphs.Concat(0, parts...)
		}
		if k == len(l.groups)-1 && l.pad() > 0 {
			flat = graphs.Pad(flat, []int64{0, l.pad()})
		}
		blocks[k] = graphs.Reshape(flat, graphs.Shape{l.groupRows(k), rowWidth})
	}
	if len(blocks) == 1 {
		return blocks[0]
	}
	return graphs.Concat(0, blocks...)
}

// unpack is pack's inverse: the tensors, in their shapes.
func (l rowLayout) unpack(m *graphs.Value) []*graphs.Value {
	if l.fused {
		return graphs.UnpackRows(m, graphs.Float, l.shapes)
	}
	blocks := []*graphs.Value{m}
	if len(l.groups) > 1 {
		rows := make([]int64, len(l.groups))
		for k := range l.groups {
			rows[k] = l.groupRows(k)
		}
		blocks = graphs.Split(m, 0, rows)
	}
	out := make([]*graphs.Value, len(l.sizes))
	for k, grp := range l.groups {
		n := l.groupSize(grp)
		flat := graphs.Reshape(blocks[k], graphs.Shape{l.groupRows(k) * rowWidth})
		if k == len(l.groups)-1 && l.pad() > 0 {
			flat = graphs.Slice(flat, 0, 0, n)
		}
		parts := []*graphs.Value{flat}
		if len(grp) > 1 {
			sizes := make([]int64, len(grp))
			for j, i := range grp {
				sizes[j] = l.sizes[i]
			}
			parts = graphs.Split(flat, 0, sizes)
		}
		for j, i := range grp {
			out[i] = graphs.Reshape(parts[j], l.shapes[i])
		}
	}
	return out
}

// fromFlat turns a flat [P] vector (the moments, the parameter mask) into the matrix.
func (l rowLayout) fromFlat(v *graphs.Value) *graphs.Value {
	if l.pad() > 0 {
		v = graphs.Pad(v, []int64{0, l.pad()})
	}
	return graphs.Reshape(v, graphs.Shape{l.rows, rowWidth})
}

// toFlat is fromFlat's inverse.
func (l rowLayout) toFlat(m *graphs.Value) *graphs.Value {
	v := graphs.Reshape(m, graphs.Shape{l.rows * rowWidth})
	if l.pad() > 0 {
		v = graphs.Slice(v, 0, 0, l.total)
	}
	return v
}
