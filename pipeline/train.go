package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/cardseg-ort/cardseg-ort/graphs/model"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// EpochRecord is one line of RUN/logs/metrics.jsonl.
type EpochRecord struct {
	Epoch     int        `json:"epoch"` // 1-based
	Step      int64      `json:"step"`
	LR        float64    `json:"lr"` // at the epoch's last step
	TrainLoss float64    `json:"train_loss"`
	TrainCE   float64    `json:"train_ce"`
	TrainDice float64    `json:"train_dice_loss"`
	Val       ValMetrics `json:"val"`
	Best      bool       `json:"best"`
	Seconds   float64    `json:"seconds"`
	ImgPerS   float64    `json:"img_per_s"`
	BNRecalib int        `json:"bn_recalib_batches"`
	Time      string     `json:"time"`
}

// ErrInterrupted is returned when the context was cancelled (Ctrl-C): the current step was
// finished and a checkpoint saved.
var ErrInterrupted = errors.New("training interrupted")

// Run folders.
const (
	CheckpointDir = "checkpoints"
	LogDir        = "logs"
	PlotDir       = "plots"
	BestName      = "best.onnx"
	LastName      = "last.onnx"
)

// TrainResult is what a finished (or stopped) run reports.
type TrainResult struct {
	Best       string // path of the best checkpoint ("" if no validation ran)
	BestIoU    float64
	BestEpoch  int
	Last       string
	Epochs     int
	Steps      int64
	StoppedBy  string // "epochs", "early stopping", "interrupt"
	Final      ValMetrics
	BestVal    ValMetrics
	TrainImgPS float64
}

// Trainer runs a training job in a run folder.
type Trainer struct {
	Cfg     TrainConfig
	RunDir  string
	Log     zerolog.Logger
	Dataset *Dataset
	// Progress receives per-step updates (a terminal bar or periodic lines); may be nil.
	Progress ProgressSink
	// Resume, when set, continues that checkpoint exactly.
	Resume *Checkpoint
	// Init, when set (and Resume is not), starts from these weights (and mask) with fresh
	// optimizer moments: fine-tuning a pruned model, or starting from torchvision weights.
	Init *State
	// Session options (provider, threads).
	Session runtime.SessionOptions
}

// ProgressSink shows training progress.
type ProgressSink interface {
	Step(epoch, epochs, batch, batches int, loss float64, imgPerS float64, eta time.Duration)
	EpochDone()
}

// Train runs epochs until the configured count, early stopping, or ctx's cancellation (then
// it finishes the current step, saves last.onnx and returns ErrInterrupted).
func (t *Trainer) Train(ctx context.Context) (TrainResult, error) {
	cfg := t.Cfg
	var res TrainResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	ckDir, logDir := filepath.Join(t.RunDir, CheckpointDir), filepath.Join(t.RunDir, LogDir)
	for _, d := range []string{ckDir, logDir, filepath.Join(t.RunDir, PlotDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return res, err
		}
	}
	RemoveStaleTemps(ckDir)
	if err := saveJSON(filepath.Join(t.RunDir, "config.json"), cfg); err != nil {
		return res, err
	}
	sc := cfg.StepConfig()

	// State: fresh or resumed.
	var st *State
	prog := Progress{BestIoU: -1}
	if t.Resume != nil {
		st, prog = t.Resume.State, t.Resume.Progress
		t.Log.Info().Int64("step", prog.Step).Int("epoch", prog.Epoch).Int("batch", prog.BatchInEpoch).Float64("best_iou", prog.BestIoU).Msg("resuming")
	} else if t.Init != nil {
		var err error
		st, err = NewState(sc.Arch, t.Init.Weights.Clone())
		if err != nil {
			return res, fmt.Errorf("initial weights: %w", err)
		}
		if t.Init.Mask != nil {
			st.Mask = append([]float32(nil), t.Init.Mask...)
		}
	} else {
		var err error
		st, err = NewState(sc.Arch, model.Init(sc.Arch, cfg.Seed))
		if err != nil {
			return res, err
		}
	}
	if sc.Masked && len(st.Mask) != len(st.M) {
		return res, fmt.Errorf("masked training needs a parameter mask (%d values), have %d", len(st.M), len(st.Mask))
	}

	trainLoader, err := NewLoader(t.Dataset.Train, LoaderConfig{Height: cfg.Height, Width: cfg.Width, BatchSize: cfg.Batch,
		Workers: cfg.Workers, Shuffle: true, DropLast: true, Augment: cfg.AugmentConfig(), Seed: cfg.Seed})
	if err != nil {
		return res, fmt.Errorf("training split: %w", err)
	}
	if trainLoader.Batches() == 0 {
		return res, fmt.Errorf("training split has %d images, fewer than one batch of %d", len(t.Dataset.Train), cfg.Batch)
	}
	steps := trainLoader.Batches()
	if cfg.MaxStepsPerEpoch > 0 && cfg.MaxStepsPerEpoch < steps {
		steps = cfg.MaxStepsPerEpoch
	}
	// Batch-norm re-estimation reads training images without augmentation, in a fixed order.
	recalLoader, err := NewLoader(t.Dataset.Train, LoaderConfig{Height: cfg.Height, Width: cfg.Width, BatchSize: cfg.Batch,
		Workers: cfg.Workers, Shuffle: true, DropLast: true, Seed: cfg.Seed ^ 0x5eed})
	if err != nil {
		return res, err
	}
	var valLoader *Loader
	if len(t.Dataset.Test) > 0 {
		valLoader, err = NewLoader(t.Dataset.Test, LoaderConfig{Height: cfg.Height, Width: cfg.Width, BatchSize: cfg.Batch, Workers: cfg.Workers})
		if err != nil {
			return res, fmt.Errorf("test split: %w", err)
		}
	} else {
		t.Log.Warn().Msg("the dataset has no test split: no validation, no best checkpoint, no early stopping")
	}

	t.Log.Info().Str("device", cfg.Device).Int("train_images", len(t.Dataset.Train)).Int("test_images", len(t.Dataset.Test)).
		Int("steps_per_epoch", steps).Int("epochs", cfg.Epochs).Str("size", fmt.Sprintf("%dx%d", cfg.Height, cfg.Width)).Msg("building graphs")
	ts, err := t.openStepper(cfg, sc, st)
	if err != nil {
		return res, err
	}
	defer ts.Close()
	var val *Validator
	var recal *BNRecalibrator
	if valLoader != nil {
		if val, err = NewValidator(sc, t.Session); err != nil {
			return res, err
		}
		defer val.Close()
	}
	if cfg.BNRecalibBatches > 0 {
		if recal, err = NewBNRecalibrator(sc, t.Session); err != nil {
			return res, err
		}
		defer recal.Close()
	}

	metricsPath := filepath.Join(logDir, "metrics.jsonl")
	var history []EpochRecord
	if t.Resume != nil {
		history, _ = ReadMetricsLog(metricsPath)
		if len(history) > prog.Epoch { // lines written after the checkpoint belong to a lost future
			history = history[:prog.Epoch]
		}
	}
	if err := writeMetricsLog(metricsPath, history); err != nil {
		return res, err
	}
	metricsFile, err := os.OpenFile(metricsPath, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return res, err
	}
	defer metricsFile.Close()

	lastPath, bestPath := filepath.Join(ckDir, LastName), filepath.Join(ckDir, BestName)
	res.Last = lastPath
	if prog.BestIoU >= 0 {
		res.Best, res.BestIoU, res.BestEpoch = bestPath, prog.BestIoU, prog.BestEpoch
	}
	start := time.Now()
	var imagesSeen int64
	stopBy := "epochs"
	for epoch := prog.Epoch; epoch < cfg.Epochs; epoch++ {
		epStart := time.Now()
		ep := trainLoader.Epoch(context.WithoutCancel(ctx), epoch)
		var lossSum, ceSum, diceSum float64
		var lastLR float64
		done := 0
		skip := prog.BatchInEpoch
		interrupted := false
		// A device-resident step takes the following batch while it runs (its upload overlaps
		// the step), so the loader is read one batch ahead; the loader reuses a batch's memory
		// at the next Next, which Run has finished copying by then.
		dev, ahead := ts.(*DeviceTrainSession)
		for b := 0; b < steps; b++ {
			if !(ahead && b > skip) && !ep.Next() { // ahead: batch b was fetched during step b-1
				ep.Close()
				return res, fmt.Errorf("epoch %d: loader stopped: %w", epoch+1, ep.Err())
			}
			if b < skip { // resumed mid-epoch: these batches were trained before the interrupt
				continue
			}
			batch := ep.Batch()
			lr := cfg.LearningRate(st.Step, steps)
			var r StepResult
			var err error
			if ahead {
				if b == skip {
					err = dev.Load(batch.Images, batch.Targets)
				}
				var next Fill
				if err == nil && b+1 < steps {
					if !ep.Next() {
						ep.Close()
						return res, fmt.Errorf("epoch %d: loader stopped: %w", epoch+1, ep.Err())
					}
					nb := ep.Batch()
					next = func(im []float32, tg []int64) error {
						copy(im, nb.Images)
						copy(tg, nb.Targets)
						return nil
					}
				}
				if err == nil {
					r, err = dev.Run(st, float32(lr), next)
				}
			} else {
				r, err = ts.Step(st, batch.Images, batch.Targets, float32(lr))
			}
			if err != nil {
				ep.Close()
				return res, fmt.Errorf("epoch %d step %d: %w", epoch+1, st.Step+1, err)
			}
			if math.IsNaN(float64(r.Loss)) || math.IsInf(float64(r.Loss), 0) {
				ep.Close()
				return res, fmt.Errorf("epoch %d step %d: loss is %v (learning rate %.3g too high?); last checkpoint %s", epoch+1, st.Step, r.Loss, lr, lastPath)
			}
			lastLR = lr
			lossSum += float64(r.Loss)
			ceSum += float64(r.CE)
			diceSum += float64(r.Dice)
			done++
			imagesSeen += int64(cfg.Batch)
			prog.BatchInEpoch = b + 1
			if t.Progress != nil {
				el := time.Since(start).Seconds()
				ips := float64(imagesSeen) / el
				remaining := float64((cfg.Epochs-epoch-1)*steps+(steps-b-1)) * float64(cfg.Batch) / ips
				t.Progress.Step(epoch+1, cfg.Epochs, b+1, steps, lossSum/float64(done), ips, time.Duration(remaining*float64(time.Second)))
			}
			if ctx.Err() != nil {
				interrupted = true
				break
			}
		}
		ep.Close()
		if t.Progress != nil {
			t.Progress.EpochDone()
		}
		// A device-resident step keeps the state on the GPU: bring it home for recalibration,
		// validation and checkpoints.
		if err := ts.Pull(st); err != nil {
			return res, err
		}
		if interrupted {
			prog.Step = st.Step
			if err := SaveCheckpoint(lastPath, cfg, st, prog); err != nil {
				return res, fmt.Errorf("interrupted, and saving failed: %w", err)
			}
			t.Log.Warn().Str("checkpoint", lastPath).Int64("step", st.Step).Msg("interrupted: saved; continue with --resume")
			res.StoppedBy, res.Steps, res.Epochs = "interrupt", st.Step, epoch
			return res, ErrInterrupted
		}
		rec := EpochRecord{Epoch: epoch + 1, Step: st.Step, LR: lastLR, Time: time.Now().UTC().Format(time.RFC3339)}
		if done > 0 {
			rec.TrainLoss, rec.TrainCE, rec.TrainDice = lossSum/float64(done), ceSum/float64(done), diceSum/float64(done)
		}
		if recal != nil {
			n, err := recal.Run(ctx, st, recalLoader, cfg.BNRecalibBatches)
			if err != nil {
				return res, err
			}
			rec.BNRecalib = n
			if err := ts.Push(st); err != nil { // training goes on from the re-estimated statistics
				return res, err
			}
		}
		prog.Epoch, prog.BatchInEpoch, prog.Step = epoch+1, 0, st.Step
		if val != nil {
			m, err := val.Run(context.WithoutCancel(ctx), st, valLoader)
			if err != nil {
				return res, err
			}
			rec.Val = m
			if m.IoU > prog.BestIoU+cfg.MinDelta || prog.BestIoU < 0 {
				prog.BestIoU, prog.BestEpoch, prog.BadEpochs = m.IoU, epoch+1, 0
				rec.Best = true
			} else {
				prog.BadEpochs++
			}
		}
		rec.Seconds = time.Since(epStart).Seconds()
		rec.ImgPerS = float64(done*cfg.Batch) / rec.Seconds
		prog.LastMetrics = &rec
		// The best checkpoint first, then last: a crash between them loses nothing that last
		// would not also hold.
		if rec.Best {
			if err := SaveCheckpoint(bestPath, cfg, st, prog); err != nil {
				return res, err
			}
			res.Best, res.BestIoU, res.BestEpoch, res.BestVal = bestPath, prog.BestIoU, prog.BestEpoch, rec.Val
		}
		if err := SaveCheckpoint(lastPath, cfg, st, prog); err != nil {
			return res, err
		}
		if cfg.CheckpointEvery > 0 && (epoch+1)%cfg.CheckpointEvery == 0 {
			p := filepath.Join(ckDir, fmt.Sprintf("epoch-%03d.onnx", epoch+1))
			if err := SaveCheckpoint(p, cfg, st, prog); err != nil {
				return res, err
			}
		}
		line, _ := json.Marshal(rec)
		if _, err := metricsFile.Write(append(line, '\n')); err != nil {
			return res, fmt.Errorf("metrics log: %w", err)
		}
		history = append(history, rec)
		ev := t.Log.Info().Int("epoch", epoch+1).Int64("step", st.Step).Float64("lr", lastLR).Float64("train_loss", round4(rec.TrainLoss)).
			Float64("img_per_s", math.Round(rec.ImgPerS*10)/10)
		if val != nil {
			ev = ev.Float64("val_loss", round4(rec.Val.Loss)).Float64("val_iou", round4(rec.Val.IoU)).Float64("val_dice", round4(rec.Val.Dice)).
				Float64("val_pixel_acc", round4(rec.Val.PixelAccuracy)).Bool("best", rec.Best)
		}
		ev.Msg("epoch done")
		res.Final = rec.Val
		if cfg.Patience > 0 && val != nil && prog.BadEpochs >= cfg.Patience {
			stopBy = "early stopping"
			t.Log.Info().Int("patience", cfg.Patience).Float64("best_iou", prog.BestIoU).Int("best_epoch", prog.BestEpoch).Msg("early stopping")
			break
		}
		if ctx.Err() != nil {
			res.StoppedBy, res.Steps, res.Epochs = "interrupt", st.Step, epoch+1
			return res, ErrInterrupted
		}
	}
	if err := WritePlots(filepath.Join(t.RunDir, PlotDir), history); err != nil {
		t.Log.Warn().Err(err).Msg("plots not written")
	}
	res.StoppedBy, res.Steps, res.Epochs = stopBy, st.Step, prog.Epoch
	if el := time.Since(start).Seconds(); el > 0 {
		res.TrainImgPS = float64(imagesSeen) / el
	}
	return res, nil
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// ReadMetricsLog reads RUN/logs/metrics.jsonl (a missing file is an empty history).
func ReadMetricsLog(path string) ([]EpochRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []EpochRecord
	for i, line := range splitLines(b) {
		var r EpochRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return out, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func writeMetricsLog(path string, recs []EpochRecord) error {
	var b []byte
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b = append(append(b, line...), '\n')
	}
	return WriteFileAtomic(path, b)
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			if i > start {
				out = append(out, b[start:i])
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// openStepper opens the train step, device-resident on every provider: the state lives in
// two sets of ORT tensors (in GPU memory on CUDA), which the steps alternate between, or with
// CUDA graphs one read and one written and copied back (DeviceTrainSession). On the CPU this
// saves copying the parameters and AdamW moments (38 MB at width 1.0) out of ONNX Runtime and
// back every step, about 5% of a step at 144×192 and 240×320 (bench train with and without
// --resident, alternating).
func (t *Trainer) openStepper(cfg TrainConfig, sc step.Config, st *State) (stepper, error) {
	fused, err := FusedOps(t.Session.Provider, sc.FP16)
	if err != nil {
		return nil, err
	}
	ForProvider(&sc, t.Session.Provider, fused)
	if fused != (FusedSet{}) {
		t.Log.Info().Str("fused", fused.String()).Msg("FP16 step: our fused CUDA operators (" + EnvFusedOps + ")")
	}
	d, err := NewDeviceTrainSession(sc, runtime.DeviceOptions{Provider: t.Session.Provider, CUDADevice: t.Session.CUDADevice,
		IntraOpThreads: t.Session.IntraOpThreads, CUDAGraph: cfg.CUDAGraph && t.Session.Provider == runtime.ProviderCUDA}, st)
	if err != nil {
		return nil, err
	}
	if d.Session().Provider() == runtime.ProviderCPU {
		if d.cfg.NCHWcBlock > 0 {
			t.Log.Info().Int64("block", d.cfg.NCHWcBlock).Msg("CPU step: depthwise convolutions on ONNX Runtime's NCHWc kernels")
		} else if _, err := NCHWcBlock(); err != nil && os.Getenv(EnvStandardOps) != "1" {
			t.Log.Info().Err(err).Msg("CPU step: standard ONNX operators only (slower)")
		}
	}
	return d, nil
}
