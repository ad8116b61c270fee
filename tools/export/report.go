package export

// Report is what an export did and measured; it is written next to the models as export.json
// and is what the package README is generated from.
type Report struct {
	Exporter  string        `json:"exporter"`
	Source    SourceReport  `json:"source"`
	InputSize [2]int        `json:"input_size"` // height, width of the network
	Batch     string        `json:"batch"`      // "1" or "dynamic"
	Opset     int           `json:"opset"`
	Models    []ModelReport `json:"models"`
	Weights   *FileReport   `json:"weights,omitempty"` // the safetensors file
	Samples   SampleReport  `json:"samples"`
	// TestSplit is the labelled split the test-split IoUs come from (nil: none was available).
	TestSplit *TestSplitReport `json:"test_split,omitempty"`
	// Machine is where the latencies were measured (nil when latency was not measured).
	Machine  *MachineReport `json:"machine,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Out      string         `json:"out"`
	Package  bool           `json:"package"`
}

// SourceReport describes the checkpoint or weights file exported.
type SourceReport struct {
	Path       string  `json:"path"`
	Kind       string  `json:"kind"` // checkpoint or safetensors
	Step       int64   `json:"step,omitempty"`
	Epoch      int     `json:"epoch,omitempty"`
	BestIoU    float64 `json:"best_iou,omitempty"`
	ValIoU     float64 `json:"val_iou,omitempty"` // the checkpoint's last validation card IoU
	WidthMult  float64 `json:"width_mult"`
	Parameters int     `json:"parameters"`
}

// FileReport is one written file.
type FileReport struct {
	File   string `json:"file"` // name inside the output folder
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ModelReport is one exported ONNX model and its checks.
type ModelReport struct {
	FileReport
	Precision  string   `json:"precision"`  // fp32, fp16 or int8
	Preprocess bool     `json:"preprocess"` // the uint8 RGB variant
	Inputs     []string `json:"inputs"`
	Outputs    []string `json:"outputs"`
	Parity     Parity   `json:"parity"`
	// TestIoU is the card IoU on the test split (pooled, at mask resolution, as
	// `cardseg-ort eval` computes it); TestIoUDrop is FP32's minus this one's.
	TestIoU      *float64      `json:"test_iou,omitempty"`
	TestIoUDrop  *float64      `json:"test_iou_drop,omitempty"`
	Latency      *Latency      `json:"latency,omitempty"`
	Quantization *QuantReport  `json:"quantization,omitempty"`
	FP16         *FP16Stats    `json:"fp16,omitempty"`
	Checks       []CheckResult `json:"checks"`
}

// Parity compares a model's output with the checkpoint's on the sample images.
type Parity struct {
	Reference string `json:"reference"` // what it is compared with
	Images    int    `json:"images"`
	// MaxAbsDiff is the largest |logit − reference logit| (float networks; for the RGB
	// variants the largest card-probability difference from the same network fed the same
	// pixels through Go preprocessing).
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// MaxRelDiff is MaxAbsDiff over the reference's largest |logit|.
	MaxRelDiff float64 `json:"max_rel_diff,omitempty"`
	// MaskIoU is the card IoU of this model's mask with the reference (FP32 checkpoint) mask,
	// pooled over the images; MaskAgreement the fraction of pixels with the same label.
	MaskIoU       float64 `json:"mask_iou"`
	MaskAgreement float64 `json:"mask_agreement"`
	// For the RGB variants: the images are fed at their own size and the masks compared there.
	AtInputSize bool `json:"at_input_size,omitempty"`
}

// CheckResult is one pass/fail verification.
type CheckResult struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Passed bool    `json:"passed"`
	Detail string  `json:"detail"`
}

// Latency is the time of one inference at batch 1, over Runs runs after warm-up runs.
type Latency struct {
	MedianMS float64 `json:"median_ms"`
	P90MS    float64 `json:"p90_ms"`
	MinMS    float64 `json:"min_ms"`
	Runs     int     `json:"runs"`
	Input    string  `json:"input"` // the input shape timed
}

// QuantReport describes an INT8 model's quantisation.
type QuantReport struct {
	Format         string         `json:"format"`
	Activations    string         `json:"activations"`
	Weights        string         `json:"weights"`
	WeightBits     int            `json:"weight_bits"`
	Method         string         `json:"calibration_method"`
	Percentile     float64        `json:"percentile,omitempty"`
	Images         int            `json:"calibration_images"`
	ImageDir       string         `json:"calibration_dir"`
	Tensors        int            `json:"quantized_tensors"`
	Nodes          map[string]int `json:"quantized_nodes"`
	ClampedBiases  int            `json:"clamped_biases,omitempty"`
	FloatOperators []string       `json:"float_operators"` // operator types left in float
}

// SampleReport says which images the parity checks ran on.
type SampleReport struct {
	Dir       string   `json:"dir,omitempty"`
	Count     int      `json:"count"`
	Images    []string `json:"images,omitempty"`
	Synthetic bool     `json:"synthetic"` // no images: random inputs
}

// TestSplitReport is the labelled data of the test-split IoUs.
type TestSplitReport struct {
	Dir    string `json:"dir"`
	Split  string `json:"split"`
	Images int    `json:"images"`
}

// MachineReport is where latency was measured.
type MachineReport struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	OS         string `json:"os"`
	ORTVersion string `json:"ort_version"`
	Provider   string `json:"provider"`
	Threads    int    `json:"threads"` // 0: ORT's default
}

// Model returns the report of the model of the given precision and variant, or nil.
func (r *Report) Model(precision string, preprocess bool) *ModelReport {
	for i := range r.Models {
		if r.Models[i].Precision == precision && r.Models[i].Preprocess == preprocess {
			return &r.Models[i]
		}
	}
	return nil
}

// Failed lists the checks that did not pass.
func (r *Report) Failed() []CheckResult {
	var out []CheckResult
	for _, m := range r.Models {
		for _, c := range m.Checks {
			if !c.Passed {
				out = append(out, c)
			}
		}
	}
	return out
}
