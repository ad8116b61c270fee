package pipeline

import (
	"context"
	"fmt"

	"github.com/cardseg-ort/cardseg-ort/graphs/step"
	"github.com/cardseg-ort/cardseg-ort/metrics"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// ValMetrics are one validation pass's results over a whole split.
type ValMetrics struct {
	Loss          float64 `json:"loss"`
	CE            float64 `json:"ce"`
	DiceLoss      float64 `json:"dice_loss"`
	IoU           float64 `json:"iou"`  // card IoU, pooled over all pixels
	Dice          float64 `json:"dice"` // card Dice, pooled
	PixelAccuracy float64 `json:"pixel_accuracy"`
	MeanIoU       float64 `json:"mean_iou"`
	Images        int     `json:"images"`
}

// Validator runs the eval-step graph (symbolic batch) over a split.
type Validator struct {
	cfg  step.Config
	sess *runtime.Session
}

// NewValidator builds and opens the eval-step graph.
func NewValidator(cfg step.Config, opts runtime.SessionOptions) (*Validator, error) {
	cfg = cpuKernels(cfg, opts.Provider)
	g, err := step.EvalStep(cfg)
	if err != nil {
		return nil, err
	}
	b, err := marshalFor(g, cfg, opts.Provider)
	if err != nil {
		return nil, err
	}
	s, err := runtime.NewSession("eval_step", b, opts)
	if err != nil {
		return nil, err
	}
	return &Validator{cfg: cfg, sess: s}, nil
}

// Close releases the session.
func (v *Validator) Close() error { return v.sess.Close() }

// Run evaluates the weights in st over every batch of the loader's epoch 0 (no shuffle and no
// augmentation expected). The loss is that of the whole split as one batch, from per-image
// sums, so it does not depend on the batch size.
func (v *Validator) Run(ctx context.Context, st *State, l *Loader) (ValMetrics, error) {
	var m ValMetrics
	conf := metrics.NewConfusion(2)
	var ceSum, inter, psum, tsum, pixels float64
	ep := l.Epoch(ctx, 0)
	defer ep.Close()
	h, w := int64(v.cfg.Height), int64(v.cfg.Width)
	for ep.Next() {
		b := ep.Batch()
		n := int64(b.Size)
		feeds := map[string]*runtime.Tensor{
			step.InputImage:  runtime.MustNew([]int64{n, 3, h, w}, b.Images[:n*3*h*w]),
			step.InputTarget: runtime.MustNew([]int64{n, h, w}, b.Targets[:n*h*w]),
		}
		for _, p := range v.cfg.Arch.Params() {
			feeds[p.Name] = runtime.MustNew([]int64(p.Shape), st.Weights.Tensors[p.Name])
		}
		out, err := v.sess.Run(feeds)
		if err != nil {
			return m, fmt.Errorf("validation: %w", err)
		}
		if err := conf.AddCounts(runtime.Data[int64](out[step.OutConfusionTotal])); err != nil {
			return m, fmt.Errorf("validation: %w", err)
		}
		for i := int64(0); i < n; i++ {
			ceSum += float64(runtime.Data[float32](out[step.OutCESum])[i])
			inter += float64(runtime.Data[float32](out[step.OutDiceInter])[i])
			psum += float64(runtime.Data[float32](out[step.OutDiceP])[i])
			tsum += float64(runtime.Data[float32](out[step.OutDiceT])[i])
		}
		pixels += float64(n * h * w)
		m.Images += int(n)
	}
	if err := ep.Err(); err != nil {
		return m, err
	}
	if m.Images == 0 {
		return m, fmt.Errorf("validation: no images")
	}
	m.CE = ceSum / pixels
	m.DiceLoss = 1 - (2*inter+1)/(psum+tsum+1)
	m.Loss = float64(v.cfg.Loss.CE)*m.CE + float64(v.cfg.Loss.Dice)*m.DiceLoss
	m.IoU = conf.IoU(metrics.Card)
	m.Dice = conf.Dice(metrics.Card)
	m.PixelAccuracy = conf.PixelAccuracy()
	m.MeanIoU = conf.MeanIoU()
	return m, nil
}

// BNRecalibrator re-estimates batch-norm statistics: the mean over several training batches of
// each layer's batch mean and unbiased batch variance, as PyTorch's cumulative average
// (momentum=None) over the same batches would give.
type BNRecalibrator struct {
	cfg  step.Config
	sess *runtime.Session
}

// NewBNRecalibrator builds and opens the statistics graph (batch size cfg.Batch).
func NewBNRecalibrator(cfg step.Config, opts runtime.SessionOptions) (*BNRecalibrator, error) {
	g, err := step.BNStats(cfg)
	if err != nil {
		return nil, err
	}
	b, err := marshalFor(g, cfg, opts.Provider)
	if err != nil {
		return nil, err
	}
	s, err := runtime.NewSession("bn_stats", b, opts)
	if err != nil {
		return nil, err
	}
	return &BNRecalibrator{cfg: cfg, sess: s}, nil
}

// Close releases the session.
func (r *BNRecalibrator) Close() error { return r.sess.Close() }

// Run replaces st's running statistics with estimates from up to maxBatches full batches of
// the loader's epoch 0 (no augmentation, fixed order: the estimate is reproducible).
func (r *BNRecalibrator) Run(ctx context.Context, st *State, l *Loader, maxBatches int) (int, error) {
	sums := map[string][]float64{}
	var buffers []string
	for _, p := range r.cfg.Arch.Params() {
		if p.Kind.Trainable() {
			continue
		}
		buffers = append(buffers, p.Name)
		sums[p.Name] = make([]float64, p.Size())
	}
	used := 0
	ep := l.Epoch(ctx, 0)
	defer ep.Close()
	b, h, w := int64(r.cfg.Batch), int64(r.cfg.Height), int64(r.cfg.Width)
	for used < maxBatches && ep.Next() {
		batch := ep.Batch()
		if int64(batch.Size) != b {
			break
		}
		feeds := map[string]*runtime.Tensor{step.InputImage: runtime.MustNew([]int64{b, 3, h, w}, batch.Images[:b*3*h*w])}
		for _, p := range r.cfg.Arch.Params() {
			feeds[p.Name] = runtime.MustNew([]int64(p.Shape), st.Weights.Tensors[p.Name])
		}
		out, err := r.sess.Run(feeds)
		if err != nil {
			return used, fmt.Errorf("batch-norm statistics: %w", err)
		}
		for _, name := range buffers {
			for i, v := range runtime.Data[float32](out[step.BNStatName(name)]) {
				sums[name][i] += float64(v)
			}
		}
		used++
	}
	if err := ep.Err(); err != nil && used < maxBatches {
		return used, err
	}
	if used == 0 {
		return 0, fmt.Errorf("batch-norm statistics: no full batch of %d training images", b)
	}
	for _, name := range buffers {
		d := make([]float32, len(sums[name]))
		for i, s := range sums[name] {
			d[i] = float32(s / float64(used))
		}
		st.Weights.Tensors[name] = d
	}
	return used, nil
}
