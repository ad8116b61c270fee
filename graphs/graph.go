package graphs

import (
	"fmt"
	"strings"
)

// DType is an element type; values are ONNX TensorProto.DataType codes.
type DType int32

const (
	Float   DType = 1
	Uint8   DType = 2
	Int32   DType = 6
	Int64   DType = 7
	Bool    DType = 9
	Float16 DType = 10
	Double  DType = 11
)

func (d DType) String() string {
	switch d {
	case Float:
		return "float32"
	case Uint8:
		return "uint8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Bool:
		return "bool"
	case Float16:
		return "float16"
	case Double:
		return "float64"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// IsFloat reports whether gradients can flow through values of this type.
func (d DType) IsFloat() bool { return d == Float || d == Float16 || d == Double }

// Shape is a static shape; a dimension of -1 is symbolic (only the batch dimension of an
// inference model's input and what depends on it).
type Shape []int64

// Size is the number of elements (-1 when a dimension is symbolic).
func (s Shape) Size() int64 {
	n := int64(1)
	for _, d := range s {
		if d < 0 {
			return -1
		}
		n *= d
	}
	return n
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d < 0 {
			parts[i] = "N"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Equal compares two shapes.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

func (s Shape) clone() Shape { return append(Shape(nil), s...) }

type valueKind int

const (
	kindNode        valueKind = iota // produced by a node
	kindInput                        // graph input
	kindInitializer                  // constant data stored in the model
)

// Value is a tensor in a graph: a graph input, an initializer or a node output.
type Value struct {
	g     *Graph
	name  string
	dtype DType
	shape Shape
	kind  valueKind
	node  *Node // producer for kindNode
	init  *Initializer
}

func (v *Value) Name() string    { return v.name }
func (v *Value) DType() DType    { return v.dtype }
func (v *Value) Shape() Shape    { return v.shape.clone() }
func (v *Value) Rank() int       { return len(v.shape) }
func (v *Value) Graph() *Graph   { return v.g }
func (v *Value) Producer() *Node { return v.node }

// IsConstant reports whether v is an initializer (data known at build time).
func (v *Value) IsConstant() bool { return v.kind == kindInitializer }

// Dim returns dimension i (negative i counts from the end).
func (v *Value) Dim(i int) int64 {
	if i < 0 {
		i += len(v.shape)
	}
	return v.shape[i]
}

func (v *Value) String() string { return fmt.Sprintf("%s %v%v", v.name, v.dtype, v.shape) }

// Initializer is constant tensor data stored in the model.
type Initializer struct {
	Value   *Value
	Float32 []float32
	Int64   []int64
	Raw     []byte // other element types, little-endian
}

// Attr is one node attribute; Value is int64, float32, string, []int64, []float32 or *Tensor-free
// types only.
type Attr struct {
	Name  string
	Value any
}

// Node is one ONNX operator application.
type Node struct {
	Op      string
	Name    string
	Inputs  []*Value
	Outputs []*Value
	Attrs   []Attr
	Domain  string
	// noGrad: Grad does not differentiate through the node (UnpackRows): its outputs may be
	// differentiated with respect to, but a loss that reaches them from a value Grad
	// differentiates with respect to is an error, not a zero gradient.
	noGrad bool
}

// Int returns an int attribute, or def.
func (n *Node) Int(name string, def int64) int64 {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a.Value.(int64)
		}
	}
	return def
}

// Ints returns an ints attribute, or nil.
func (n *Node) Ints(name string) []int64 {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a.Value.([]int64)
		}
	}
	return nil
}

// Float returns a float attribute, or def.
func (n *Node) Float(name string, def float32) float32 {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a.Value.(float32)
		}
	}
	return def
}

func (n *Node) String() string {
	ins := make([]string, len(n.Inputs))
	for i, v := range n.Inputs {
		ins[i] = v.String()
	}
	return fmt.Sprintf("node %q (%s) inputs [%s]", n.Name, n.Op, strings.Join(ins, ", "))
}

// Graph is an ONNX graph under construction.
type Graph struct {
	Name     string
	nodes    []*Node
	inputs   []*Value
	outputs  []*Value
	inits    []*Initializer
	used     map[string]int
	scope    []string
	constant map[string]*Value // dedup of small constants by content key
	regions  []*composite
	// shiftable: ChannelScale16 outputs x·s + 0 that are gradient contributions (ScaleChannels'
	// input gradient), into which accumulate may fold a broadcast contribution as the shift.
	shiftable map[*Value]bool
	Doc       string
	Metadata  map[string]string
	// Grad chooses between equivalent gradient formulations where the fastest one depends on
	// the execution provider.
	Grad GradOptions
	// NCHWcBlock, when positive, is the channel block size of ONNX Runtime's NCHWc CPU kernels
	// (8 with AVX2, 16 with AVX-512; a session's NCHWcProbe tells it): Conv then builds every
	// float32 depthwise convolution whose channel count is a multiple of it on those kernels
	// (NCHWcDomain), forward and gradients. Zero keeps the graph standard ONNX.
	NCHWcBlock int64
}

// GradOptions selects gradient formulations.
type GradOptions struct {
	// DepthwiseWeightGrad: "conv" computes a convolution's weight gradient as one grouped
	// Conv with the batch folded into channels (the output gradient is the kernel, as large
	// as the feature map); "" is "conv" for grouped convolutions and "im2col" for dense ones
	// (the fastest choice on the CPU); "taps" as one product-and-sum per kernel tap over
	// strided slices of the input (k² small reductions, no large-kernel convolution);
	// "im2col" (every non-pointwise convolution, grouped or dense) as a batched MatMul of the
	// output gradient with the input's unfolded k×k patches, the fast form on CUDA (the patches
	// unfolded by a one-hot Conv); "gather" the same with the patches unfolded by a Gather;
	// "fused" one DepthwiseWeightGrad16 node per float16 depthwise layer (CardsegDomain, our
	// own kernels), "gather" for the rest.
	DepthwiseWeightGrad string
	// WeightGradProduct: "" or "batched" computes a 1×1 convolution's weight gradient as a
	// MatMul batched over the images, [Cout, H·W] by [H·W, Cin] each, summed over the batch,
	// and a dense k×k one on the GPU (the stem, with the patches unfolded by a Gather) as one
	// [Cout, N·H·W] by [N·H·W, Cin·k²] product of transposed copies; "blockdiag" either as one
	// MatMul of all images at once, [N·Cout, H·W] by [H·W, N·Cin(·k²)], whose diagonal blocks
	// are summed: N times the multiplications, but one large product instead of N thin ones
	// (which leave most of a GPU idle: on an H100 the 16×16 weights of a 240×320 layer took
	// 97 µs, 16 thread blocks over a 76,800-long reduction) and no transposes. It applies where
	// the product is small (N²·Cout·Cin(·k²) ≤ BlockDiagMaxOut) and the reduction long
	// (H·W ≥ BlockDiagMinHW), the default form elsewhere; "blockdiag-all" wherever it can (for
	// tests).
	WeightGradProduct string
}

// The limits of GradOptions.WeightGradProduct "blockdiag": at batch 8 and 480×640, the stem,
// the 1×1 layers at 240×320 and 120×160 (up to 72×24 weights) and three at 60×80.
const (
	BlockDiagMaxOut = 1 << 18
	BlockDiagMinHW  = 4096
)

// New starts an empty graph.
func New(name string) *Graph {
	return &Graph{Name: name, used: map[string]int{}, constant: map[string]*Value{}, Metadata: map[string]string{}}
}

// Nodes, Inputs, Outputs and Initializers expose the graph's parts (read-only use).
func (g *Graph) Nodes() []*Node               { return g.nodes }
func (g *Graph) Inputs() []*Value             { return g.inputs }
func (g *Graph) Outputs() []*Value            { return g.outputs }
func (g *Graph) Initializers() []*Initializer { return g.inits }

// Scope pushes a name prefix (e.g. "backbone.3.block.0") for the values and nodes built until
// the returned function is called. Names are deterministic: prefix/op_counter.
func (g *Graph) Scope(name string) func() {
	g.scope = append(g.scope, name)
	return func() { g.scope = g.scope[:len(g.scope)-1] }
}

// uniqueName returns base under the current scope, with a counter if taken.
func (g *Graph) uniqueName(base string) string {
	full := base
	if len(g.scope) > 0 {
		full = strings.Join(g.scope, "/") + "/" + base
	}
	n := g.used[full]
	g.used[full] = n + 1
	if n == 0 {
		return full
	}
	return fmt.Sprintf("%s_%d", full, n)
}

// reserve claims an exact name (inputs, initializers, outputs); a clash is a programmer error.
func (g *Graph) reserve(name string) {
	if g.used[name] > 0 {
		panic(fmt.Sprintf("graphs: name %q used twice", name))
	}
	g.used[name] = 1
}

// Input declares a graph input with an exact name.
func (g *Graph) Input(name string, dt DType, shape Shape) *Value {
	g.reserve(name)
	v := &Value{g: g, name: name, dtype: dt, shape: shape.clone(), kind: kindInput}
	g.inputs = append(g.inputs, v)
	return v
}

// InitFloat adds a float32 initializer with an exact name.
func (g *Graph) InitFloat(name string, shape Shape, data []float32) *Value {
	g.reserve(name)
	return g.initFloat(name, shape, data)
}

func (g *Graph) initFloat(name string, shape Shape, data []float32) *Value {
	checkInitSize(name, shape, len(data))
	return g.addInit(name, Float, shape, Initializer{Float32: data})
}

// InitInt64 adds an int64 initializer with an exact name.
func (g *Graph) InitInt64(name string, shape Shape, data []int64) *Value {
	g.reserve(name)
	return g.initInt64(name, shape, data)
}

func (g *Graph) initInt64(name string, shape Shape, data []int64) *Value {
	checkInitSize(name, shape, len(data))
	return g.addInit(name, Int64, shape, Initializer{Int64: data})
}

// InitRaw adds an initializer of any element type from little-endian bytes.
func (g *Graph) InitRaw(name string, dt DType, shape Shape, raw []byte) *Value {
	g.reserve(name)
	return g.initRaw(name, dt, shape, raw)
}

func (g *Graph) initRaw(name string, dt DType, shape Shape, raw []byte) *Value {
	return g.addInit(name, dt, shape, Initializer{Raw: raw})
}

func checkInitSize(name string, shape Shape, n int) {
	if int64(n) != shape.Size() {
		panic(fmt.Sprintf("graphs: initializer %s: shape %v needs %d values, got %d", name, shape, shape.Size(), n))
	}
}

// addInit records an initializer holding init's data.
func (g *Graph) addInit(name string, dt DType, shape Shape, init Initializer) *Value {
	v := &Value{g: g, name: name, dtype: dt, shape: shape.clone(), kind: kindInitializer}
	init.Value = v
	v.init = &init
	g.inits = append(g.inits, v.init)
	return v
}

// ConstFloat returns a float32 constant, shared between uses with the same content when small.
func (g *Graph) ConstFloat(shape Shape, data ...float32) *Value {
	key := ""
	if len(data) <= 16 {
		key = fmt.Sprintf("f%v%v", shape, data)
		if v, ok := g.constant[key]; ok {
			return v
		}
	}
	v := g.initFloat(g.uniqueName("const"), shape, data)
	if key != "" {
		g.constant[key] = v
	}
	return v
}

// ConstInt64 returns an int64 constant (shared when small).
func (g *Graph) ConstInt64(shape Shape, data ...int64) *Value {
	key := ""
	if len(data) <= 16 {
		key = fmt.Sprintf("i%v%v", shape, data)
		if v, ok := g.constant[key]; ok {
			return v
		}
	}
	v := g.initInt64(g.uniqueName("const"), shape, data)
	if key != "" {
		g.constant[key] = v
	}
	return v
}

// Scalar is a rank-0 float32 constant (ScalarLike gives other element types).
func (g *Graph) Scalar(x float32) *Value { return g.ConstFloat(Shape{}, x) }

// ScalarLike is a rank-0 constant with v's element type: float16 is stored as float16, other
// types are a Cast of the float32 constant.
func ScalarLike(v *Value, x float32) *Value {
	switch v.dtype {
	case Float:
		return v.g.Scalar(x)
	case Float16:
		return v.g.ConstFloat16(Shape{}, x)
	}
	return Cast(v.g.Scalar(x), v.dtype)
}

// Ints1D is a 1-D int64 constant, used for shapes and axes.
func (g *Graph) Ints1D(xs ...int64) *Value { return g.ConstInt64(Shape{int64(len(xs))}, xs...) }

// Output marks v as a graph output under an exact name. A node output is renamed in place
// (names are only written out at Marshal); an input, an initializer or a value that is
// already an output gets an Identity node instead.
func (g *Graph) Output(name string, v *Value) *Value {
	if v.g != g {
		panic("graphs: output from another graph")
	}
	switch {
	case v.name == name && v.kind == kindNode && !g.isOutput(v):
	case v.kind == kindNode && !g.isOutput(v):
		g.reserve(name)
		v.name = name
	default:
		v = g.addNodeNamed("Identity", []*Value{v}, nil, []outSpec{{v.dtype, v.shape}}, name)[0]
	}
	g.outputs = append(g.outputs, v)
	return v
}

func (g *Graph) isOutput(v *Value) bool {
	for _, o := range g.outputs {
		if o == v {
			return true
		}
	}
	return false
}

type outSpec struct {
	dtype DType
	shape Shape
}

// addNode appends a node whose outputs get scoped unique names.
func (g *Graph) addNode(op string, inputs []*Value, attrs []Attr, outs []outSpec) []*Value {
	return g.addNodeNamed(op, inputs, attrs, outs, "")
}

func (g *Graph) addNodeNamed(op string, inputs []*Value, attrs []Attr, outs []outSpec, outName string) []*Value {
	for _, in := range inputs {
		if in == nil {
			panic(fmt.Sprintf("graphs: %s with a nil input", op))
		}
		if in.g != g {
			panic(fmt.Sprintf("graphs: %s input %s belongs to another graph", op, in.name))
		}
	}
	name := g.uniqueName(op)
	n := &Node{Op: op, Name: name, Inputs: inputs, Attrs: attrs}
	for i, o := range outs {
		vn := name
		if len(outs) > 1 {
			vn = fmt.Sprintf("%s:%d", name, i)
		}
		if outName != "" {
			g.reserve(outName)
			vn = outName
		}
		n.Outputs = append(n.Outputs, &Value{g: g, name: vn, dtype: o.dtype, shape: o.shape.clone(), kind: kindNode, node: n})
	}
	g.nodes = append(g.nodes, n)
	return n.Outputs
}

// Build runs f and converts a panic raised by graph building (a programmer error such as a
// shape mismatch) into an error.
func Build(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("graph build: %v", r)
		}
	}()
	return f()
}

// CustomNode adds a node of any ONNX op with one output of the given type and shape, for
// operators that need no gradient rule and no builder of their own (ArgMax, say).
func CustomNode(op string, inputs []*Value, attrs []Attr, dt DType, shape Shape) []*Value {
	return inputs[0].g.addNode(op, inputs, attrs, []outSpec{{dt, shape}})
}

// Scalar is a rank-0 float32 constant in g (package-level spelling of g.Scalar).
func Scalar(g *Graph, x float32) *Value { return g.Scalar(x) }
