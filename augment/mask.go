package augment

import (
	"encoding/binary"
	"fmt"
	"image"
	"math/bits"
)

// Mask holds one class label per pixel, rows packed: 0 background, 1 card. Every value is 0 or 1.
type Mask struct {
	Width, Height int
	Pix           []uint8
}

// NewMask returns an all-background w×h mask.
func NewMask(w, h int) *Mask { return &Mask{Width: w, Height: h, Pix: make([]uint8, w*h)} }

// resizeMask returns m resized to w×h, reusing its buffer when it is large enough.
func resizeMask(m *Mask, w, h int) *Mask {
	if m == nil || cap(m.Pix) < w*h {
		return NewMask(w, h)
	}
	m.Width, m.Height, m.Pix = w, h, m.Pix[:w*h]
	return m
}

// Gray returns the mask as stored in a dataset: 255 for card, 0 for background.
func (m *Mask) Gray() *image.Gray {
	g := image.NewGray(image.Rect(0, 0, m.Width, m.Height))
	for i, v := range m.Pix {
		g.Pix[i] = 255 * v
	}
	return g
}

// MaskInfo describes a decoded mask file.
type MaskInfo struct {
	Info
	// Max is the largest stored value (for colour masks, of the largest channel).
	Max int `json:"max"`
	// CardValue is the stored value meaning card: full scale (255, or 65535 for 16-bit), or 1
	// when the mask's maximum is 1 (a 0/1 mask).
	CardValue int `json:"card_value"`
	// NonBinary counts pixels whose value is neither 0 nor CardValue; such pixels are labelled
	// card when at least half of CardValue.
	NonBinary int `json:"non_binary"`
	// Example is one non-binary value, for messages.
	Example int `json:"example,omitempty"`
	// Colored counts pixels whose R, G and B differ (a colour mask).
	Colored int `json:"colored"`
	// Card counts the pixels labelled card.
	Card int `json:"card"`
}

// Binary reports a mask whose pixels are all 0 or CardValue, in gray.
func (m MaskInfo) Binary() bool { return m.NonBinary == 0 && m.Colored == 0 }

// Mask decodes a JPEG or PNG mask into 0/1 labels, EXIF orientation applied. Gray masks are read
// at their bit depth; colour masks use their largest channel. dst is reused when large enough.
func (d Decoder) Mask(data []byte, dst *Mask) (*Mask, MaskInfo, error) {
	src, info, err := d.decode(data)
	mi := MaskInfo{Info: info}
	if err != nil {
		return nil, mi, err
	}
	w, h := info.StoredWidth, info.StoredHeight
	labels := resizeMask(dst, w, h)
	if info.Orientation != 1 {
		labels = NewMask(w, h)
	}
	switch s := src.(type) {
	case *image.Gray:
		// One pass labels at the 0/255 threshold and notes which values occur; storing a
		// constant into seen has no read-after-write chain, unlike a histogram. Rare masks
		// (0/1, non-binary) get a second look.
		var seen [256]bool
		for y := 0; y < h; y++ {
			label8(labels.Pix[y*w:(y+1)*w], s.Pix[y*s.Stride:y*s.Stride+w], &seen)
		}
		var hist [256]int
		if !seenOnly(&seen, 0, 255) {
			for y := 0; y < h; y++ {
				for _, v := range s.Pix[y*s.Stride : y*s.Stride+w] {
					hist[v]++
				}
			}
		}
		threshold8(&mi, &hist, &seen, 255)
		if mi.CardValue == 1 {
			for y := 0; y < h; y++ {
				copy(labels.Pix[y*w:(y+1)*w], s.Pix[y*s.Stride:])
			}
		}
	case *image.Gray16:
		var zero, one, full, maxv int
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+2*w]
			for x := 0; x < w; x++ {
				v := int(row[2*x])<<8 | int(row[2*x+1])
				switch v {
				case 0:
					zero++
				case 1:
					one++
				case 0xffff:
					full++
				}
				if v > maxv {
					maxv = v
				}
				if v != 0 && v != 1 && v != 0xffff && mi.Example == 0 {
					mi.Example = v
				}
			}
		}
		mi.Max, mi.CardValue = maxv, 0xffff
		mi.NonBinary = w*h - zero - full
		if maxv <= 1 {
			mi.CardValue, mi.NonBinary, mi.Example = 1, 0, 0
		} else if one > 0 && mi.Example == 0 {
			mi.Example = 1
		}
		thr := (mi.CardValue + 1) / 2
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+2*w]
			o := labels.Pix[y*w : (y+1)*w]
			for x := range o {
				o[x] = b2u(int(row[2*x])<<8|int(row[2*x+1]) >= thr)
			}
		}
	default:
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		mi.Translucent = toRGBA(rgba, src)
		var hist [256]int
		var seen [256]bool
		for i := 0; i < w*h; i++ {
			p := rgba.Pix[4*i : 4*i+3 : 4*i+3]
			v := max(p[0], p[1], p[2])
			if p[0] != p[1] || p[1] != p[2] {
				mi.Colored++
			}
			hist[v]++
			seen[v] = true
			labels.Pix[i] = v // the value, thresholded below
		}
		threshold8(&mi, &hist, &seen, 255)
		thr := uint8((mi.CardValue + 1) / 2)
		for i, v := range labels.Pix {
			labels.Pix[i] = b2u(v >= thr)
		}
	}
	if info.Orientation != 1 {
		ow, oh := orientedSize(w, h, info.Orientation)
		out := resizeMask(dst, ow, oh)
		orient(out.Pix, labels.Pix, w, h, 1, info.Orientation)
		labels = out
	}
	mi.Card = countOnes(labels.Pix)
	return labels, mi, nil
}

// label8 writes row's labels at the 0/255 threshold (v >> 7) into o and marks the values seen.
// Eight pixels at a time, a word whose bytes are each 0 or 255 (all of a byte's bits equal) takes
// a few operations; other words go byte by byte.
func label8(o, row []uint8, seen *[256]bool) {
	const ones, high7 = 0x0101010101010101, 0xfefefefefefefefe
	o = o[:len(row)]
	x := 0
	for ; x+8 <= len(row); x += 8 {
		v := binary.LittleEndian.Uint64(row[x:])
		if (v^v<<1)&high7 == 0 {
			if v != 0 {
				seen[255] = true
			}
			if v != ^uint64(0) {
				seen[0] = true
			}
			binary.LittleEndian.PutUint64(o[x:], v&ones)
			continue
		}
		for i, b := range row[x : x+8] {
			seen[b] = true
			o[x+i] = b >> 7
		}
	}
	for ; x < len(row); x++ {
		seen[row[x]] = true
		o[x] = row[x] >> 7
	}
}

// seenOnly reports whether no value other than a and b was seen.
func seenOnly(seen *[256]bool, a, b int) bool {
	for v, ok := range seen {
		if ok && v != a && v != b {
			return false
		}
	}
	return true
}

// threshold8 fills Max, CardValue, NonBinary and Example from the values seen in an 8-bit mask;
// hist holds their counts, needed only when some value is neither 0 nor 255.
func threshold8(mi *MaskInfo, hist *[256]int, seen *[256]bool, full int) {
	for v := 255; v >= 0; v-- {
		if seen[v] {
			mi.Max = v
			break
		}
	}
	mi.CardValue = full
	if mi.Max <= 1 {
		mi.CardValue = 1
	}
	for v, ok := range seen {
		if ok && v != 0 && v != mi.CardValue {
			mi.NonBinary += hist[v]
			if mi.Example == 0 {
				mi.Example = v
			}
		}
	}
}

// countOnes counts the 1 labels, eight at a time.
func countOnes(pix []uint8) int {
	n, x := 0, 0
	for ; x+8 <= len(pix); x += 8 {
		n += bits.OnesCount64(binary.LittleEndian.Uint64(pix[x:]))
	}
	for _, v := range pix[x:] {
		n += int(v)
	}
	return n
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// checkSameSize returns an error unless the image and mask have the same size.
func checkSameSize(img *image.RGBA, m *Mask) error {
	b := img.Bounds()
	if b.Dx() != m.Width || b.Dy() != m.Height {
		return fmt.Errorf("image is %d×%d but mask is %d×%d", b.Dx(), b.Dy(), m.Width, m.Height)
	}
	return nil
}
