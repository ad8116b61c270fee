package export

import (
	"math"
	"strings"
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

func TestInt8Params(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     actRange
		scale float32
		zero  int8
	}{
		{"non-negative (after ReLU)", actRange{0, 2.55}, 0.01, -128},
		{"symmetric", actRange{-1.275, 1.275}, 0.01, 0}, // -128 + 127.5 rounds half to even, as ONNX and numpy
		{"positive only is widened to 0", actRange{1, 2.55}, 0.01, -128},
		{"negative only is widened to 0", actRange{-2.55, -1}, 0.01, 127},
		{"constant zero", actRange{0, 0}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, z := int8Params(tc.r)
			if math.Abs(float64(s-tc.scale)) > 1e-7 || z != tc.zero {
				t.Fatalf("int8Params(%v) = %v, %d; want %v, %d", tc.r, s, z, tc.scale, tc.zero)
			}
		})
	}
}

func TestPerChannelInt8(t *testing.T) {
	// Two output channels of two weights each, and a channel of zeros.
	w := []float32{1, -0.6, 0.25, 0.126, 0, 0}
	for _, tc := range []struct {
		bits   int
		q      []int8
		scales []float32
	}{
		{8, []int8{127, -76, 127, 64, 0, 0}, []float32{1.0 / 127, 0.25 / 127, 1}},
		{7, []int8{63, -38, 63, 32, 0, 0}, []float32{1.0 / 63, 0.25 / 63, 1}},
	} {
		t.Run(string(rune('0'+tc.bits))+" bits", func(t *testing.T) {
			q, s := perChannelInt8(w, 3, tc.bits)
			for i := range q {
				if q[i] != tc.q[i] {
					t.Fatalf("q = %v, want %v", q, tc.q)
				}
			}
			for i := range s {
				if math.Abs(float64(s[i]-tc.scales[i])) > 1e-9 {
					t.Fatalf("scales = %v, want %v", s, tc.scales)
				}
			}
			// Dequantised weights are within half a step of the originals.
			for i, v := range w {
				if d := math.Abs(float64(q[i])*float64(s[i/2]) - float64(v)); d > float64(s[i/2])/2+1e-9 {
					t.Fatalf("weight %d: %v dequantises %v away", i, v, d)
				}
			}
		})
	}
}

func TestPercentileRange(t *testing.T) {
	// 1000 values in bins spread over [-10, 10] (20 bins of width 1): 990 in [-1, 1), 5 far out
	// at each end. Keeping 99% drops the outliers.
	h := make([]int64, 20)
	h[0], h[19] = 5, 5
	h[9], h[10] = 495, 495
	r := percentileRange(h, -10, 10, 99)
	if r.Min != -1 || r.Max != 1 {
		t.Fatalf("99%% range %v, want [-1, 1]", r)
	}
	if r := percentileRange(h, -10, 10, 100); r.Min != -10 || r.Max != 10 {
		t.Fatalf("100%% range %v, want the full [-10, 10]", r)
	}
	// A non-negative tensor keeps 0 as its lower end and cuts one side only.
	hp := make([]int64, 10)
	hp[0], hp[9] = 990, 10
	if r := percentileRange(hp, 0, 10, 99); r.Min != 0 || r.Max != 1 {
		t.Fatalf("non-negative 99%% range %v, want [0, 1]", r)
	}
}

// TestPlanQDQ checks what the INT8 export quantises in the real network: every Conv's input,
// weight and output (after a following ReLU), Add and Mul inputs and outputs, never the logits.
func TestPlanQDQ(t *testing.T) {
	cfg := smokeConfig("x")
	e := &exporter{src: &Source{Config: cfg, Weights: randomWeights(cfg, 1)}}
	m, _, err := e.buildFP32()
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph
	p := planQDQ(g)
	convs, adds, muls := 0, 0, 0
	for _, n := range g.Node {
		switch n.GetOpType() {
		case "Conv":
			convs++
		case "Add":
			adds++
		case "Mul":
			muls++
		}
	}
	if p.nodes["Conv"] != convs || len(p.convs) != convs || p.nodes["Add"] != adds || p.nodes["Mul"] != muls {
		t.Fatalf("plan quantises %v (%d conv weights); the graph has %d Conv, %d Add, %d Mul", p.nodes, len(p.convs), convs, adds, muls)
	}
	planned := map[string]bool{}
	for _, x := range p.tensors {
		planned[x] = true
	}
	if planned[step.OutLogits] || !planned[step.InputImage] {
		t.Fatalf("logits planned %v, image planned %v", planned[step.OutLogits], planned[step.InputImage])
	}
	uses := consumers(g)
	for _, n := range g.Node {
		if n.GetOpType() != "Conv" {
			continue
		}
		if !planned[n.Input[0]] {
			t.Errorf("%s: input %s not quantised", n.GetName(), n.Input[0])
		}
		out := n.Output[0]
		if c := uses[out]; len(c) == 1 && c[0].GetOpType() == "Relu" {
			if planned[out] || !planned[c[0].Output[0]] {
				t.Errorf("%s: a Conv followed by ReLU is quantised after the ReLU", n.GetName())
			}
		} else if !planned[out] {
			t.Errorf("%s: output %s not quantised", n.GetName(), out)
		}
	}
	// Applying the plan leaves no float Conv weight and reads every quantised tensor through
	// its DequantizeLinear.
	ranges := map[string]actRange{}
	for _, x := range p.tensors {
		ranges[x] = actRange{-1, 1}
	}
	if _, err := applyQDQ(g, p, ranges, 7); err != nil {
		t.Fatal(err)
	}
	inits := initializers(g)
	for _, n := range g.Node {
		if n.GetOpType() == "Conv" && !strings.HasSuffix(n.Input[1], "_dequantized") {
			t.Errorf("%s reads weight %s directly", n.GetName(), n.Input[1])
		}
		if n.GetOpType() == "QuantizeLinear" {
			continue
		}
		for _, in := range n.Input {
			if planned[in] {
				t.Errorf("%s reads %s, not its dequantised value", n.GetName(), in)
			}
		}
	}
	for name, tp := range inits {
		if strings.HasSuffix(name, ".weight_quantized") {
			for _, b := range tp.RawData {
				if v := int8(b); v > 63 || v < -63 {
					t.Fatalf("%s holds %d, beyond 7 bits", name, v)
				}
			}
		}
	}
}
