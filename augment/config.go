package augment

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Config holds the probability and range of every augmentation. Ranges are symmetric around
// "no change" unless a Min and Max are given. Distances are fractions of the output size and
// intensities fractions of full scale, so one Config serves every resolution.
type Config struct {
	// Geometric: image and mask move together.
	FlipProb         float64 `json:"flip_prob"`         // horizontal flip
	RotateProb       float64 `json:"rotate_prob"`       //
	RotateDegrees    float64 `json:"rotate_degrees"`    // angle uniform in ±RotateDegrees
	ScaleProb        float64 `json:"scale_prob"`        //
	ScaleMin         float64 `json:"scale_min"`         // zoom factor, log-uniform in [ScaleMin, ScaleMax]
	ScaleMax         float64 `json:"scale_max"`         //
	PerspectiveProb  float64 `json:"perspective_prob"`  //
	PerspectiveShift float64 `json:"perspective_shift"` // each corner moves up to this fraction of the size
	ElasticProb      float64 `json:"elastic_prob"`      //
	ElasticAlpha     float64 `json:"elastic_alpha"`     // largest displacement, fraction of the shorter side
	ElasticCells     float64 `json:"elastic_cells"`     // noise wavelengths across the shorter side

	// Photometric: image only.
	BrightnessProb  float64 `json:"brightness_prob"`  //
	BrightnessLimit float64 `json:"brightness_limit"` // add uniform ±limit of full scale
	ContrastProb    float64 `json:"contrast_prob"`    //
	ContrastLimit   float64 `json:"contrast_limit"`   // scale around the mean by 1 ± limit
	SaturationProb  float64 `json:"saturation_prob"`  //
	SaturationLimit float64 `json:"saturation_limit"` // scale chroma by 1 ± limit
	HueProb         float64 `json:"hue_prob"`         //
	HueLimit        float64 `json:"hue_limit"`        // rotate hue by ±limit of a full turn

	// Noise and blur: image only, in output pixels.
	NoiseProb           float64 `json:"noise_prob"`             // additive Gaussian noise
	NoiseSigmaMin       float64 `json:"noise_sigma_min"`        // standard deviation, fraction of full scale
	NoiseSigmaMax       float64 `json:"noise_sigma_max"`        //
	BlurProb            float64 `json:"blur_prob"`              // Gaussian blur
	BlurSigmaMin        float64 `json:"blur_sigma_min"`         // pixels
	BlurSigmaMax        float64 `json:"blur_sigma_max"`         //
	MotionBlurProb      float64 `json:"motion_blur_prob"`       // linear motion blur, any direction
	MotionBlurMinLength int     `json:"motion_blur_min_length"` // pixels
	MotionBlurMaxLength int     `json:"motion_blur_max_length"` //
}

// Defaults returns the seed's augmentation settings: flip 0.5, rotation ±15°, scale 0.8–1.25,
// light perspective and elastic warps, brightness and contrast ±0.2, saturation ±0.2, hue ±0.05,
// and occasional noise, Gaussian blur and motion blur.
func Defaults() Config {
	return Config{
		FlipProb:         0.5,
		RotateProb:       0.5,
		RotateDegrees:    15,
		ScaleProb:        0.5,
		ScaleMin:         0.8,
		ScaleMax:         1.25,
		PerspectiveProb:  0.3,
		PerspectiveShift: 0.06,
		ElasticProb:      0.2,
		ElasticAlpha:     0.02,
		ElasticCells:     3,

		BrightnessProb:  0.5,
		BrightnessLimit: 0.2,
		ContrastProb:    0.5,
		ContrastLimit:   0.2,
		SaturationProb:  0.3,
		SaturationLimit: 0.2,
		HueProb:         0.3,
		HueLimit:        0.05,

		NoiseProb:           0.2,
		NoiseSigmaMin:       0.01,
		NoiseSigmaMax:       0.04,
		BlurProb:            0.1,
		BlurSigmaMin:        0.5,
		BlurSigmaMax:        1.5,
		MotionBlurProb:      0.1,
		MotionBlurMinLength: 3,
		MotionBlurMaxLength: 9,
	}
}

// None returns the Defaults ranges with every probability 0: only the resize remains.
func None() Config { return Defaults().WithProbability(0) }

// WithProbability returns c with every probability set to p; p = 1 applies everything, the
// worst case for throughput.
func (c Config) WithProbability(p float64) Config {
	for _, f := range c.probabilities() {
		*f.value = p
	}
	return c
}

type namedProb struct {
	name  string
	value *float64
}

func (c *Config) probabilities() []namedProb {
	return []namedProb{{"flip_prob", &c.FlipProb}, {"rotate_prob", &c.RotateProb},
		{"scale_prob", &c.ScaleProb}, {"perspective_prob", &c.PerspectiveProb},
		{"elastic_prob", &c.ElasticProb}, {"brightness_prob", &c.BrightnessProb},
		{"contrast_prob", &c.ContrastProb}, {"saturation_prob", &c.SaturationProb},
		{"hue_prob", &c.HueProb}, {"noise_prob", &c.NoiseProb}, {"blur_prob", &c.BlurProb},
		{"motion_blur_prob", &c.MotionBlurProb}}
}

// Validate returns an error naming the first field out of range.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.probabilities() {
		if !(*p.value >= 0 && *p.value <= 1) {
			errs = append(errs, fmt.Errorf("%s is %v, want 0..1", p.name, *p.value))
		}
	}
	check := func(name string, v, lo, hi float64) {
		if !(v >= lo && v <= hi) {
			errs = append(errs, fmt.Errorf("%s is %v, want %v..%v", name, v, lo, hi))
		}
	}
	check("rotate_degrees", c.RotateDegrees, 0, 180)
	check("scale_min", c.ScaleMin, 0.1, 10)
	check("scale_max", c.ScaleMax, c.ScaleMin, 10)
	check("perspective_shift", c.PerspectiveShift, 0, 0.4)
	check("elastic_alpha", c.ElasticAlpha, 0, 0.2)
	check("elastic_cells", c.ElasticCells, 0.5, 64)
	check("brightness_limit", c.BrightnessLimit, 0, 1)
	check("contrast_limit", c.ContrastLimit, 0, 1)
	check("saturation_limit", c.SaturationLimit, 0, 1)
	check("hue_limit", c.HueLimit, 0, 0.5)
	check("noise_sigma_min", c.NoiseSigmaMin, 0, 0.5)
	check("noise_sigma_max", c.NoiseSigmaMax, c.NoiseSigmaMin, 0.5)
	check("blur_sigma_min", c.BlurSigmaMin, 0, 10)
	check("blur_sigma_max", c.BlurSigmaMax, c.BlurSigmaMin, 10)
	check("motion_blur_min_length", float64(c.MotionBlurMinLength), 1, 64)
	check("motion_blur_max_length", float64(c.MotionBlurMaxLength), float64(c.MotionBlurMinLength), 64)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("augment config: %w", err)
	}
	return nil
}

// Params are the drawn values of one augmentation; the zero value (with Scale, Contrast and
// Saturation 1, see Identity) changes nothing but the size.
type Params struct {
	Flip        bool          // mirror left–right
	Rotate      float64       // degrees, counter-clockwise as displayed
	Scale       float64       // zoom factor: >1 enlarges the content
	Perspective [4][2]float64 // corner shifts (top-left, top-right, bottom-right, bottom-left), fractions of the size
	Elastic     float64       // largest displacement, fraction of the shorter side; 0 = none
	ElasticSeed int64         // seeds the displacement field
	ElasticFreq float64       // noise wavelengths across the shorter side

	Brightness float64 // added, fraction of full scale
	Contrast   float64 // factor around the mean
	Saturation float64 // chroma factor
	Hue        float64 // rotation, fraction of a turn

	NoiseSigma   float64 // fraction of full scale; 0 = none
	NoiseSeed    uint64
	BlurSigma    float64 // pixels; 0 = none
	MotionLength int     // pixels; < 2 = none
	MotionAngle  float64 // radians
}

// Identity returns Params that only resize.
func Identity() Params { return Params{Scale: 1, Contrast: 1, Saturation: 1} }

// Sample draws one augmentation. Every transform consumes the same random numbers whether or not
// it fires, so changing one probability leaves the others' draws unchanged.
func (c Config) Sample(rng *rand.Rand) Params {
	p := Identity()
	fires := func(prob float64) bool { return rng.Float64() < prob }
	sym := func(limit float64) float64 { return (2*rng.Float64() - 1) * limit }

	p.Flip = fires(c.FlipProb)
	if on, v := fires(c.RotateProb), sym(c.RotateDegrees); on {
		p.Rotate = v
	}
	lo, hi := math.Log(c.ScaleMin), math.Log(c.ScaleMax)
	if on, v := fires(c.ScaleProb), math.Exp(lo+(hi-lo)*rng.Float64()); on {
		p.Scale = v
	}
	on := fires(c.PerspectiveProb)
	var corners [4][2]float64
	for i := range corners {
		corners[i] = [2]float64{sym(c.PerspectiveShift), sym(c.PerspectiveShift)}
	}
	if on {
		p.Perspective = corners
	}
	if on, seed := fires(c.ElasticProb), rng.Int64(); on {
		p.Elastic, p.ElasticSeed, p.ElasticFreq = c.ElasticAlpha, seed, c.ElasticCells
	}

	if on, v := fires(c.BrightnessProb), sym(c.BrightnessLimit); on {
		p.Brightness = v
	}
	if on, v := fires(c.ContrastProb), 1+sym(c.ContrastLimit); on {
		p.Contrast = v
	}
	if on, v := fires(c.SaturationProb), 1+sym(c.SaturationLimit); on {
		p.Saturation = v
	}
	if on, v := fires(c.HueProb), sym(c.HueLimit); on {
		p.Hue = v
	}

	if on, v, seed := fires(c.NoiseProb), c.NoiseSigmaMin+(c.NoiseSigmaMax-c.NoiseSigmaMin)*rng.Float64(), rng.Uint64(); on {
		p.NoiseSigma, p.NoiseSeed = v, seed
	}
	if on, v := fires(c.BlurProb), c.BlurSigmaMin+(c.BlurSigmaMax-c.BlurSigmaMin)*rng.Float64(); on {
		p.BlurSigma = v
	}
	span := c.MotionBlurMaxLength - c.MotionBlurMinLength + 1
	if on, n, a := fires(c.MotionBlurProb), c.MotionBlurMinLength+int(rng.Float64()*float64(max(span, 1))), rng.Float64()*math.Pi; on {
		p.MotionLength, p.MotionAngle = min(n, c.MotionBlurMaxLength), a
	}
	return p
}
