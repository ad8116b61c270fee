package graphs

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// gradRule computes the vector-Jacobian product of one node: given the gradients of its
// outputs (nil where an output does not reach the loss) it returns one gradient per input
// (nil where want is false or the input is not differentiable).
type gradRule func(n *Node, dy []*Value, want []bool) []*Value

// gradRules is the one table from ONNX op type to gradient rule. Ops that are absent have no
// gradient; differentiating through them is an error naming the node.
var gradRules map[string]gradRule

func init() {
	gradRules = map[string]gradRule{
		"Add":             gradAdd,
		"Sub":             gradSub,
		"Mul":             gradMul,
		"Div":             gradDiv,
		"Neg":             gradNeg,
		"Exp":             gradExp,
		"Log":             gradLog,
		"Sqrt":            gradSqrt,
		"Reciprocal":      gradReciprocal,
		"Pow":             gradPow,
		"Relu":            gradRelu,
		"Sigmoid":         gradSigmoid,
		"HardSigmoid":     gradHardSigmoid,
		"HardSwish":       gradHardSwish,
		"Cast":            gradCast,
		"Identity":        gradIdentity,
		"Where":           gradWhere,
		"ReduceSum":       gradReduceSum,
		"ReduceMean":      gradReduceMean,
		"ReduceSumSquare": gradReduceSumSquare,
		"Reshape":         gradReshape,
		"Transpose":       gradTranspose,
		"Slice":           gradSlice,
		"Pad":             gradPad,
		"Expand":          gradExpand,
		"Concat":          gradConcat,
		"MatMul":          gradMatMul,
		"Softmax":         gradSoftmax,
		"LogSoftmax":      gradLogSoftmax,
		"Conv":            gradConv,

		NCHWcDomain + ":ReorderInput":  gradReorderInput,
		NCHWcDomain + ":ReorderOutput": gradReorderOutput,
		NCHWcDomain + ":Conv":          gradNCHWcConv,

		CardsegDomain + ":DepthwiseConv16": gradDepthwiseConv16,
	}
}

// ruleKey is a node's key in gradRules: the op type, prefixed by "domain:" outside ONNX's own.
func ruleKey(n *Node) string {
	if n.Domain != "" {
		return n.Domain + ":" + n.Op
	}
	return n.Op
}

// HasGradRule reports whether op can be differentiated.
func HasGradRule(op string) bool { _, ok := gradRules[op]; return ok }

// Grad appends to the graph the gradient of the scalar loss with respect to each of wrt and
// returns them in the same order. A parameter the loss does not depend on gets a zero tensor.
// Gradient nodes are named under the scope "grad".
func Grad(loss *Value, wrt []*Value) (grads []*Value, err error) {
	g := loss.g
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("grad: %v", r)
		}
	}()
	if loss.Size() != 1 || !loss.dtype.IsFloat() {
		return nil, fmt.Errorf("grad: loss %v must be a float scalar", loss)
	}
	// Values that depend on some wrt (forward reach) ...
	dependsOnParam := map[*Value]bool{}
	for _, p := range wrt {
		if p.g != g {
			return nil, fmt.Errorf("grad: %s belongs to another graph", p.name)
		}
		dependsOnParam[p] = true
	}
	isWrt := map[*Value]bool{}
	for _, p := range wrt {
		isWrt[p] = true
	}
	nodes := g.nodes
	for _, n := range nodes {
		if n.noGrad {
			continue
		}
		for _, in := range n.Inputs {
			if dependsOnParam[in] {
				for _, out := range n.Outputs {
					if out.dtype.IsFloat() {
						dependsOnParam[out] = true
					}
				}
				break
			}
		}
	}
	// ... and that the loss depends on (backward reach): the nodes to differentiate.
	reachesLoss := map[*Value]bool{loss: true}
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		hit := false
		for _, out := range n.Outputs {
			hit = hit || reachesLoss[out]
		}
		if hit {
			for _, in := range n.Inputs {
				reachesLoss[in] = true
			}
		}
	}
	active := func(v *Value) bool { return dependsOnParam[v] && reachesLoss[v] && v.dtype.IsFloat() }
	for _, n := range nodes {
		if !n.noGrad || !slices.ContainsFunc(n.Inputs, active) {
			continue
		}
		for _, out := range n.Outputs {
			if reachesLoss[out] && !isWrt[out] {
				return nil, fmt.Errorf("grad: %s (op %s) carries no gradient, but the loss reaches its output %s from a value differentiated for: differentiate with respect to its outputs", n.Name, n.Op, out.name)
			}
		}
	}

	defer g.Scope("grad")()
	acc := map[*Value]*Value{loss: OnesLike(loss)}
	regionAt := map[int]*composite{}
	for _, c := range g.regions {
		for i := c.first; i <= c.last; i++ {
			regionAt[i] = c
		}
	}
	// Nodes are stored in topological order (a node only uses values built before it).
	end := len(nodes)
	for i := end - 1; i >= 0; i-- {
		if c := regionAt[i]; c != nil {
			if err := c.backward(nodes, acc, active); err != nil {
				return nil, err
			}
			i = c.first
			continue
		}
		n := nodes[i]
		if n.noGrad {
			continue
		}
		var dys []*Value
		any := false
		for _, out := range n.Outputs {
			dys = append(dys, acc[out])
			any = any || acc[out] != nil
		}
		if !any {
			continue
		}
		want := make([]bool, len(n.Inputs))
		need := false
		for k, in := range n.Inputs {
			want[k] = active(in)
			need = need || want[k]
		}
		if !need {
			continue
		}
		rule, ok := gradRules[ruleKey(n)]
		if !ok {
			return nil, fmt.Errorf("no gradient rule for %s (op %s) with inputs %s", n.Name, n.Op, describeValues(n.Inputs))
		}
		for k, d := range dys {
			if d == nil {
				dys[k] = ZerosLike(n.Outputs[k])
			}
		}
		gin := rule(n, dys, want)
		if len(gin) != len(n.Inputs) {
			panic(fmt.Sprintf("gradient rule for %s returned %d gradients for %d inputs", n.Op, len(gin), len(n.Inputs)))
		}
		for k, in := range n.Inputs {
			if !want[k] {
				continue
			}
			d := gin[k]
			if d == nil {
				return nil, fmt.Errorf("gradient rule for %s (op %s) gave no gradient for input %d (%v)", n.Name, n.Op, k, in)
			}
			if !d.shape.Equal(in.shape) || d.dtype != in.dtype {
				panic(fmt.Sprintf("gradient rule for %s (op %s) gave %v for input %v", n.Name, n.Op, d, in))
			}
			if prev := acc[in]; prev != nil {
				acc[in] = accumulate(prev, d)
			} else {
				acc[in] = d
			}
		}
	}
	grads = make([]*Value, len(wrt))
	for i, p := range wrt {
		if d := acc[p]; d != nil {
			grads[i] = d
		} else {
			grads[i] = ZerosLike(p)
		}
	}
	return grads, nil
}

// accumulate adds two gradient contributions to one value. A contribution that is an Expand
// of a smaller tensor (the gradient of a reduction: the mean pool of every squeeze-and-excitation
// block) enters through Add's broadcasting instead, so the expanded tensor is never written: one
// full-size kernel and pass fewer, the same sums.
//
// Where the other contribution is ScaleChannels' input gradient dy·s (a ChannelScale16 with a
// zero shift), the broadcast one becomes its shift: dy·s + dpool/HW in one pass.
func accumulate(a, b *Value) *Value {
	if src := expandSource(b); src != nil {
		return addBroadcast(a, src)
	}
	if src := expandSource(a); src != nil {
		return addBroadcast(b, src)
	}
	return Add(a, b)
}

func addBroadcast(full, src *Value) *Value {
	if full.g.shiftable[full] {
		n := full.node
		if src.dtype == Float16 && src.shape.Equal(n.Inputs[1].shape) {
			return ChannelScale16(n.Inputs[0], n.Inputs[1], src)
		}
	}
	return Add(full, src)
}

// expandSource is the input of the Expand that produced v, when Add can broadcast it to v's
// shape (same type and rank, each dimension 1 or v's), or nil.
func expandSource(v *Value) *Value {
	n := v.node
	if v.kind != kindNode || n == nil || n.Op != "Expand" || n.Domain != "" {
		return nil
	}
	src := n.Inputs[0]
	if src.dtype != v.dtype || src.Rank() != v.Rank() {
		return nil
	}
	for i, d := range src.shape {
		if d != 1 && d != v.shape[i] {
			return nil
		}
	}
	return src
}

// Size is the number of elements of v.
func (v *Value) Size() int64 { return v.shape.Size() }

// OnesLike and ZerosLike are constants broadcast to v's shape.
func OnesLike(v *Value) *Value  { return Expand(ScalarLike(v, 1), v.shape) }
func ZerosLike(v *Value) *Value { return Expand(ScalarLike(v, 0), v.shape) }

func describeValues(vs []*Value) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, ", ")
}

// GradRuleOps lists the op types that have a gradient rule, sorted.
func GradRuleOps() []string {
	ops := make([]string, 0, len(gradRules))
	for op := range gradRules {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// composite is a run of nodes differentiated as one unit by its own rule (a fused
// vector-Jacobian product that is cheaper than the chain of its parts, batch norm say).
type composite struct {
	name         string
	inputs, outs []*Value
	first, last  int
	vjp          func(dy []*Value, want []bool) []*Value
}

// Composite builds outs = build() and records that autodiff must differentiate the nodes build
// adds as one unit with vjp, which returns one gradient per input (nil where want is false).
// Values computed inside may be used outside (e.g. batch statistics for running averages) as
// long as no gradient flows through them; Grad reports it otherwise.
func (g *Graph) Composite(name string, inputs []*Value, build func() []*Value, vjp func(dy []*Value, want []bool) []*Value) []*Value {
	first := len(g.nodes)
	outs := build()
	last := len(g.nodes) - 1
	for _, r := range g.regions {
		if r.last >= first {
			panic(fmt.Sprintf("graphs: composite %s nested in %s", name, r.name))
		}
	}
	if last < first {
		panic(fmt.Sprintf("graphs: composite %s built no nodes", name))
	}
	g.regions = append(g.regions, &composite{name: name, inputs: inputs, outs: outs, first: first, last: last, vjp: vjp})
	return outs
}

func (c *composite) backward(nodes []*Node, acc map[*Value]*Value, active func(*Value) bool) error {
	isOut := map[*Value]bool{}
	any := false
	dys := make([]*Value, len(c.outs))
	for k, o := range c.outs {
		isOut[o] = true
		dys[k] = acc[o]
		any = any || dys[k] != nil
	}
	for i := c.first; i <= c.last; i++ {
		for _, v := range nodes[i].Outputs {
			if !isOut[v] && acc[v] != nil {
				return fmt.Errorf("composite %s: internal value %v is on the loss path outside the composite", c.name, v)
			}
		}
	}
	if !any {
		return nil
	}
	want := make([]bool, len(c.inputs))
	need := false
	for k, in := range c.inputs {
		want[k] = active(in)
		need = need || want[k]
	}
	if !need {
		return nil
	}
	for k, d := range dys {
		if d == nil {
			dys[k] = ZerosLike(c.outs[k])
		}
	}
	gin := c.vjp(dys, want)
	if len(gin) != len(c.inputs) {
		return fmt.Errorf("composite %s returned %d gradients for %d inputs", c.name, len(gin), len(c.inputs))
	}
	for k, in := range c.inputs {
		if !want[k] {
			continue
		}
		d := gin[k]
		if d == nil || !d.shape.Equal(in.shape) || d.dtype != in.dtype {
			return fmt.Errorf("composite %s gave gradient %v for input %v", c.name, d, in)
		}
		if prev := acc[in]; prev != nil {
			acc[in] = accumulate(prev, d)
		} else {
			acc[in] = d
		}
	}
	return nil
}
