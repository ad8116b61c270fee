package prune

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/graphs/model"
)

// ChannelChange is one channel group's width before and after structured pruning.
type ChannelChange struct {
	Layer  string `json:"layer"` // backbone.14, classifier.cbr, ...
	Kind   string `json:"kind"`  // expansion, squeeze, last_conv, inter
	Before int    `json:"before"`
	After  int    `json:"after"`
	// Kept says why a group was not pruned ("" when it was a candidate).
	Kept string `json:"kept,omitempty"`
}

// Channel group kinds.
const (
	kindExpansion = "expansion"
	kindSqueeze   = "squeeze"
	kindLastConv  = "last_conv"
	kindInter     = "inter"
)

// cut is one tensor axis indexed by a group's channels.
type cut struct {
	name string
	axis int
}

// channelGroup is a set of channels that exist together: removing channel c removes index c
// along every cut, and the network stays consistent.
type channelGroup struct {
	layer, kind string
	width       int
	avoid       int // a width the group must not take (0: none)
	cuts        []cut
	score       func(w *model.Weights) []float64 // one importance per channel
	setWidth    func(a *model.Arch, n int)
	keep        []int // chosen channels, ascending
}

// blockLayers are an inverted-residual block's layer prefixes, numbered as model.Forward
// numbers them (the expansion conv only exists when Expanded != In).
type blockLayers struct{ expand, depthwise, se, project string }

func layersOf(index int, b model.Block) blockLayers {
	var l blockLayers
	j := 0
	next := func() string { s := fmt.Sprintf("backbone.%d.block.%d", index, j); j++; return s }
	if b.Expanded != b.In {
		l.expand = next()
	}
	l.depthwise = next()
	if b.SE {
		l.se = next()
	}
	l.project = next()
	return l
}

// bnCuts are a batch norm's four tensors along their only axis.
func bnCuts(prefix string) []cut {
	return []cut{{prefix + ".weight", 0}, {prefix + ".bias", 0}, {prefix + ".running_mean", 0}, {prefix + ".running_var", 0}}
}

// scorer builds channel importances from the current weights.
type scorer struct {
	crit   Criterion
	shapes map[string]graphs.Shape
}

// filterL1 is the L1 norm of each output filter (axis 0) of a weight.
func (s *scorer) filterL1(w *model.Weights, name string) []float64 {
	d := w.Tensors[name]
	n := int(s.shapes[name][0])
	per := len(d) / n
	out := make([]float64, n)
	for c := range n {
		for _, v := range d[c*per : (c+1)*per] {
			out[c] += math.Abs(float64(v))
		}
	}
	return out
}

// convBN scores the channels a conv + batch norm produce: the conv's filter L1 norms, or the
// batch norm's |γ|.
func (s *scorer) convBN(conv, bn string) func(w *model.Weights) []float64 {
	return func(w *model.Weights) []float64 {
		if s.crit == L1 {
			return s.filterL1(w, conv)
		}
		gamma := w.Tensors[bn+".weight"]
		out := make([]float64, len(gamma))
		for c, g := range gamma {
			out[c] = math.Abs(float64(g))
		}
		return out
	}
}

// channelGroups lists the prunable channel groups of a in two phases: the second phase's
// scores read tensors the first phase slices (the squeeze-and-excite fc1 reads the expansion
// channels; classifier.cbr reads the last conv's channels), so it is scored after them.
func channelGroups(a model.Arch, opts Options, sc *scorer) (first, second []*channelGroup, kept []ChannelChange) {
	for i, b := range a.Blocks {
		idx := i + 1
		l := layersOf(idx, b)
		layer := fmt.Sprintf("backbone.%d", idx)
		if l.expand == "" {
			kept = append(kept, ChannelChange{Layer: layer, Kind: kindExpansion, Before: b.Expanded, After: b.Expanded,
				Kept: "no expansion conv: its depthwise channels are the previous block's output (a residual width)"})
		} else {
			g := &channelGroup{layer: layer, kind: kindExpansion, width: b.Expanded, avoid: b.In,
				score:    sc.convBN(l.depthwise+".0.weight", l.depthwise+".1"),
				setWidth: func(a *model.Arch, n int) { a.Blocks[i].Expanded = n }}
			g.cuts = append(g.cuts, cut{l.expand + ".0.weight", 0})
			g.cuts = append(g.cuts, bnCuts(l.expand+".1")...)
			g.cuts = append(g.cuts, cut{l.depthwise + ".0.weight", 0}) // [E,1,k,k]: channels are the groups
			g.cuts = append(g.cuts, bnCuts(l.depthwise+".1")...)
			if b.SE {
				g.cuts = append(g.cuts, cut{l.se + ".fc1.weight", 1}, cut{l.se + ".fc2.weight", 0}, cut{l.se + ".fc2.bias", 0})
			}
			g.cuts = append(g.cuts, cut{l.project + ".0.weight", 1})
			first = append(first, g)
		}
		if b.SE && opts.Squeeze {
			// No batch norm in squeeze-and-excite: both criteria rank by fc1's filter L1 norm.
			fc1 := l.se + ".fc1.weight"
			second = append(second, &channelGroup{layer: l.se, kind: kindSqueeze, width: b.Squeeze,
				cuts:     []cut{{fc1, 0}, {l.se + ".fc1.bias", 0}, {l.se + ".fc2.weight", 1}},
				score:    func(w *model.Weights) []float64 { return sc.filterL1(w, fc1) },
				setWidth: func(a *model.Arch, n int) { a.Blocks[i].Squeeze = n }})
		}
	}
	if opts.Head {
		last := fmt.Sprintf("backbone.%d", len(a.Blocks)+1)
		g := &channelGroup{layer: last, kind: kindLastConv, width: a.LastConv,
			score:    sc.convBN(last+".0.weight", last+".1"),
			setWidth: func(a *model.Arch, n int) { a.LastConv = n }}
		g.cuts = append(g.cuts, cut{last + ".0.weight", 0})
		g.cuts = append(g.cuts, bnCuts(last+".1")...)
		g.cuts = append(g.cuts, cut{"classifier.cbr.0.weight", 1}, cut{"classifier.scale.1.weight", 1})
		first = append(first, g)
		h := &channelGroup{layer: "classifier.cbr", kind: kindInter, width: a.Inter,
			score:    sc.convBN("classifier.cbr.0.weight", "classifier.cbr.1"),
			setWidth: func(a *model.Arch, n int) { a.Inter = n }}
		h.cuts = append(h.cuts, cut{"classifier.cbr.0.weight", 0})
		h.cuts = append(h.cuts, bnCuts("classifier.cbr.1")...)
		h.cuts = append(h.cuts, cut{"classifier.scale.1.weight", 0}, cut{"classifier.high_classifier.weight", 1})
		second = append(second, h)
	}
	return first, second, kept
}

// pruneChannels removes the least important channels of every group and slices the weights
// (and mask) to the smaller architecture.
func pruneChannels(a model.Arch, w *model.Weights, flatMask []float32, opts Options) (*Result, error) {
	sc := &scorer{crit: opts.Criterion, shapes: map[string]graphs.Shape{}}
	for _, p := range a.Params() {
		sc.shapes[p.Name] = p.Shape
	}
	first, second, kept := channelGroups(a, opts, sc)
	out := w.Clone()
	mask := splitMask(a, flatMask)
	newArch := a
	newArch.Blocks = slices.Clone(a.Blocks)
	var changes []ChannelChange
	for _, phase := range [][]*channelGroup{first, second} {
		if len(phase) == 0 {
			continue
		}
		for _, g := range phase {
			for _, c := range g.cuts {
				if _, ok := sc.shapes[c.name]; !ok {
					return nil, fmt.Errorf("prune: %s %s cuts %s, which the network lacks", g.layer, g.kind, c.name)
				}
			}
		}
		choose(phase, out, opts)
		for _, g := range phase {
			changes = append(changes, ChannelChange{Layer: g.layer, Kind: g.kind, Before: g.width, After: len(g.keep)})
			if len(g.keep) == g.width {
				continue
			}
			for _, c := range g.cuts {
				shape := sc.shapes[c.name]
				if int(shape[c.axis]) != g.width {
					return nil, fmt.Errorf("prune: %s has %d channels on axis %d, group %s %s has %d", c.name, shape[c.axis], c.axis, g.layer, g.kind, g.width)
				}
				var newShape graphs.Shape
				out.Tensors[c.name], newShape = sliceAxis(out.Tensors[c.name], shape, c.axis, g.keep)
				if m, ok := mask[c.name]; ok {
					mask[c.name], _ = sliceAxis(m, shape, c.axis, g.keep)
				}
				sc.shapes[c.name] = newShape
			}
			g.setWidth(&newArch, len(g.keep))
		}
	}
	if err := newArch.Validate(); err != nil {
		return nil, fmt.Errorf("prune: the pruned architecture is inconsistent: %w", err)
	}
	if err := newArch.Check(out); err != nil {
		return nil, fmt.Errorf("prune: the sliced weights do not fit the pruned architecture: %w", err)
	}
	res := &Result{Arch: newArch, Weights: out}
	if mask != nil {
		flat, err := joinMask(newArch, mask)
		if err != nil {
			return nil, err
		}
		res.Mask = flat
	}
	slices.SortStableFunc(kept, func(x, y ChannelChange) int { return cmp.Compare(x.Layer, y.Layer) })
	res.Channels = append(kept, changes...)
	return res, nil
}

// choose sets every group's kept channels. Layerwise: each group keeps its width less Amount.
// Global: channels of the same kind are ranked together on scores divided by their group's
// mean (criteria scale differently from layer to layer), and a group keeps at least a tenth of
// its channels. Either way the count is then rounded to opts.Multiple and kept off the width
// the group must avoid, and the group keeps its highest-scoring channels.
func choose(groups []*channelGroup, w *model.Weights, opts Options) {
	scores := make([][]float64, len(groups))
	counts := make([]int, len(groups))
	for i, g := range groups {
		scores[i] = g.score(w)
		counts[i] = g.width - int(math.Round(opts.Amount*float64(g.width)))
	}
	if opts.Scope == Global {
		var kinds []string
		members := map[string][]int{}
		for i, g := range groups {
			if members[g.kind] == nil {
				kinds = append(kinds, g.kind)
			}
			members[g.kind] = append(members[g.kind], i)
		}
		type entry struct {
			score        float64
			group, index int
		}
		for _, kind := range kinds {
			var all []entry
			total := 0
			for _, i := range members[kind] {
				mean := 0.0
				for _, s := range scores[i] {
					mean += s
				}
				mean /= float64(len(scores[i]))
				if !(mean > 0) || math.IsInf(mean, 0) {
					mean = 1
				}
				for c, s := range scores[i] {
					all = append(all, entry{s / mean, i, c})
				}
				total += groups[i].width
				counts[i] = groups[i].width
			}
			slices.SortFunc(all, func(x, y entry) int {
				return cmp.Or(cmp.Compare(x.score, y.score), cmp.Compare(x.group, y.group), cmp.Compare(x.index, y.index))
			})
			k := int(math.Round(opts.Amount * float64(total)))
			for _, e := range all {
				if k == 0 {
					break
				}
				if floor := (groups[e.group].width + 9) / 10; counts[e.group] > floor {
					counts[e.group]--
					k--
				}
			}
		}
	}
	for i, g := range groups {
		g.keep = strongest(scores[i], roundWidth(counts[i], g.width, g.avoid, opts.Multiple))
	}
}

// roundWidth rounds a channel count to the nearest multiple of m (at least m), within
// [1, width], and off avoid (upwards).
func roundWidth(n, width, avoid, m int) int {
	if m > 1 {
		n = max(int(math.Round(float64(n)/float64(m)))*m, m)
	}
	n = min(max(n, 1), width)
	if n == avoid && n < width {
		n = min(n+m, width)
	}
	return n
}

// strongest returns the indices of the n highest scores in ascending index order; of equal
// scores the later channel is kept, as global ranking removes the earlier one first.
func strongest(scores []float64, n int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return cmp.Or(cmp.Compare(scores[x], scores[y]), cmp.Compare(x, y)) })
	keep := idx[len(idx)-n:]
	slices.Sort(keep)
	return keep
}

// sliceAxis keeps the given indices of one axis of a row-major tensor.
func sliceAxis(d []float32, shape graphs.Shape, axis int, keep []int) ([]float32, graphs.Shape) {
	outer, inner := 1, 1
	for _, s := range shape[:axis] {
		outer *= int(s)
	}
	for _, s := range shape[axis+1:] {
		inner *= int(s)
	}
	dim := int(shape[axis])
	out := make([]float32, 0, outer*len(keep)*inner)
	for o := range outer {
		for _, k := range keep {
			start := (o*dim + k) * inner
			out = append(out, d[start:start+inner]...)
		}
	}
	newShape := slices.Clone(shape)
	newShape[axis] = int64(len(keep))
	return out, newShape
}
