package augment

import (
	"encoding/binary"
	"image"
	"image/color"
)

// toRGBA converts src into dst (same size, origin at 0,0) as opaque 8-bit RGB: gray is copied to
// all three channels, 16-bit samples keep their high byte, CMYK is converted, alpha is dropped
// (colours are taken un-premultiplied). It returns the number of pixels that were not opaque.
// Common decoder outputs take a loop over their Pix slices; anything else goes through At.
func toRGBA(dst *image.RGBA, src image.Image) (translucent int) {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	d := dst.Pix
	switch s := src.(type) {
	case *image.YCbCr:
		if b.Min == (image.Point{}) {
			ycbcrToRGBA(d, s)
			return 0
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := s.Pix[(y)*s.Stride : y*s.Stride+w]
			o := d[4*w*y : 4*w*(y+1)]
			for x, v := range row {
				p := o[4*x : 4*x+4 : 4*x+4]
				p[0], p[1], p[2], p[3] = v, v, v, 255
			}
		}
		return 0
	case *image.Gray16:
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+2*w]
			o := d[4*w*y : 4*w*(y+1)]
			for x := 0; x < w; x++ {
				v := row[2*x]
				p := o[4*x : 4*x+4 : 4*x+4]
				p[0], p[1], p[2], p[3] = v, v, v, 255
			}
		}
		return 0
	case *image.RGBA:
		return copyRGBA(d, s.Pix, s.Stride, w, h, 1)
	case *image.NRGBA:
		return copyRGBA(d, s.Pix, s.Stride, w, h, 1)
	case *image.RGBA64:
		return copyRGBA(d, s.Pix, s.Stride, w, h, 2)
	case *image.NRGBA64:
		return copyRGBA(d, s.Pix, s.Stride, w, h, 2)
	case *image.Paletted:
		var lut [256][4]uint8
		opaque := [256]bool{}
		for i := range lut {
			lut[i] = [4]uint8{0, 0, 0, 255}
			opaque[i] = true
		}
		for i, c := range s.Palette {
			if i >= 256 {
				break
			}
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[i] = [4]uint8{n.R, n.G, n.B, 255}
			opaque[i] = n.A == 255
		}
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+w]
			o := d[4*w*y : 4*w*(y+1)]
			for x, v := range row {
				copy(o[4*x:4*x+4], lut[v][:])
				if !opaque[v] {
					translucent++
				}
			}
		}
		return translucent
	case *image.CMYK:
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+4*w]
			o := d[4*w*y : 4*w*(y+1)]
			for x := 0; x < w; x++ {
				r, g, bl := color.CMYKToRGB(row[4*x], row[4*x+1], row[4*x+2], row[4*x+3])
				p := o[4*x : 4*x+4 : 4*x+4]
				p[0], p[1], p[2], p[3] = r, g, bl, 255
			}
		}
		return 0
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA64Model.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
			i := 4 * (y*w + x)
			d[i], d[i+1], d[i+2], d[i+3] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8), 255
			if c.A != 0xffff {
				translucent++
			}
		}
	}
	return translucent
}

// copyRGBA copies 4-channel pixels of size bytes per sample (1 or 2, big-endian: the high byte
// comes first) into packed 8-bit RGBA, forcing alpha to opaque and counting translucent pixels.
// Colours are used as stored, which for premultiplied sources darkens only translucent pixels.
func copyRGBA(dst, src []uint8, stride, w, h, size int) (translucent int) {
	for y := 0; y < h; y++ {
		row := src[y*stride : y*stride+4*size*w]
		o := dst[4*w*y : 4*w*(y+1)]
		for x := 0; x < w; x++ {
			s := row[4*size*x : 4*size*(x+1)]
			p := o[4*x : 4*x+4 : 4*x+4]
			p[0], p[1], p[2], p[3] = s[0], s[size], s[2*size], 255
			if s[3*size] != 255 || (size == 2 && s[3*size+1] != 255) {
				translucent++
			}
		}
	}
	return translucent
}

// ycbcrToRGBA converts a JPEG's YCbCr planes to RGBA with the same fixed-point arithmetic as
// color.YCbCrToRGB, walking the chroma planes at the image's subsampling ratio.
func ycbcrToRGBA(dst []uint8, s *image.YCbCr) {
	w, h := s.Rect.Dx(), s.Rect.Dy()
	hs, vs := 0, 0 // log2 of the horizontal and vertical chroma subsampling
	switch s.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hs = 1
	case image.YCbCrSubsampleRatio420:
		hs, vs = 1, 1
	case image.YCbCrSubsampleRatio440:
		vs = 1
	case image.YCbCrSubsampleRatio411:
		hs = 2
	case image.YCbCrSubsampleRatio410:
		hs, vs = 2, 1
	}
	cw := (w + (1 << hs) - 1) >> hs
	for y := 0; y < h; y++ {
		yrow := s.Y[y*s.YStride : y*s.YStride+w]
		cbase := (y >> vs) * s.CStride
		cbrow := s.Cb[cbase : cbase+cw]
		crrow := s.Cr[cbase : cbase+cw]
		o := dst[4*w*y : 4*w*(y+1)]
		if hs == 1 {
			// 4:2:0 and 4:2:2, by far the most common: two pixels share one chroma sample.
			for ci := range cbrow {
				cb, cr := int32(cbrow[ci])-128, int32(crrow[ci])-128
				dr, dg, db := 91881*cr, -22554*cb-46802*cr, 116130*cb
				x := 2 * ci
				yy := int32(yrow[x]) * 0x10101
				binary.LittleEndian.PutUint32(o[4*x:], uint32(clamp16(yy+dr))|uint32(clamp16(yy+dg))<<8|uint32(clamp16(yy+db))<<16|0xff000000)
				if x+1 < w {
					yy = int32(yrow[x+1]) * 0x10101
					binary.LittleEndian.PutUint32(o[4*x+4:], uint32(clamp16(yy+dr))|uint32(clamp16(yy+dg))<<8|uint32(clamp16(yy+db))<<16|0xff000000)
				}
			}
			continue
		}
		for x, yv := range yrow {
			ci := x >> hs
			yy := int32(yv) * 0x10101
			cb := int32(cbrow[ci]) - 128
			cr := int32(crrow[ci]) - 128
			p := o[4*x : 4*x+4 : 4*x+4]
			p[0], p[1], p[2], p[3] = clamp16(yy+91881*cr), clamp16(yy-22554*cb-46802*cr), clamp16(yy+116130*cb), 255
		}
	}
}

// clamp16 returns v>>16 clamped to 0..255, as color.YCbCrToRGB does, without a branch.
func clamp16(v int32) uint8 { return uint8(min(max(v>>16, 0), 255)) }
