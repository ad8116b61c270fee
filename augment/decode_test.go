package augment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"testing"
)

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image, quality int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: quality}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withEXIF inserts an APP1 EXIF segment holding one orientation tag after a JPEG's SOI marker.
func withEXIF(jpg []byte, orientation uint16, bigEndian bool) []byte {
	var bo binary.AppendByteOrder = binary.LittleEndian
	tiff := []byte("II")
	if bigEndian {
		bo, tiff = binary.BigEndian, []byte("MM")
	}
	tiff = bo.AppendUint16(tiff, 42)
	tiff = bo.AppendUint32(tiff, 8)
	tiff = bo.AppendUint16(tiff, 2)      // two entries
	tiff = bo.AppendUint16(tiff, 0x010f) // Make, ASCII, skipped
	tiff = bo.AppendUint16(tiff, 2)
	tiff = bo.AppendUint32(tiff, 4)
	tiff = append(tiff, 'G', 'o', 0, 0)
	tiff = bo.AppendUint16(tiff, 0x0112) // Orientation, SHORT
	tiff = bo.AppendUint16(tiff, 3)
	tiff = bo.AppendUint32(tiff, 1)
	tiff = bo.AppendUint16(tiff, orientation)
	tiff = bo.AppendUint16(tiff, 0)
	tiff = bo.AppendUint32(tiff, 0)
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xff, 0xe1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(payload)+2))
	seg = append(seg, payload...)
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestDecodeColorModels(t *testing.T) {
	const w, h = 5, 3
	gray := image.NewGray(image.Rect(0, 0, w, h))
	gray16 := image.NewGray16(image.Rect(0, 0, w, h))
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	rgba64 := image.NewRGBA64(image.Rect(0, 0, w, h))
	nrgba64 := image.NewNRGBA64(image.Rect(0, 0, w, h))
	pal := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.NRGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 128}})
	opaque := image.NewRGBA(image.Rect(0, 0, w, h))
	want := func(x, y int) [3]uint8 { return [3]uint8{uint8(40 * x), uint8(60 * y), uint8(10 * (x + y))} }
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := want(x, y)
			gray.SetGray(x, y, color.Gray{c[0]})
			gray16.SetGray16(x, y, color.Gray16{uint16(c[0])<<8 | 0x7f})
			a := uint8(255)
			if x == 0 {
				a = 100 // translucent column
			}
			nrgba.SetNRGBA(x, y, color.NRGBA{c[0], c[1], c[2], a})
			rgba64.SetRGBA64(x, y, color.RGBA64{uint16(c[0]) << 8, uint16(c[1]) << 8, uint16(c[2]) << 8, 0xffff})
			nrgba64.SetNRGBA64(x, y, color.NRGBA64{uint16(c[0]) << 8, uint16(c[1]) << 8, uint16(c[2]) << 8, uint16(a) * 0x101})
			pal.SetColorIndex(x, y, uint8(x%2))
			opaque.SetRGBA(x, y, color.RGBA{c[0], c[1], c[2], 255})
		}
	}
	palColor := func(x, y int) [3]uint8 {
		if x%2 == 0 {
			return [3]uint8{10, 20, 30}
		}
		return [3]uint8{200, 100, 50}
	}
	grayColor := func(x, y int) [3]uint8 { v := want(x, y)[0]; return [3]uint8{v, v, v} }
	tests := []struct {
		name        string
		img         image.Image
		model       string
		bits        int
		translucent int
		pixel       func(x, y int) [3]uint8
	}{
		{"gray8", gray, "gray", 8, 0, grayColor},
		{"gray16", gray16, "gray", 16, 0, grayColor},
		{"rgb8", opaque, "rgb", 8, 0, want},
		{"rgba8", nrgba, "rgba", 8, h, want},
		{"rgb16", rgba64, "rgb", 16, 0, want},
		{"rgba16", nrgba64, "rgba", 16, h, want},
		{"paletted", pal, "paletted", 8, 6, palColor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, info, err := DecodeImage(encodePNG(t, tc.img))
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != PNG || info.Model != tc.model || info.BitDepth != tc.bits || info.Translucent != tc.translucent {
				t.Fatalf("info = %+v, want model %s, %d bits, %d translucent", info, tc.model, tc.bits, tc.translucent)
			}
			if info.Width != w || info.Height != h || img.Rect.Dx() != w || img.Rect.Dy() != h {
				t.Fatalf("size %v, info %d×%d, want %d×%d", img.Rect, info.Width, info.Height, w, h)
			}
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					got := img.RGBAAt(x, y)
					wc := tc.pixel(x, y)
					if got.R != wc[0] || got.G != wc[1] || got.B != wc[2] || got.A != 255 {
						t.Fatalf("pixel (%d,%d) = %v, want %v opaque", x, y, got, wc)
					}
				}
			}
		})
	}
}

func TestDecodeJPEGMatchesStdlib(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 37, 29)) // odd size: partial chroma blocks
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 7 % 251)
	}
	data := encodeJPEG(t, src, 90)
	img, info, err := DecodeImage(data)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != JPEG || info.Model != "rgb" || info.Orientation != 1 {
		t.Fatalf("info = %+v", info)
	}
	ref, _ := jpeg.Decode(bytes.NewReader(data))
	for y := 0; y < 29; y++ {
		for x := 0; x < 37; x++ {
			r, g, b, _ := ref.At(x, y).RGBA()
			got := img.RGBAAt(x, y)
			if got.R != uint8(r>>8) || got.G != uint8(g>>8) || got.B != uint8(b>>8) {
				t.Fatalf("(%d,%d) = %v, stdlib %d,%d,%d", x, y, got, r>>8, g>>8, b>>8)
			}
		}
	}
	grayJPEG := encodeJPEG(t, image.NewGray(image.Rect(0, 0, 8, 8)), 90)
	if _, info, err := DecodeImage(grayJPEG); err != nil || info.Model != "gray" {
		t.Fatalf("gray JPEG: %+v, %v", info, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 31)
	}
	pngData := encodePNG(t, img)
	jpgData := encodeJPEG(t, img, 90)
	corruptPNG := append([]byte{}, pngData...)
	copy(corruptPNG[len(corruptPNG)/2:], bytes.Repeat([]byte{0xaa}, 40))
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"png cut in half", pngData[:len(pngData)/2], ErrTruncated},
		{"png cut in header", pngData[:20], ErrTruncated},
		{"png signature only", pngData[:5], ErrTruncated},
		{"jpeg cut in half", jpgData[:len(jpgData)/2], ErrTruncated},
		{"jpeg without end marker", jpgData[:len(jpgData)-2], ErrTruncated},
		{"text", []byte("hello, this is not an image"), ErrUnsupportedFormat},
		{"gif", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), ErrUnsupportedFormat},
		{"png corrupt data", corruptPNG, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeImage(tc.data)
			_, _, merr := DecodeMask(tc.data)
			if !errors.Is(err, tc.want) || !errors.Is(merr, tc.want) {
				t.Fatalf("image err = %v, mask err = %v, want %v", err, merr, tc.want)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		_, _, err := Decoder{MaxPixels: 64*48 - 1}.Image(pngData, nil)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if _, _, err := (Decoder{MaxPixels: 64 * 48}).Image(pngData, nil); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
	})
}

func TestEXIFOrientation(t *testing.T) {
	// A 3×2 grid of 16-pixel blocks A..F, stored as
	//   A B C
	//   D E F
	// and the grid a viewer shows for each orientation, written out by hand.
	palette := map[byte]color.RGBA{
		'A': {255, 0, 0, 255}, 'B': {0, 255, 0, 255}, 'C': {0, 0, 255, 255},
		'D': {255, 255, 0, 255}, 'E': {0, 255, 255, 255}, 'F': {255, 0, 255, 255},
	}
	stored := []string{"ABC", "DEF"}
	src := image.NewRGBA(image.Rect(0, 0, 48, 32))
	for y := 0; y < 32; y++ {
		for x := 0; x < 48; x++ {
			src.SetRGBA(x, y, palette[stored[y/16][x/16]])
		}
	}
	plain := encodeJPEG(t, src, 95)
	shown := map[uint16][]string{
		1: {"ABC", "DEF"},
		2: {"CBA", "FED"},
		3: {"FED", "CBA"},
		4: {"DEF", "ABC"},
		5: {"AD", "BE", "CF"},
		6: {"DA", "EB", "FC"},
		7: {"FC", "EB", "DA"},
		8: {"CF", "BE", "AD"},
	}
	for o := uint16(1); o <= 8; o++ {
		for _, big := range []bool{false, true} {
			data := withEXIF(plain, o, big)
			img, info, err := DecodeImage(data)
			if err != nil {
				t.Fatalf("orientation %d: %v", o, err)
			}
			if info.Orientation != int(o) {
				t.Fatalf("orientation %d (big-endian %v): read %d", o, big, info.Orientation)
			}
			grid := shown[o]
			if info.Width != 16*len(grid[0]) || info.Height != 16*len(grid) || img.Rect.Dx() != info.Width {
				t.Fatalf("orientation %d: size %d×%d, image %v", o, info.Width, info.Height, img.Rect)
			}
			if info.StoredWidth != 48 || info.StoredHeight != 32 {
				t.Fatalf("orientation %d: stored %d×%d", o, info.StoredWidth, info.StoredHeight)
			}
			for r, line := range grid {
				for c := range line {
					got := img.RGBAAt(16*c+8, 16*r+8)
					want := palette[line[c]]
					if d := absDiff(got.R, want.R) + absDiff(got.G, want.G) + absDiff(got.B, want.B); d > 30 {
						t.Fatalf("orientation %d block (%d,%d) = %v, want %c %v", o, r, c, got, line[c], want)
					}
				}
			}
			// The mask decoder honours the same orientation.
			m, mi, err := DecodeMask(data)
			if err != nil || m.Width != info.Width || m.Height != info.Height || mi.Orientation != int(o) {
				t.Fatalf("orientation %d mask: %v, %+v", o, err, mi)
			}
		}
	}
	for _, bad := range []uint16{0, 9, 1000} {
		if _, info, err := DecodeImage(withEXIF(plain, bad, false)); err != nil || info.Orientation != 1 {
			t.Fatalf("invalid orientation %d: %+v, %v", bad, info, err)
		}
	}
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

func TestDecodeMask(t *testing.T) {
	const w, h = 4, 2
	gray := func(vals ...uint8) image.Image {
		g := image.NewGray(image.Rect(0, 0, w, h))
		copy(g.Pix, vals)
		return g
	}
	gray16 := func(vals ...uint16) image.Image {
		g := image.NewGray16(image.Rect(0, 0, w, h))
		for i, v := range vals {
			g.SetGray16(i%w, i/w, color.Gray16{v})
		}
		return g
	}
	rgb := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		v := uint8(255 * (i % 2))
		rgb.Pix[4*i], rgb.Pix[4*i+1], rgb.Pix[4*i+2], rgb.Pix[4*i+3] = v, v, v, 255
	}
	colored := image.NewRGBA(image.Rect(0, 0, w, h))
	copy(colored.Pix, rgb.Pix)
	colored.Pix[4*1+1] = 0 // pixel 1 is magenta, not white
	tests := []struct {
		name      string
		img       image.Image
		labels    []uint8
		card      int
		nonBinary int
		example   int
		colored   int
		binary    bool
	}{
		{"0/255", gray(0, 255, 255, 0, 0, 0, 255, 0), []uint8{0, 1, 1, 0, 0, 0, 1, 0}, 255, 0, 0, 0, true},
		{"0/1 means 1 is card", gray(0, 1, 1, 0, 0, 0, 1, 0), []uint8{0, 1, 1, 0, 0, 0, 1, 0}, 1, 0, 0, 0, true},
		{"all background", gray(0, 0, 0, 0, 0, 0, 0, 0), []uint8{0, 0, 0, 0, 0, 0, 0, 0}, 1, 0, 0, 0, true},
		{"antialiased", gray(0, 128, 127, 255, 0, 3, 255, 0), []uint8{0, 1, 0, 1, 0, 0, 1, 0}, 255, 3, 3, 0, false},
		{"0/1 with 255", gray(0, 1, 255, 0, 0, 0, 0, 0), []uint8{0, 0, 1, 0, 0, 0, 0, 0}, 255, 1, 1, 0, false},
		{"16-bit 0/65535", gray16(0, 65535, 0, 65535, 0, 0, 0, 0), []uint8{0, 1, 0, 1, 0, 0, 0, 0}, 65535, 0, 0, 0, true},
		{"16-bit 0/1", gray16(0, 1, 0, 1, 0, 0, 0, 0), []uint8{0, 1, 0, 1, 0, 0, 0, 0}, 1, 0, 0, 0, true},
		{"16-bit non-binary", gray16(0, 40000, 0, 65535, 0, 0, 20000, 0), []uint8{0, 1, 0, 1, 0, 0, 0, 0}, 65535, 2, 40000, 0, false},
		{"rgb 0/255", rgb, []uint8{0, 1, 0, 1, 0, 1, 0, 1}, 255, 0, 0, 0, true},
		{"colored", colored, []uint8{0, 1, 0, 1, 0, 1, 0, 1}, 255, 0, 0, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, mi, err := DecodeMask(encodePNG(t, tc.img))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Pix, tc.labels) {
				t.Fatalf("labels %v, want %v", m.Pix, tc.labels)
			}
			if mi.CardValue != tc.card || mi.NonBinary != tc.nonBinary || mi.Example != tc.example || mi.Colored != tc.colored || mi.Binary() != tc.binary {
				t.Fatalf("info %+v, want card %d, non-binary %d (e.g. %d), colored %d", mi, tc.card, tc.nonBinary, tc.example, tc.colored)
			}
			n := 0
			for _, v := range tc.labels {
				n += int(v)
			}
			if mi.Card != n {
				t.Fatalf("card pixels %d, want %d", mi.Card, n)
			}
		})
	}
}

// TestDecodeMaskWide checks the word-at-a-time labelling against a plain reference on masks wide
// enough to use it, with runs, isolated pixels and stray values inside words.
func TestDecodeMaskWide(t *testing.T) {
	const w, h = 37, 9
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name   string
		values []uint8
		card   int
	}{
		{"0/255", []uint8{0, 255}, 255},
		{"0/1", []uint8{0, 1}, 1},
		{"stray values", []uint8{0, 255, 7, 128, 200}, 255},
		{"0/1 with 255", []uint8{0, 1, 255}, 255},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := image.NewGray(image.Rect(0, 0, w, h))
			for i := range g.Pix {
				if rng.IntN(4) == 0 { // mostly runs, sometimes a random value
					g.Pix[i] = tc.values[rng.IntN(len(tc.values))]
				} else if i > 0 {
					g.Pix[i] = g.Pix[i-1]
				}
			}
			m, mi, err := DecodeMask(encodePNG(t, g))
			if err != nil {
				t.Fatal(err)
			}
			card, nonBinary := 0, 0
			for i, v := range g.Pix {
				want := uint8(0)
				if int(v) >= (tc.card+1)/2 {
					want = 1
				}
				if m.Pix[i] != want {
					t.Fatalf("pixel %d value %d: label %d, want %d", i, v, m.Pix[i], want)
				}
				card += int(want)
				if v != 0 && int(v) != tc.card {
					nonBinary++
				}
			}
			if mi.CardValue != tc.card || mi.Card != card || mi.NonBinary != nonBinary {
				t.Fatalf("info %+v, want card value %d, %d card pixels, %d non-binary", mi, tc.card, card, nonBinary)
			}
		})
	}
}

func TestDecodeReusesBuffer(t *testing.T) {
	data := encodePNG(t, image.NewRGBA(image.Rect(0, 0, 10, 10)))
	buf := image.NewRGBA(image.Rect(0, 0, 20, 20))
	img, _, err := Decoder{}.Image(data, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &img.Pix[0] != &buf.Pix[0] || img.Rect.Dx() != 10 || len(img.Pix) != 400 {
		t.Fatalf("buffer not reused: rect %v, len %d", img.Rect, len(img.Pix))
	}
}

// FuzzDecode feeds arbitrary bytes to both decoders: they must return an error or a consistent
// result, never panic. Run with: go test ./augment -fuzz FuzzDecode
func FuzzDecode(f *testing.F) {
	img := image.NewNRGBA(image.Rect(0, 0, 6, 4))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 13)
	}
	jpg := encodeJPEG(f, img, 80)
	f.Add(encodePNG(f, img))
	f.Add(jpg)
	f.Add(withEXIF(jpg, 6, false))
	f.Add(withEXIF(jpg, 3, true))
	f.Add(encodePNG(f, image.NewGray16(image.Rect(0, 0, 3, 3))))
	f.Add(encodePNG(f, image.NewPaletted(image.Rect(0, 0, 3, 3), color.Palette{color.Black, color.White})))
	f.Add([]byte("\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := Decoder{MaxPixels: 1 << 20}
		if img, info, err := d.Image(data, nil); err == nil {
			if img.Rect.Dx() != info.Width || img.Rect.Dy() != info.Height || len(img.Pix) != 4*info.Width*info.Height {
				t.Fatalf("image %v, info %+v, %d bytes", img.Rect, info, len(img.Pix))
			}
		}
		if m, info, err := d.Mask(data, nil); err == nil {
			if m.Width != info.Width || m.Height != info.Height || len(m.Pix) != m.Width*m.Height {
				t.Fatalf("mask %d×%d, info %+v", m.Width, m.Height, info)
			}
			for _, v := range m.Pix {
				if v > 1 {
					t.Fatalf("mask label %d", v)
				}
			}
		}
	})
}
