package augment

import "unsafe"

// words views packed RGBA bytes as one uint32 per pixel. The resampling and blur arithmetic
// treats the four bytes of a word symmetrically (two 16-bit lanes of two channels each), so the
// host's byte order does not matter.
func words(pix []uint8) []uint32 {
	if len(pix) < 4 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&pix[0])), len(pix)/4)
}
