package metrics

import (
	"fmt"
	"sort"
)

// ImageScore is one image's score for the tracked class.
type ImageScore struct {
	Index int     // order in which the image was added, from 0
	Name  string  // caller's name for the image, e.g. its file's base name
	IoU   float64 // IoU of the tracked class on this image alone
	Dice  float64 // Dice of the tracked class on this image alone
}

// PerImage accumulates an evaluation image by image: the pooled confusion matrix over all
// pixels, and each image's IoU and Dice for one tracked class (Card for the card task).
type PerImage struct {
	class  int
	pooled *Confusion
	scores []ImageScore
}

// NewPerImage returns an empty accumulator for k classes that scores class per image.
// It panics when class is not below k, which is a programmer error.
func NewPerImage(k, class int) *PerImage {
	if class < 0 || class >= k {
		panic(fmt.Sprintf("metrics: NewPerImage(%d, %d): tracked class outside 0..%d", k, class, k-1))
	}
	return &PerImage{class: class, pooled: NewConfusion(k)}
}

// Add scores one image from its truth and predicted class masks (class indices).
func (p *PerImage) Add(name string, truth, pred []uint8) error {
	c := NewConfusion(p.pooled.k)
	if err := c.Add(truth, pred); err != nil {
		return fmt.Errorf("image %q: %w", name, err)
	}
	return p.AddConfusion(name, c)
}

// AddConfusion scores one image from its own confusion matrix.
func (p *PerImage) AddConfusion(name string, c *Confusion) error {
	if err := p.pooled.Merge(c); err != nil {
		return fmt.Errorf("image %q: %w", name, err)
	}
	p.scores = append(p.scores, ImageScore{
		Index: len(p.scores),
		Name:  name,
		IoU:   c.IoU(p.class),
		Dice:  c.Dice(p.class),
	})
	return nil
}

// Images returns the number of images added.
func (p *PerImage) Images() int { return len(p.scores) }

// Pooled returns the confusion matrix over every pixel of every image. It is the
// accumulator's own matrix, not a copy.
func (p *PerImage) Pooled() *Confusion { return p.pooled }

// Scores returns a copy of the per-image scores in the order the images were added.
func (p *PerImage) Scores() []ImageScore { return append([]ImageScore(nil), p.scores...) }

// IoUs returns the per-image IoUs in the order the images were added.
func (p *PerImage) IoUs() []float64 {
	out := make([]float64, len(p.scores))
	for i, s := range p.scores {
		out[i] = s.IoU
	}
	return out
}

// MeanIoU returns the mean over images of the per-image IoU; with no images it is ZeroDivision.
func (p *PerImage) MeanIoU() float64 {
	if len(p.scores) == 0 {
		return ZeroDivision
	}
	var sum float64
	for _, s := range p.scores {
		sum += s.IoU
	}
	return sum / float64(len(p.scores))
}

// MeanDice returns the mean over images of the per-image Dice; with no images it is ZeroDivision.
func (p *PerImage) MeanDice() float64 {
	if len(p.scores) == 0 {
		return ZeroDivision
	}
	var sum float64
	for _, s := range p.scores {
		sum += s.Dice
	}
	return sum / float64(len(p.scores))
}

// Worst returns the n images with the lowest IoU, worst first; ties keep the order in which
// the images were added. n larger than the number of images returns them all.
func (p *PerImage) Worst(n int) []ImageScore {
	s := p.Scores()
	sort.SliceStable(s, func(i, j int) bool { return s[i].IoU < s[j].IoU })
	if n < 0 {
		n = 0
	}
	if n < len(s) {
		s = s[:n]
	}
	return s
}

// Summary is the result object of `cardseg-ort eval --json`: pooled scores for each class,
// pooled pixel accuracy and mean IoU, the image count and the mean over images of the card IoU.
type Summary struct {
	Card            ClassScores `json:"card"`
	Background      ClassScores `json:"background"`
	PixelAccuracy   float64     `json:"pixel_accuracy"`
	MeanIoU         float64     `json:"mean_iou"`
	Images          int         `json:"images"`
	PerImageIoUMean float64     `json:"per_image_iou_mean"`
}

// Summary returns the eval summary. It needs the two-class card task: K = 2 and the card
// class tracked per image.
func (p *PerImage) Summary() (Summary, error) {
	if p.pooled.k != 2 || p.class != Card {
		return Summary{}, fmt.Errorf("metrics: summary needs 2 classes with class %d (card) tracked per image, have %d classes tracking class %d",
			Card, p.pooled.k, p.class)
	}
	c := p.pooled
	return Summary{
		Card:            c.Scores(Card),
		Background:      c.Scores(Background),
		PixelAccuracy:   c.PixelAccuracy(),
		MeanIoU:         c.MeanIoU(),
		Images:          len(p.scores),
		PerImageIoUMean: p.MeanIoU(),
	}, nil
}
