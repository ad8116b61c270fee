package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/safetensors"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/pipeline"
)

// Metadata keys export writes besides graphs/step's (cardseg.input, cardseg.normalization, ...).
const (
	MetaTrainingConfig = "cardseg.training_config"    // JSON of pipeline.TrainConfig
	MetaValidation     = "cardseg.validation_metrics" // JSON of the checkpoint's last epoch record
	MetaCheckpoint     = "cardseg.checkpoint"         // JSON: step, epoch, best IoU and epoch
	MetaPrecision      = "cardseg.precision"          // fp32, fp16 or int8
	MetaBatch          = "cardseg.batch"              // "1" or "dynamic"
	MetaQuantization   = "cardseg.quantization"       // JSON of QuantReport (int8 only)
	MetaPreprocessing  = "cardseg.preprocessing"      // "embedded" for the uint8 RGB variants
	MetaOutputs        = "cardseg.outputs"            // JSON: every output's meaning (RGB variants)
	MetaExporter       = "cardseg.exporter"           // tool and version
)

// Source is what a model is exported from: the training configuration (input size,
// architecture) and the network's weights under torchvision's names, unfolded.
type Source struct {
	Path    string
	Kind    string // "checkpoint" or "safetensors"
	Config  pipeline.TrainConfig
	Weights *model.Weights
	// Progress is the checkpoint's training progress; nil for a safetensors file.
	Progress *pipeline.Progress
	// checkpointModel is the checkpoint file's ONNX bytes: the reference the FP32 export is
	// verified against. For safetensors the reference is built from the weights.
	checkpointModel []byte
}

// StepConfig is the graphs' view of the source's configuration.
func (s *Source) StepConfig() step.Config { return s.Config.StepConfig() }

// LoadSource reads a training checkpoint (.onnx written by train) or a safetensors file of
// torchvision-named weights. A safetensors file written by export carries its configuration
// in metadata; one from PyTorch needs height and width (the input size the weights were
// trained for) and takes MobileNetV3's width multiplier 1.
func LoadSource(path string, height, width int) (*Source, error) {
	if strings.HasSuffix(strings.ToLower(path), ".safetensors") {
		return loadSafetensors(path, height, width)
	}
	ck, err := pipeline.LoadCheckpoint(path)
	if err != nil {
		if errors.Is(err, pipeline.ErrNotCheckpoint) {
			return nil, fmt.Errorf("%s is an ONNX model without training state (an exported model?); export reads a training checkpoint (RUN/checkpoints/best.onnx) or a .safetensors weights file: %w", path, err)
		}
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	if height > 0 || width > 0 {
		if height != ck.Progress.Config.Height || width != ck.Progress.Config.Width {
			return nil, fmt.Errorf("checkpoint %s was trained at %dx%d; its input size cannot be changed to %dx%d at export", path,
				ck.Progress.Config.Height, ck.Progress.Config.Width, height, width)
		}
	}
	p := ck.Progress
	return &Source{Path: path, Kind: "checkpoint", Config: p.Config, Weights: ck.State.Weights, Progress: &p, checkpointModel: b}, nil
}

func loadSafetensors(path string, height, width int) (*Source, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	cfg := pipeline.DefaultTrainConfig()
	cfg.Height, cfg.Width = 0, 0
	if s, ok := f.Metadata[MetaTrainingConfig]; ok {
		if err := json.Unmarshal([]byte(s), &cfg); err != nil {
			return nil, fmt.Errorf("load %s: metadata %s: %w", path, MetaTrainingConfig, err)
		}
	}
	if height > 0 || width > 0 {
		cfg.Height, cfg.Width = height, width
	}
	if cfg.Height == 0 || cfg.Width == 0 {
		return nil, fmt.Errorf("load %s: the file does not record the input size it was trained for (no %s metadata); give it with --size HxW", path, MetaTrainingConfig)
	}
	if cfg.Height < 32 || cfg.Width < 32 || cfg.Height%16 != 0 || cfg.Width%16 != 0 {
		return nil, fmt.Errorf("load %s: input size %dx%d: height and width must be multiples of 16, at least 32", path, cfg.Height, cfg.Width)
	}
	if !(cfg.WidthMult > 0) {
		return nil, fmt.Errorf("load %s: width multiplier %g in its metadata", path, cfg.WidthMult)
	}
	arch := cfg.StepConfig().Arch
	w, err := arch.FromSafetensors(f, path)
	if err != nil {
		return nil, err
	}
	return &Source{Path: path, Kind: "safetensors", Config: cfg, Weights: w}, nil
}

// referenceModel is the unfolded eval-mode network the exports are compared with: the
// checkpoint file itself, or for safetensors the checkpoint graph built from the weights.
func (s *Source) referenceModel() ([]byte, error) {
	if s.checkpointModel != nil {
		return s.checkpointModel, nil
	}
	g, err := step.Checkpoint(s.StepConfig(), s.Weights)
	if err != nil {
		return nil, fmt.Errorf("reference model for %s: %w", s.Path, err)
	}
	return g.Marshal()
}

// sourceMetadata is what every exported model (and the safetensors file) records about where
// it came from.
func (s *Source) sourceMetadata() map[string]string {
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	md := map[string]string{MetaTrainingConfig: j(s.Config)}
	if p := s.Progress; p != nil {
		md[MetaCheckpoint] = j(map[string]any{"step": p.Step, "epoch": p.Epoch, "best_iou": p.BestIoU, "best_epoch": p.BestEpoch})
		if p.LastMetrics != nil {
			md[MetaValidation] = j(p.LastMetrics)
		}
	}
	return md
}
