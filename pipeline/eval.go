package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"strings"
	"time"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/metrics"
)

// EvalOptions configure Evaluate.
type EvalOptions struct {
	// Batch is the number of images per model run; 0 means 1. A model with a static batch size
	// runs at that size (a short last batch is padded).
	Batch int
	// Out is the folder for report.html, metrics.json and the pictures; "" writes no files.
	Out string
	// AnalyzePredictions writes an image / truth / prediction / errors panel per image.
	AnalyzePredictions bool
	// FindFailures keeps the N images with the lowest card IoU, with panels.
	FindFailures int
	// SavePlots draws the confusion-matrix heatmap, the per-image IoU histogram, the
	// confidence histogram and a confidence map (per-pixel max probability) per image.
	SavePlots bool
	// ReportImages caps the pictures per gallery in report.html (every file is still written);
	// 0 means DefaultReportImages.
	ReportImages int
	// Logf receives progress and warnings; nil discards them.
	Logf func(format string, args ...any)
}

// DefaultReportImages is how many pictures a report gallery shows by default.
const DefaultReportImages = 48

// thumbSide bounds the longer side of the pictures eval draws.
const thumbSide = 384

// ClassMeans are per-class scores and pixel accuracy averaged over images.
type ClassMeans struct {
	Card          metrics.ClassScores `json:"card"`
	Background    metrics.ClassScores `json:"background"`
	PixelAccuracy float64             `json:"pixel_accuracy"`
	MeanIoU       float64             `json:"mean_iou"`
}

// ConfusionReport is the pooled confusion matrix, rows truth and columns prediction.
type ConfusionReport struct {
	Classes    []string    `json:"classes"`
	Counts     [][]int64   `json:"counts"`
	Normalized [][]float64 `json:"normalized"` // each row divided by its sum
}

// ModelReport describes the evaluated model.
type ModelReport struct {
	Path          string        `json:"path"`
	Input         string        `json:"input"`
	Output        string        `json:"output"`
	OutputKind    OutputKind    `json:"output_kind"`
	InputSize     [2]int        `json:"input_size"` // height, width
	SizeFrom      string        `json:"input_size_from"`
	Normalization Normalization `json:"normalization"`
	NormFrom      string        `json:"normalization_from"`
	Provider      string        `json:"provider"`
}

// ImageResult is one image's evaluation at its mask's resolution.
type ImageResult struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Image string `json:"image"`
	Mask  string `json:"mask"`
	// Width and Height are the mask's, where the metrics are computed.
	Width         int     `json:"width"`
	Height        int     `json:"height"`
	ImageWidth    int     `json:"image_width"`
	ImageHeight   int     `json:"image_height"`
	IoU           float64 `json:"iou"` // card
	Dice          float64 `json:"dice"`
	PixelAccuracy float64 `json:"pixel_accuracy"`
	TruthCard     float64 `json:"truth_card_fraction"`
	PredCard      float64 `json:"predicted_card_fraction"`
	// MeanConfidence is the mean per-pixel max probability; absent for label outputs.
	MeanConfidence *float64  `json:"mean_confidence,omitempty"`
	Confusion      [][]int64 `json:"confusion"`
	// Pictures written for this image, relative to the output folder.
	Panel          string `json:"panel,omitempty"`
	ConfidenceMap  string `json:"confidence_map,omitempty"`
	FailurePanel   string `json:"failure_panel,omitempty"`
	FailureRank    int    `json:"failure_rank,omitempty"` // 1 = worst
	confusionCache *metrics.Confusion
}

// ConfidenceHistogram counts pixels by their max class probability in equal bins over [0.5, 1],
// separately for correctly and wrongly classified pixels.
type ConfidenceHistogram struct {
	Lo      float64 `json:"lo"`
	Hi      float64 `json:"hi"`
	Correct []int64 `json:"correct"`
	Wrong   []int64 `json:"wrong"`
}

const confidenceBins = 50

func newConfidenceHistogram() *ConfidenceHistogram {
	return &ConfidenceHistogram{Lo: 0.5, Hi: 1, Correct: make([]int64, confidenceBins), Wrong: make([]int64, confidenceBins)}
}

func (h *ConfidenceHistogram) add(conf float32, correct bool) {
	b := int((float64(conf) - h.Lo) / (h.Hi - h.Lo) * confidenceBins)
	b = max(0, min(confidenceBins-1, b))
	if correct {
		h.Correct[b]++
	} else {
		h.Wrong[b]++
	}
}

// EvalResult is the outcome of an evaluation. Its JSON form is what `eval --json` prints: the
// fields of metrics.Summary (pooled scores, image count, mean per-image card IoU) at the top
// level, then the rest.
type EvalResult struct {
	metrics.Summary
	PerImageDiceMean float64              `json:"per_image_dice_mean"`
	PerImageMean     ClassMeans           `json:"per_image_mean"`
	Confusion        ConfusionReport      `json:"confusion"`
	Model            ModelReport          `json:"model"`
	Data             string               `json:"data,omitempty"`
	Split            string               `json:"split,omitempty"`
	Worst            []ImageResult        `json:"worst,omitempty"`
	Warnings         []string             `json:"warnings,omitempty"`
	Seconds          float64              `json:"seconds"`
	Out              string               `json:"out,omitempty"`
	Report           string               `json:"report,omitempty"`
	PerImage         []ImageResult        `json:"-"` // in evaluation order
	ConfHist         *ConfidenceHistogram `json:"-"`
	Plots            map[string]string    `json:"-"` // plot name → file relative to Out
}

// EvaluateDataset evaluates a model on one split of a dataset folder (DIR/SPLIT/{image,mask}).
// Image/mask pairs are found by the dataset's discovery; a split with images lacking masks,
// masks lacking images or duplicate names is refused with every problem named. Image and mask
// may differ in size: metrics are computed at the mask's resolution.
func EvaluateDataset(ctx context.Context, m *SegModel, dir, split string, opts EvalOptions) (*EvalResult, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("dataset: %s is not a folder", dir)
	}
	_, samples, findings, err := discover(dir, split)
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, f := range findings {
		switch f.Severity {
		case Error:
			problems = append(problems, f.String())
		case Warning:
			if opts.Logf != nil {
				opts.Logf("dataset %s: %s", dir, f)
			}
		}
	}
	if len(problems) > 0 {
		shown := problems[:min(len(problems), 10)]
		more := ""
		if len(problems) > len(shown) {
			more = fmt.Sprintf("\n  and %d more", len(problems)-len(shown))
		}
		return nil, fmt.Errorf("dataset %s, split %s: %d problem(s):\n  %s%s", dir, split, len(problems), strings.Join(shown, "\n  "), more)
	}
	res, err := Evaluate(ctx, m, samples, opts)
	if err != nil {
		return nil, err
	}
	res.Data, res.Split = dir, split
	if opts.Out != "" {
		if err := WriteReport(res, opts); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// evalItem is one sample read from disk and prepared for the model.
type evalItem struct {
	sample Sample
	input  *image.RGBA   // at the model's input size
	orig   *image.RGBA   // as decoded; kept only when pictures are drawn
	mask   *augment.Mask // truth at its own resolution
	iw, ih int
}

type evalBatch struct {
	items []evalItem
	err   error
}

// load reads one sample and resizes its image to the model's input size.
func (m *SegModel) load(s Sample, keepOrig bool) (evalItem, error) {
	img, _, err := augment.ReadImage(s.Image)
	if err != nil {
		return evalItem{}, fmt.Errorf("image %s: %w", s.Name, err)
	}
	mask, _, err := augment.ReadMask(s.Mask)
	if err != nil {
		return evalItem{}, fmt.Errorf("mask of %s: %w", s.Name, err)
	}
	in := img
	if img.Rect.Dx() != m.Width || img.Rect.Dy() != m.Height {
		if in, _, err = augment.Resize(img, nil, m.Width, m.Height); err != nil {
			return evalItem{}, fmt.Errorf("image %s (%s): %w", s.Name, s.Image, err)
		}
	}
	l := evalItem{sample: s, input: in, mask: mask, iw: img.Rect.Dx(), ih: img.Rect.Dy()}
	if keepOrig {
		l.orig = img
	}
	return l, nil
}

// Evaluate runs the model over samples and scores each prediction against its mask. Images are
// resized to the model's input size; the model's output is resized back to each mask's
// resolution (bilinear on logits or probabilities, nearest on labels) and scored there. It
// writes per-image pictures into opts.Out as asked; WriteReport then ties them together.
func Evaluate(ctx context.Context, m *SegModel, samples []Sample, opts EvalOptions) (*EvalResult, error) {
	start := time.Now()
	if len(samples) == 0 {
		return nil, errors.New("eval: no images to evaluate")
	}
	if opts.FindFailures < 0 {
		return nil, fmt.Errorf("eval: find-failures %d must not be negative", opts.FindFailures)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	batch := max(opts.Batch, 1)
	if m.Batch > 0 && batch != m.Batch {
		if opts.Batch > 1 {
			logf("model %s has a static batch size of %d; running %d image(s) per batch", m.Path, m.Batch, m.Batch)
		}
		batch = m.Batch
	}
	vis, err := newVisuals(opts)
	if err != nil {
		return nil, err
	}
	keepOrig := vis.active()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan evalBatch, 1)
	go func() {
		defer close(batches)
		for lo := 0; lo < len(samples); lo += batch {
			hi := min(lo+batch, len(samples))
			var b evalBatch
			for _, s := range samples[lo:hi] {
				l, err := m.load(s, keepOrig)
				if err != nil {
					b.err = err
					break
				}
				b.items = append(b.items, l)
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if b.err != nil {
				return
			}
		}
	}()

	acc := metrics.NewPerImage(2, metrics.Card)
	res := &EvalResult{ConfHist: newConfidenceHistogram(), Plots: map[string]string{}}
	var aspectWarn []string
	lastLog := time.Now()
	for b := range batches {
		if b.err != nil {
			return nil, b.err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		images := make([]*image.RGBA, len(b.items))
		names := make([]string, len(b.items))
		for i, l := range b.items {
			images[i], names[i] = l.input, l.sample.Name
		}
		scores, err := m.predict(images, names)
		if err != nil {
			return nil, fmt.Errorf("model %s on %s: %w", m.Path, strings.Join(names, ", "), err)
		}
		for i, l := range b.items {
			r, err := scoreImage(acc, res.ConfHist, len(res.PerImage), l, scores[i], vis)
			if err != nil {
				return nil, err
			}
			if math.Abs(float64(l.iw)*float64(l.mask.Height)/(float64(l.ih)*float64(l.mask.Width))-1) > 0.02 {
				aspectWarn = append(aspectWarn, fmt.Sprintf("%s (image %d×%d, mask %d×%d)", l.sample.Name, l.iw, l.ih, l.mask.Width, l.mask.Height))
			}
			res.PerImage = append(res.PerImage, r)
		}
		if time.Since(lastLog) > 10*time.Second {
			logf("evaluated %d/%d images", len(res.PerImage), len(samples))
			lastLog = time.Now()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("eval: stopped after %d of %d images: %w", len(res.PerImage), len(samples), err)
	}
	if len(res.PerImage) != len(samples) {
		return nil, fmt.Errorf("eval: evaluated %d of %d images", len(res.PerImage), len(samples))
	}
	if len(aspectWarn) > 0 {
		w := fmt.Sprintf("%d image(s) have another aspect ratio than their mask, so image and mask may not cover the same scene: %s",
			len(aspectWarn), strings.Join(aspectWarn[:min(5, len(aspectWarn))], ", "))
		res.Warnings = append(res.Warnings, w)
		logf("%s", w)
	}

	sum, err := acc.Summary()
	if err != nil {
		return nil, err
	}
	res.Summary = sum
	res.PerImageDiceMean = acc.MeanDice()
	res.PerImageMean = classMeans(res.PerImage)
	pooled := acc.Pooled()
	res.Confusion = ConfusionReport{
		Classes:    metrics.ClassNames[:],
		Counts:     pooled.Counts(),
		Normalized: pooled.Normalized(),
	}
	res.Model = ModelReport{
		Path:          m.Path,
		Input:         m.Input.String(),
		Output:        m.Output.String(),
		OutputKind:    m.Kind,
		InputSize:     [2]int{m.Height, m.Width},
		SizeFrom:      m.SizeFrom,
		Normalization: m.Normalization,
		NormFrom:      m.NormFrom,
		Provider:      string(m.Provider()),
	}
	if opts.FindFailures > 0 {
		for rank, w := range acc.Worst(opts.FindFailures) {
			r := &res.PerImage[w.Index]
			r.FailureRank = rank + 1
			res.Worst = append(res.Worst, *r)
		}
	}
	if !res.hasConfidence() {
		res.ConfHist = nil
	}
	if err := vis.finish(res); err != nil {
		return nil, err
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// hasConfidence reports whether any pixel had a confidence (label outputs have none).
func (r *EvalResult) hasConfidence() bool {
	if r.ConfHist == nil {
		return false
	}
	for i := range r.ConfHist.Correct {
		if r.ConfHist.Correct[i]+r.ConfHist.Wrong[i] > 0 {
			return true
		}
	}
	return false
}

// score resizes one prediction to its mask, counts it and draws its pictures.
func scoreImage(acc *metrics.PerImage, hist *ConfidenceHistogram, index int, l evalItem, s scoreMap, vis *visuals) (ImageResult, error) {
	mw, mh := l.mask.Width, l.mask.Height
	full := s.resized(mw, mh)
	pred := make([]uint8, mw*mh)
	var confSum float64
	withConf := full.hasConfidence()
	for i, v := range full.S {
		if v > 0 {
			pred[i] = 1
		}
		if withConf {
			c := full.Kind.confidence(v)
			confSum += float64(c)
			hist.add(c, pred[i] == l.mask.Pix[i])
		}
	}
	c := metrics.NewConfusion(2)
	if err := c.Add(l.mask.Pix, pred); err != nil {
		return ImageResult{}, fmt.Errorf("score %s: %w", l.sample.Name, err)
	}
	if err := acc.AddConfusion(l.sample.Name, c); err != nil {
		return ImageResult{}, err
	}
	n := float64(mw * mh)
	r := ImageResult{
		Index: index, Name: l.sample.Name, Image: l.sample.Image, Mask: l.sample.Mask,
		Width: mw, Height: mh, ImageWidth: l.iw, ImageHeight: l.ih,
		IoU: c.IoU(metrics.Card), Dice: c.Dice(metrics.Card), PixelAccuracy: c.PixelAccuracy(),
		TruthCard: float64(c.At(1, 0)+c.At(1, 1)) / n,
		PredCard:  float64(c.At(0, 1)+c.At(1, 1)) / n,
		Confusion: c.Counts(), confusionCache: c,
	}
	if withConf {
		mc := confSum / n
		r.MeanConfidence = &mc
	}
	if err := vis.add(&r, l, s, pred); err != nil {
		return ImageResult{}, err
	}
	return r, nil
}

// classMeans averages every score over images.
func classMeans(rs []ImageResult) ClassMeans {
	var m ClassMeans
	if len(rs) == 0 {
		return m
	}
	addScores := func(dst *metrics.ClassScores, s metrics.ClassScores) {
		dst.IoU += s.IoU
		dst.Dice += s.Dice
		dst.Precision += s.Precision
		dst.Recall += s.Recall
		dst.F1 += s.F1
	}
	for _, r := range rs {
		c := r.confusionCache
		addScores(&m.Card, c.Scores(metrics.Card))
		addScores(&m.Background, c.Scores(metrics.Background))
		m.PixelAccuracy += c.PixelAccuracy()
		m.MeanIoU += c.MeanIoU()
	}
	n := float64(len(rs))
	for _, s := range []*metrics.ClassScores{&m.Card, &m.Background} {
		s.IoU /= n
		s.Dice /= n
		s.Precision /= n
		s.Recall /= n
		s.F1 /= n
	}
	m.PixelAccuracy /= n
	m.MeanIoU /= n
	return m
}
