package export

import (
	"fmt"
	"math"
	"sort"

	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
)

// Static INT8 quantisation in QDQ form: the FP32 graph with QuantizeLinear/DequantizeLinear
// pairs around the quantised operators, the layout ONNX Runtime's quantize_static writes with
// QuantFormat.QDQ and per_channel=True, and the one ORT Mobile's NNAPI, XNNPACK, CoreML and
// QNN execution providers turn into integer kernels (ORT's CPU provider fuses
// DequantizeLinear → Conv → QuantizeLinear into QLinearConv, likewise Add and Mul).
//
//   - activations: int8, asymmetric, one scale and zero point per tensor, from ranges
//     calibrated on images (minimum/maximum, or a percentile that ignores rare outliers);
//   - Conv weights: int8, symmetric (zero point 0), one scale per output channel, by default
//     with 7 bits of range (±63, ORT's reduce_range): x86 CPUs without VNNI multiply uint8
//     activations by int8 weights with VPMADDUBSW, whose int16 pair sums saturate beyond
//     2·255·63, and MobileNetV3's stem (raw image in) and signed residual streams hit that
//     limit with full-range weights: card-mask IoU with the FP32 model fell to 0.75 on test
//     models where 7-bit weights keep 0.98. ARM's dot-product instructions and VNNI do not
//     saturate; 8 bits (Int8WeightBits) buy a little precision there;
//   - Conv biases: int32 with scale = input scale × weight scale of the channel, zero point 0;
//   - quantised operators: Conv (every one), Add and Mul between activations. The bilinear
//     resizes (MatMul with constant interpolation matrices) and the activation functions run in
//     float on dequantised values; the network's output (logits) stays float.
//
// A Conv followed only by a ReLU is quantised after the ReLU (its range starts at 0, so ORT
// drops the ReLU into the integer Conv), as ORT's quantiser does.

// quantizedOps are the operators whose inputs and outputs get QDQ pairs.
var quantizedOps = map[string]bool{"Conv": true, "Add": true, "Mul": true}

// qdqPlan says what to quantise.
type qdqPlan struct {
	tensors []string            // activation tensors to quantise, in graph order
	convs   []*onnxpb.NodeProto // Convs whose weight (and bias) become int8 (int32)
	nodes   map[string]int      // quantised operators by type
}

// planQDQ picks the activation tensors and Conv weights of a float model to quantise.
func planQDQ(g *onnxpb.GraphProto) qdqPlan {
	inits := initializers(g)
	uses := consumers(g)
	p := qdqPlan{nodes: map[string]int{}}
	seen := map[string]bool{}
	add := func(t string) {
		if t == "" || seen[t] || inits[t] != nil || isGraphOutput(g, t) {
			return
		}
		seen[t] = true
		p.tensors = append(p.tensors, t)
	}
	quantized := map[*onnxpb.NodeProto]bool{}
	for _, n := range g.Node {
		op := n.GetOpType()
		if !quantizedOps[op] {
			continue
		}
		switch op {
		case "Conv":
			if len(n.Input) < 2 || inits[n.Input[1]] == nil || inits[n.Input[1]].GetDataType() != elemFloat ||
				(len(n.Input) > 2 && n.Input[2] != "" && inits[n.Input[2]] == nil) {
				continue
			}
		default:
			constant := false
			for _, in := range n.Input {
				if inits[in] != nil {
					constant = true
				}
			}
			if constant {
				continue
			}
		}
		quantized[n] = true
	}
	for _, n := range g.Node {
		if !quantized[n] {
			continue
		}
		op := n.GetOpType()
		if op == "Conv" {
			add(n.Input[0])
			p.convs = append(p.convs, n)
		} else {
			for _, in := range n.Input {
				add(in)
			}
		}
		p.nodes[op]++
		out := n.Output[0]
		if c := uses[out]; len(c) == 1 && c[0].GetOpType() == "Relu" && !isGraphOutput(g, out) {
			out = c[0].Output[0]
		}
		add(out)
	}
	// Graph order: a tensor produced later is listed later (inputs first).
	order := map[string]int{}
	for _, in := range g.Input {
		order[in.GetName()] = -1
	}
	for i, n := range g.Node {
		for _, o := range n.Output {
			order[o] = i
		}
	}
	sort.SliceStable(p.tensors, func(a, b int) bool { return order[p.tensors[a]] < order[p.tensors[b]] })
	return p
}

// actRange is a calibrated activation range.
type actRange struct{ Min, Max float32 }

// int8Params returns the asymmetric int8 scale and zero point of a range, widened to contain
// 0 so that zero (padding, ReLU) is exact.
func int8Params(r actRange) (scale float32, zero int8) {
	lo := math.Min(float64(r.Min), 0)
	hi := math.Max(float64(r.Max), 0)
	if hi-lo < 1e-12 {
		return 1, 0
	}
	s := (hi - lo) / 255
	z := math.RoundToEven(-128 - lo/s)
	z = math.Max(-128, math.Min(127, z))
	return float32(s), int8(z)
}

// perChannelInt8 quantises a weight [Cout, ...] symmetrically per output channel with bits
// (7 or 8) of precision: scale = max|w|/qmax, q = round(w/scale), qmax = 63 or 127. A channel
// of zeros gets scale 1.
func perChannelInt8(w []float32, cout, bits int) ([]int8, []float32) {
	qmax := float64(int(1)<<(bits-1) - 1)
	q := make([]int8, len(w))
	scales := make([]float32, cout)
	per := len(w) / cout
	for c := 0; c < cout; c++ {
		row := w[c*per : (c+1)*per]
		var m float64
		for _, v := range row {
			m = math.Max(m, math.Abs(float64(v)))
		}
		s := float32(1)
		if m > 0 {
			s = float32(m / qmax)
		}
		scales[c] = s
		for i, v := range row {
			x := math.RoundToEven(float64(v) / float64(s))
			q[c*per+i] = int8(math.Max(-qmax, math.Min(qmax, x)))
		}
	}
	return q, scales
}

// applyQDQ rewrites g with QuantizeLinear/DequantizeLinear pairs after every planned tensor,
// int8 Conv weights and int32 biases. It returns how many biases had to be clamped to int32
// (none for sane weights).
func applyQDQ(g *onnxpb.GraphProto, p qdqPlan, ranges map[string]actRange, weightBits int) (clamped int, err error) {
	inits := initializers(g)
	scaleOf := map[string]float32{}
	var front []*onnxpb.NodeProto // weight dequantisation and the QDQ of graph inputs
	after := map[string][]*onnxpb.NodeProto{}
	isInput := map[string]bool{}
	for _, in := range g.Input {
		isInput[in.GetName()] = true
	}
	for _, t := range p.tensors {
		r, ok := ranges[t]
		if !ok {
			return 0, fmt.Errorf("int8: no calibrated range for %s", t)
		}
		s, z := int8Params(r)
		scaleOf[t] = s
		g.Initializer = append(g.Initializer, floatTensor(t+"_scale", nil, []float32{s}), int8Tensor(t+"_zero_point", nil, []int8{z}))
		uses := consumers(g)[t]
		q := nodeProto("QuantizeLinear", t+"_QuantizeLinear", []string{t, t + "_scale", t + "_zero_point"}, []string{t + "_quantized"})
		dq := nodeProto("DequantizeLinear", t+"_DequantizeLinear", []string{t + "_quantized", t + "_scale", t + "_zero_point"}, []string{t + "_dequantized"})
		for _, n := range uses {
			for i, in := range n.Input {
				if in == t {
					n.Input[i] = t + "_dequantized"
				}
			}
		}
		if isInput[t] {
			front = append(front, q, dq)
		} else {
			after[t] = append(after[t], q, dq)
		}
	}
	drop := map[string]bool{}
	for _, n := range p.convs {
		// The bias is quantised with the input's scale; a Conv whose input stays float keeps a
		// float bias.
		sx, inputQuantized := scaleOf[strip(n.Input[0])]
		wt := inits[n.Input[1]]
		w, err := tensorFloats(wt)
		if err != nil {
			return 0, err
		}
		cout := int(wt.Dims[0])
		q, scales := perChannelInt8(w, cout, weightBits)
		wn := wt.GetName()
		g.Initializer = append(g.Initializer,
			int8Tensor(wn+"_quantized", wt.Dims, q),
			floatTensor(wn+"_scale", []int64{int64(cout)}, scales),
			int8Tensor(wn+"_zero_point", []int64{int64(cout)}, make([]int8, cout)))
		front = append(front, nodeProto("DequantizeLinear", wn+"_DequantizeLinear",
			[]string{wn + "_quantized", wn + "_scale", wn + "_zero_point"}, []string{wn + "_dequantized"}, attrInt("axis", 0)))
		drop[wn] = true
		n.Input[1] = wn + "_dequantized"
		if len(n.Input) > 2 && n.Input[2] != "" && inputQuantized {
			bt := inits[n.Input[2]]
			b, err := tensorFloats(bt)
			if err != nil {
				return 0, err
			}
			bn := bt.GetName()
			bq := make([]int32, len(b))
			bs := make([]float32, len(b))
			for c := range b {
				bs[c] = sx * scales[c]
				v := math.RoundToEven(float64(b[c]) / float64(bs[c]))
				if v > math.MaxInt32 || v < math.MinInt32 {
					clamped++
					v = math.Max(math.MinInt32, math.Min(math.MaxInt32, v))
				}
				bq[c] = int32(v)
			}
			g.Initializer = append(g.Initializer,
				int32Tensor(bn+"_quantized", bt.Dims, bq),
				floatTensor(bn+"_scale", []int64{int64(len(b))}, bs),
				int32Tensor(bn+"_zero_point", []int64{int64(len(b))}, make([]int32, len(b))))
			front = append(front, nodeProto("DequantizeLinear", bn+"_DequantizeLinear",
				[]string{bn + "_quantized", bn + "_scale", bn + "_zero_point"}, []string{bn + "_dequantized"}, attrInt("axis", 0)))
			drop[bn] = true
			n.Input[2] = bn + "_dequantized"
		}
	}
	nodes := append([]*onnxpb.NodeProto{}, front...)
	for _, n := range g.Node {
		nodes = append(nodes, n)
		for _, o := range n.Output {
			nodes = append(nodes, after[o]...)
		}
	}
	g.Node = nodes
	// The float weights are no longer read.
	still := map[string]bool{}
	for _, n := range g.Node {
		for _, in := range n.Input {
			still[in] = true
		}
	}
	kept := g.Initializer[:0]
	for _, t := range g.Initializer {
		if drop[t.GetName()] && !still[t.GetName()] {
			continue
		}
		kept = append(kept, t)
	}
	g.Initializer = kept
	return clamped, nil
}

// strip turns a dequantised tensor's name back into the tensor's.
func strip(name string) string {
	const suffix = "_dequantized"
	if len(name) > len(suffix) && name[len(name)-len(suffix):] == suffix {
		return name[:len(name)-len(suffix)]
	}
	return name
}

// quantize calibrates the FP32 model m on the calibration images and rewrites it in QDQ form.
func (e *exporter) quantize(m *onnxpb.ModelProto, shapes map[string][]int64) (*QuantReport, error) {
	dirs := e.datasetCandidates()
	if e.o.Calib != "" {
		dirs = []string{e.o.Calib}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("export: --int8 needs calibration images: give --calib DIR (a dataset, whose train split is used, or a folder of images)")
	}
	files, from, err := listImages(dirs[0], "train", "val", "test")
	if err != nil {
		return nil, fmt.Errorf("export: int8 calibration: %w", err)
	}
	files = spread(files, e.o.CalibImages)
	if len(files) < e.o.CalibImages {
		e.warn("int8 calibration: %s has %d images, fewer than the %d asked for", from, len(files), e.o.CalibImages)
	}
	e.o.Logf("int8: calibrating on %d images from %s (%s)", len(files), from, e.o.CalibMethod)
	inputs := make([][]float32, 0, len(files))
	for _, f := range files {
		imgs, err := loadImages([]string{f}, e.h, e.w)
		if err != nil {
			return nil, fmt.Errorf("export: int8 calibration: %w", err)
		}
		x := make([]float32, 3*e.h*e.w)
		normalize(x, imgs[0].Resized)
		inputs = append(inputs, x)
	}
	plan := planQDQ(m.Graph)
	c, err := newCalibrator(m, plan.tensors, shapes, e.h, e.w, e.o.Session)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	ranges, err := calibrate(e.ctx, c, inputs, e.o.CalibMethod, e.o.Percentile)
	c.Close()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	clamped, err := applyQDQ(m.Graph, plan, ranges, e.o.Int8WeightBits)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if clamped > 0 {
		e.warn("int8: %d bias values exceeded int32 at their scale and were clamped", clamped)
	}
	q := &QuantReport{
		Format:        "QDQ (QuantizeLinear/DequantizeLinear pairs, which ORT's providers fuse into integer kernels)",
		Activations:   "int8, asymmetric, per tensor",
		Weights:       fmt.Sprintf("int8 holding %d-bit values (±%d), symmetric, per output channel (Conv); int32 biases", e.o.Int8WeightBits, 1<<(e.o.Int8WeightBits-1)-1),
		WeightBits:    e.o.Int8WeightBits,
		Method:        e.o.CalibMethod,
		Images:        len(files),
		ImageDir:      from,
		Tensors:       len(plan.tensors),
		Nodes:         plan.nodes,
		ClampedBiases: clamped,
	}
	if e.o.CalibMethod == CalibPercentile {
		q.Percentile = e.o.Percentile
	}
	floatOps := map[string]bool{}
	for _, n := range m.Graph.Node {
		if op := n.GetOpType(); !quantizedOps[op] && op != "QuantizeLinear" && op != "DequantizeLinear" {
			floatOps[op] = true
		}
	}
	for op := range floatOps {
		q.FloatOperators = append(q.FloatOperators, op)
	}
	sort.Strings(q.FloatOperators)
	return q, nil
}
