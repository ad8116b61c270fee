package augment

import (
	"fmt"
	"image"
)

// Augmenter applies Params to image/mask pairs. It keeps scratch buffers between calls, so each
// goroutine needs its own; the zero value is ready to use.
type Augmenter struct {
	small      *image.RGBA // box-prefiltered source
	work       *image.RGBA // ApplyPlanar's 8-bit image before the float pass
	field      elasticField
	rowX, rowY []float32 // elastic field of one row
	rowU, rowV []float32 // source coordinates of one row
	tmp        []uint8   // blur scratch
	acc        []uint32  // blur accumulators
}

// Apply writes the augmented src and srcMask into dst and dstMask, whose size is the output
// size. Geometric transforms and the resize move image and mask together; the mask is
// resampled by nearest neighbour, so dstMask holds only 0 and 1. Blur, colour and noise then
// touch the image alone.
func (a *Augmenter) Apply(p Params, src *image.RGBA, srcMask *Mask, dst *image.RGBA, dstMask *Mask) error {
	if err := a.geometry(p, src, srcMask, dst, dstMask); err != nil {
		return err
	}
	mean := 0.0
	if p.Contrast != 1 {
		mean = meanLuma(dst)
	}
	if c, changed := photometric(p, mean); changed || p.NoiseSigma > 0 {
		colorPass(dst, c, p.NoiseSigma, p.NoiseSeed)
	}
	return nil
}

// geometry checks the sizes, warps image and mask together and blurs the image.
func (a *Augmenter) geometry(p Params, src *image.RGBA, srcMask *Mask, dst *image.RGBA, dstMask *Mask) error {
	if err := checkSameSize(src, srcMask); err != nil {
		return fmt.Errorf("augment: source %w", err)
	}
	if err := checkSameSize(dst, dstMask); err != nil {
		return fmt.Errorf("augment: destination %w", err)
	}
	if src.Rect.Min != (image.Point{}) || dst.Rect.Min != (image.Point{}) {
		return fmt.Errorf("augment: images must start at the origin")
	}
	if src.Rect.Empty() || dst.Rect.Empty() {
		return fmt.Errorf("augment: empty image (source %v, destination %v)", src.Rect.Size(), dst.Rect.Size())
	}
	a.warp(p, src, srcMask, dst, dstMask)
	if p.BlurSigma > 0 {
		a.tmp, a.acc = gaussianBlur(dst, p.BlurSigma, a.tmp, a.acc)
	}
	if p.MotionLength >= 2 {
		a.tmp, a.acc = motionBlur(dst, p.MotionLength, p.MotionAngle, a.tmp, a.acc)
	}
	return nil
}

// ApplyPlanar augments like Apply but writes the image as the network reads it: three planes
// (R, G, B) of w×h floats in dst, each value (v/255 − mean[c]) / std[c] of the augmented value
// v, where w×h is dstMask's size. Colour, noise and normalisation share one pass, so the result
// matches normalising Apply's output up to its rounding to 8 bits.
func (a *Augmenter) ApplyPlanar(p Params, src *image.RGBA, srcMask *Mask, dst []float32, dstMask *Mask, mean, std [3]float32) error {
	w, h := dstMask.Width, dstMask.Height
	if len(dst) != 3*w*h {
		return fmt.Errorf("augment: %d output values for a %d×%d mask, want %d", len(dst), w, h, 3*w*h)
	}
	for c := range std {
		if !(std[c] > 0) {
			return fmt.Errorf("augment: std[%d] = %v", c, std[c])
		}
	}
	a.work = resizeRGBA(a.work, w, h)
	if err := a.geometry(p, src, srcMask, a.work, dstMask); err != nil {
		return err
	}
	mu := 0.0
	if p.Contrast != 1 {
		mu = meanLuma(a.work)
	}
	c, _ := photometric(p, mu)
	planarPass(dst, a.work, c, p.NoiseSigma, p.NoiseSeed, mean, std)
	return nil
}

// Resize scales an image and its mask to w×h with no augmentation: bilinear for the image,
// nearest neighbour for the mask. It is what evaluation uses. srcMask may be nil (an image to
// predict on); the returned mask is then nil too.
func Resize(src *image.RGBA, srcMask *Mask, w, h int) (*image.RGBA, *Mask, error) {
	if w <= 0 || h <= 0 {
		return nil, nil, fmt.Errorf("augment: resize to %d×%d", w, h)
	}
	noMask := srcMask == nil
	if noMask {
		srcMask = NewMask(src.Rect.Dx(), src.Rect.Dy())
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	dstMask := NewMask(w, h)
	var a Augmenter
	if err := a.Apply(Identity(), src, srcMask, dst, dstMask); err != nil {
		return nil, nil, err
	}
	if noMask {
		dstMask = nil
	}
	return dst, dstMask, nil
}
