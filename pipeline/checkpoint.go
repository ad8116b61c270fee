package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/onnxpb"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// A checkpoint is one standard ONNX file: the eval-mode network with its weights as
// initializers (ONNX Runtime runs it for inference as it is), the training progress in the
// metadata (key cardseg.training, JSON), and the optimizer's moments as the initializers of a
// TrainingInfoProto's initialization graph, ONNX's place for training state.
const (
	metaTraining   = "cardseg.training"
	stateGraphName = "cardseg_training_state"
)

// Progress is the training state besides tensors.
type Progress struct {
	Step           int64   `json:"step"`            // optimizer steps taken
	Epoch          int     `json:"epoch"`           // epochs completed
	BatchInEpoch   int     `json:"batch_in_epoch"`  // batches done in the current epoch (interrupted runs)
	BestIoU        float64 `json:"best_iou"`        // best validation card IoU so far (-1: none)
	BestEpoch      int     `json:"best_epoch"`      // epoch that reached it
	BadEpochs      int     `json:"bad_epochs"`      // epochs since the best (early stopping)
	BatchesTracked int64   `json:"batches_tracked"` // torchvision num_batches_tracked
	// The FP16 step's dynamic loss scale and its run of good steps (0: fp32 or not started).
	LossScale     float32      `json:"loss_scale,omitempty"`
	LossScaleGood float32      `json:"loss_scale_good,omitempty"`
	Config        TrainConfig  `json:"config"`
	LastMetrics   *EpochRecord `json:"last_metrics,omitempty"`
}

// Checkpoint is what a checkpoint file holds.
type Checkpoint struct {
	Progress Progress
	State    *State
}

// SaveCheckpoint writes the checkpoint atomically: a temporary file in the same folder,
// fsync, rename, fsync of the folder. A crash at any instant leaves either the previous file
// or the new one, never a partial file; on error (disk full, say) the previous file is intact.
func SaveCheckpoint(path string, cfg TrainConfig, st *State, p Progress) error {
	p.Config = cfg
	p.Step = st.Step
	p.BatchesTracked = st.Weights.BatchesTracked
	p.LossScale, p.LossScaleGood = st.LossScale, st.LossScaleGood
	g, err := step.Checkpoint(cfg.StepConfig(), st.Weights)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	m, err := g.ToModel()
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	meta, err := json.Marshal(p)
	if err != nil {
		return err
	}
	m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(metaTraining), Value: proto.String(string(meta))})
	m.TrainingInfo = []*onnxpb.TrainingInfoProto{{
		Initialization: &onnxpb.GraphProto{
			Name:        proto.String(stateGraphName),
			DocString:   proto.String("AdamW moments (and the pruning mask, if any) of every trainable parameter, flattened in the architecture's parameter order"),
			Initializer: stateTensors(st),
		},
		Algorithm: &onnxpb.GraphProto{
			Name:      proto.String("cardseg_train_step"),
			DocString: proto.String("cardseg-ort regenerates the train-step graph from the configuration in the cardseg.training metadata"),
		},
	}}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b)
}

func stateTensors(st *State) []*onnxpb.TensorProto {
	ts := []*onnxpb.TensorProto{floatTensor(step.InputMomentM, st.M), floatTensor(step.InputMomentV, st.V)}
	if st.Mask != nil {
		ts = append(ts, floatTensor(step.InputParamMask, st.Mask))
	}
	return ts
}

func floatTensor(name string, d []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(d))
	for i, f := range d {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: []int64{int64(len(d))}, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw}
}

func tensorFloats(t *onnxpb.TensorProto) ([]float32, error) {
	if t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("tensor %s has element type %d, want float32", t.GetName(), t.GetDataType())
	}
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	if t.RawData != nil {
		if int64(len(t.RawData)) != 4*n {
			return nil, fmt.Errorf("tensor %s: %d bytes for %d floats", t.GetName(), len(t.RawData), n)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawData[4*i:]))
		}
		return out, nil
	}
	if int64(len(t.FloatData)) != n {
		return nil, fmt.Errorf("tensor %s: %d floats for shape %v", t.GetName(), len(t.FloatData), t.Dims)
	}
	return append([]float32(nil), t.FloatData...), nil
}

// ErrNotCheckpoint marks an ONNX file without cardseg-ort training state (an exported model,
// say): it can be evaluated but not resumed.
var ErrNotCheckpoint = errors.New("not a cardseg-ort checkpoint")

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint; every tensor is checked
// against the architecture of the stored configuration.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("load checkpoint %s: not an ONNX model (%v)", path, err)
	}
	var p Progress
	found := false
	for _, kv := range m.MetadataProps {
		if kv.GetKey() == metaTraining {
			if err := json.Unmarshal([]byte(kv.GetValue()), &p); err != nil {
				return nil, fmt.Errorf("load checkpoint %s: metadata %s: %w", path, metaTraining, err)
			}
			found = true
		}
	}
	if !found || len(m.TrainingInfo) == 0 || m.TrainingInfo[0].Initialization == nil {
		return nil, fmt.Errorf("load checkpoint %s: %w (no training state)", path, ErrNotCheckpoint)
	}
	if err := p.Config.Validate(); err != nil {
		return nil, fmt.Errorf("load checkpoint %s: stored %w", path, err)
	}
	arch := p.Config.StepConfig().Arch
	w := &model.Weights{Tensors: map[string][]float32{}, BatchesTracked: p.BatchesTracked}
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range m.GetGraph().GetInitializer() {
		inits[t.GetName()] = t
	}
	var problems []string
	for _, spec := range arch.Params() {
		t, ok := inits[spec.Name]
		if !ok {
			problems = append(problems, "missing "+spec.Name)
			continue
		}
		d, err := tensorFloats(t)
		if err != nil || len(d) != spec.Size() {
			problems = append(problems, fmt.Sprintf("%s: %v (want %v)", spec.Name, err, spec.Shape))
			continue
		}
		w.Tensors[spec.Name] = d
	}
	st := &State{Arch: arch, Weights: w, Step: p.Step, LossScale: p.LossScale, LossScaleGood: p.LossScaleGood}
	n := arch.TrainableCount()
	for _, t := range m.TrainingInfo[0].Initialization.GetInitializer() {
		d, err := tensorFloats(t)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		switch t.GetName() {
		case step.InputMomentM:
			st.M = d
		case step.InputMomentV:
			st.V = d
		case step.InputParamMask:
			st.Mask = d
		}
	}
	if p.Config.Masked && len(st.Mask) != n {
		problems = append(problems, fmt.Sprintf("masked training needs %d mask values, the checkpoint has %d", n, len(st.Mask)))
	}
	if len(st.M) != n || len(st.V) != n {
		problems = append(problems, fmt.Sprintf("optimizer moments have %d and %d values, want %d", len(st.M), len(st.V), n))
	}
	if len(problems) > 0 {
		if len(problems) > 6 {
			problems = append(problems[:6], fmt.Sprintf("... %d more", len(problems)-6))
		}
		return nil, fmt.Errorf("load checkpoint %s: %s", path, strings.Join(problems, "; "))
	}
	return &Checkpoint{Progress: p, State: st}, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same folder (fsync,
// rename, fsync of the folder). On any error the temporary file is removed and path keeps its
// previous content.
func WriteFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(name)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(name, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// RemoveStaleTemps deletes temporary files a killed run left in dir.
func RemoveStaleTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
