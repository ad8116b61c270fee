// Package augment decodes images and masks and applies joint, mask-consistent augmentations.
//
// It holds the project's one image decoder: JPEG and PNG, EXIF orientation applied for JPEG,
// every colour model (grayscale, RGBA, 16-bit, paletted, CMYK) brought to 8-bit RGBA, and masks
// brought to 0/1 labels (0/255 masks and 0/1 masks alike). Decoding reports what it found
// (Info, MaskInfo) so that dataset checks can name the problem instead of guessing.
//
// Augmentations follow one rule: geometric transforms (flip, rotation, scale, perspective,
// elastic) and the resize to the training resolution are composed into a single output→source
// mapping that moves image and mask together; the image is resampled bilinearly, the mask by
// nearest neighbour, so labels are never blended. Photometric transforms (brightness, contrast,
// saturation, hue), blur and noise touch only the image. Config holds the probabilities and
// ranges (Defaults gives the seed's values); Config.Sample draws Params from a seeded
// generator, so a seed fixes the result.
//
// It may import github.com/anthonynsimon/bild, golang.org/x/image and the standard library;
// no other package of this module.
package augment
