package augment

import (
	"encoding/binary"
	"unsafe"
)

// words views packed RGBA bytes as one uint32 per pixel. The resampling and blur arithmetic
// treats the four bytes of a word symmetrically (two 16-bit lanes of two channels each), so the
// host's byte order does not matter.
func words(pix []uint8) []uint32 {
	if len(pix) < 4 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&pix[0])), len(pix)/4)
}

// littleEndian reports the host byte order, which decides how pack lays out a word.
var littleEndian = func() bool {
	var w [1]uint32
	binary.NativeEndian.PutUint32(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4), 1)
	return w[0] == 1 && *(*byte)(unsafe.Pointer(&w[0])) == 1
}()

// pack returns the word whose bytes in memory are r, g, b, 255.
func pack(r, g, b uint8) uint32 {
	if littleEndian {
		return uint32(r) | uint32(g)<<8 | uint32(b)<<16 | 0xff000000
	}
	return uint32(r)<<24 | uint32(g)<<16 | uint32(b)<<8 | 0xff
}
