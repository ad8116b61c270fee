package augment

import (
	"bytes"
	"encoding/binary"
)

// OrientationName describes an EXIF orientation value as the transform a viewer applies.
func OrientationName(o int) string {
	switch o {
	case 1:
		return "normal"
	case 2:
		return "mirrored horizontally"
	case 3:
		return "rotated 180°"
	case 4:
		return "mirrored vertically"
	case 5:
		return "transposed (mirrored and rotated 90° counter-clockwise)"
	case 6:
		return "rotated 90° clockwise"
	case 7:
		return "transversed (mirrored and rotated 90° clockwise)"
	case 8:
		return "rotated 90° counter-clockwise"
	}
	return "unknown"
}

// jpegOrientation returns the EXIF orientation (1..8) stored in a JPEG's APP1 segment, or 1 when
// there is none or it is malformed. It reads only bounds-checked slices of data.
func jpegOrientation(data []byte) int {
	pos := 2 // after SOI
	for pos+4 <= len(data) {
		if data[pos] != 0xff {
			return 1
		}
		marker := data[pos+1]
		switch {
		case marker == 0xff: // fill byte
			pos++
			continue
		case marker == 0xd9 || marker == 0xda: // EOI or start of scan: no metadata after this
			return 1
		case marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7): // markers without a length
			pos += 2
			continue
		}
		length := int(binary.BigEndian.Uint16(data[pos+2:]))
		if length < 2 || pos+2+length > len(data) {
			return 1
		}
		seg := data[pos+4 : pos+2+length]
		if marker == 0xe1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return tiffOrientation(seg[6:])
		}
		pos += 2 + length
	}
	return 1
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF-structured EXIF block.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(t[2:]) != 42 {
		return 1
	}
	ifd := int64(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > int64(len(t)) {
		return 1
	}
	n := int(bo.Uint16(t[ifd:]))
	for i := 0; i < n; i++ {
		e := ifd + 2 + int64(i)*12
		if e+12 > int64(len(t)) {
			return 1
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		typ, count := bo.Uint16(t[e+2:]), bo.Uint32(t[e+4:])
		if typ != 3 || count < 1 { // SHORT
			return 1
		}
		if o := int(bo.Uint16(t[e+8:])); o >= 1 && o <= 8 {
			return o
		}
		return 1
	}
	return 1
}

// orientedSize is the displayed size of a w×h stored image under orientation o.
func orientedSize(w, h, o int) (int, int) {
	if o >= 5 && o <= 8 {
		return h, w
	}
	return w, h
}

// orient copies the stored w×h image src (bpp bytes per pixel, rows packed) into dst as a
// viewer displays it under EXIF orientation o; dst must hold w×h pixels.
func orient(dst, src []uint8, w, h, bpp, o int) {
	dw, _ := orientedSize(w, h, o)
	for sy := 0; sy < h; sy++ {
		for sx := 0; sx < w; sx++ {
			var dx, dy int
			switch o {
			case 2:
				dx, dy = w-1-sx, sy
			case 3:
				dx, dy = w-1-sx, h-1-sy
			case 4:
				dx, dy = sx, h-1-sy
			case 5:
				dx, dy = sy, sx
			case 6:
				dx, dy = h-1-sy, sx
			case 7:
				dx, dy = h-1-sy, w-1-sx
			case 8:
				dx, dy = sy, w-1-sx
			default:
				dx, dy = sx, sy
			}
			copy(dst[(dy*dw+dx)*bpp:(dy*dw+dx+1)*bpp], src[(sy*w+sx)*bpp:(sy*w+sx+1)*bpp])
		}
	}
}

func orient32(dst, src []uint8, w, h, o int) { orient(dst, src, w, h, 4, o) }
