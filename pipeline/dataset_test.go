package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// photo is a w×h RGB test picture.
func photo(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, color.RGBA{uint8(4 * x), uint8(5 * y), 120, 255})
		}
	}
	return img
}

// cardMask is a w×h mask (0/255 by default) with a rectangle of card in the middle.
func cardMask(w, h int, card uint8) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := h / 4; y < 3*h/4; y++ {
		for x := w / 4; x < 3*w/4; x++ {
			m.SetGray(x, y, color.Gray{card})
		}
	}
	return m
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// exifJPEG inserts an EXIF APP1 segment with the given orientation after the SOI marker.
func exifJPEG(jpg []byte, orientation uint16) []byte {
	le := binary.LittleEndian
	tiff := []byte("II")
	tiff = le.AppendUint16(tiff, 42)
	tiff = le.AppendUint32(tiff, 8)
	tiff = le.AppendUint16(tiff, 1)
	tiff = le.AppendUint16(tiff, 0x0112)
	tiff = le.AppendUint16(tiff, 3)
	tiff = le.AppendUint32(tiff, 1)
	tiff = le.AppendUint16(tiff, orientation)
	tiff = le.AppendUint16(tiff, 0)
	tiff = le.AppendUint32(tiff, 0)
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := binary.BigEndian.AppendUint16([]byte{0xff, 0xe1}, uint16(len(payload)+2))
	out := append(append(append([]byte{}, jpg[:2]...), seg...), payload...)
	return append(out, jpg[2:]...)
}

// opaque paints img opaque gray.
func opaque[T draw.Image](img T) T {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			img.Set(x, y, color.Gray{100})
		}
	}
	return img
}

func writeFile(t testing.TB, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writePair writes split/image/name.jpg and split/mask/name.png, both w×h.
func writePair(t testing.TB, dir, split, name string, w, h int) {
	writeFile(t, dir, split+"/image/"+name+".jpg", jpegBytes(t, photo(w, h)))
	writeFile(t, dir, split+"/mask/"+name+".png", pngBytes(t, cardMask(w, h, 255)))
}

func TestCheckDatasetFindings(t *testing.T) {
	dir := t.TempDir()
	const w, h = 40, 30
	for _, n := range []string{"good1", "good2"} {
		writePair(t, dir, "train", n, w, h)
	}
	writePair(t, dir, "test", "good3", w, h)
	goodMask := pngBytes(t, cardMask(w, h, 255))
	jpg := jpegBytes(t, photo(w, h))

	// One file per bad-input case.
	writeFile(t, dir, "train/image/orphan.jpg", jpg)
	writeFile(t, dir, "train/mask/lonely.png", goodMask)
	writeFile(t, dir, "train/image/cut.jpg", jpg[:len(jpg)/2])
	writeFile(t, dir, "train/mask/cut.png", goodMask)
	writeFile(t, dir, "train/image/junk.jpg", []byte("this is not a picture"))
	writeFile(t, dir, "train/mask/junk.png", goodMask)
	writeFile(t, dir, "train/image/small.jpg", jpg)
	writeFile(t, dir, "train/mask/small.png", pngBytes(t, cardMask(w/2, h/2, 255)))
	writeFile(t, dir, "train/image/soft.jpg", jpg)
	soft := cardMask(w, h, 255)
	soft.SetGray(w/4, h/4, color.Gray{128})
	writeFile(t, dir, "train/mask/soft.png", pngBytes(t, soft))
	writeFile(t, dir, "train/image/colour.jpg", jpg)
	colour := opaque(image.NewRGBA(image.Rect(0, 0, w, h)))
	colour.Set(3, 3, color.RGBA{255, 0, 0, 255})
	writeFile(t, dir, "train/mask/colour.png", pngBytes(t, colour))
	writeFile(t, dir, "train/image/ones.jpg", jpg)
	writeFile(t, dir, "train/mask/ones.png", pngBytes(t, cardMask(w, h, 1)))
	gray := image.NewGray(image.Rect(0, 0, w, h))
	writeFile(t, dir, "train/image/gray.png", pngBytes(t, gray))
	writeFile(t, dir, "train/mask/gray.png", goodMask)
	rgba := opaque(image.NewNRGBA(image.Rect(0, 0, w, h)))
	rgba.Set(0, 0, color.NRGBA{1, 2, 3, 4})
	writeFile(t, dir, "train/image/rgba.png", pngBytes(t, rgba))
	writeFile(t, dir, "train/mask/rgba.png", goodMask)
	writeFile(t, dir, "train/image/deep.png", pngBytes(t, opaque(image.NewRGBA64(image.Rect(0, 0, w, h)))))
	writeFile(t, dir, "train/mask/deep.png", goodMask)
	// EXIF orientation 6 (rotated 90° clockwise): displayed h×w.
	writeFile(t, dir, "train/image/rotated.jpg", exifJPEG(jpg, 6))
	writeFile(t, dir, "train/mask/rotated.png", pngBytes(t, cardMask(h, w, 255)))
	writeFile(t, dir, "train/image/rotmask.jpg", exifJPEG(jpg, 6))
	writeFile(t, dir, "train/mask/rotmask.png", goodMask) // matches the stored, not the displayed image
	writeFile(t, dir, "train/image/dup.jpg", jpg)
	writeFile(t, dir, "train/image/dup.png", pngBytes(t, photo(w, h)))
	writeFile(t, dir, "train/mask/dup.png", goodMask)
	writeFile(t, dir, "train/image/notes.txt", []byte("notes"))
	writeFile(t, dir, "train/image/.DS_Store", []byte("ignored silently"))
	writeFile(t, dir, "train/image/fake.jpg", pngBytes(t, photo(w, h)))
	writeFile(t, dir, "train/mask/fake.png", goodMask)

	r, err := CheckDataset(context.Background(), dir, CheckOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		code     Code
		file     string
		severity Severity
		says     string // part of the message
	}{
		{UnmatchedImage, "train/image/orphan.jpg", Error, "no mask named orphan.png"},
		{UnmatchedMask, "train/mask/lonely.png", Error, "no image named lonely"},
		{Truncated, "train/image/cut.jpg", Error, "truncated"},
		{Unreadable, "train/image/junk.jpg", Error, "not a JPEG or PNG"},
		{SizeMismatch, "train/image/small.jpg", Error, "image is 40×30 but mask train/mask/small.png is 20×15"},
		{MaskNotBinary, "train/mask/soft.png", Error, "e.g. 128"},
		{MaskNotBinary, "train/mask/colour.png", Error, "coloured"},
		{MaskMaxOne, "train/mask/ones.png", Info, "1 is read as card"},
		{Grayscale, "train/image/gray.png", Warning, "gray"},
		{Alpha, "train/image/rgba.png", Warning, "1 translucent"},
		{SixteenBit, "train/image/deep.png", Warning, "16 bits"},
		{EXIFOrientation, "train/image/rotated.jpg", Warning, "rotated 90° clockwise"},
		{SizeMismatch, "train/image/rotmask.jpg", Error, "matches the image as stored"},
		{DuplicateName, "train/image/dup.jpg", Error, "dup.jpg, dup.png"},
		{DuplicateName, "train/image/dup.png", Error, "share the base name"},
		{UnsupportedFile, "train/image/notes.txt", Warning, ".txt"},
		{ExtensionMismatch, "train/image/fake.jpg", Warning, "content is PNG"},
	}
	for _, tc := range tests {
		t.Run(string(tc.code)+" "+tc.file, func(t *testing.T) {
			for _, f := range r.Findings {
				if f.Code == tc.code && f.File == tc.file {
					if f.Severity != tc.severity || !strings.Contains(f.Message, tc.says) {
						t.Fatalf("finding %+v, want severity %s and a message with %q", f, tc.severity, tc.says)
					}
					return
				}
			}
			t.Fatalf("no %s finding for %s in %v", tc.code, tc.file, r.Findings)
		})
	}
	for _, f := range r.Findings {
		if strings.Contains(f.File, ".DS_Store") || strings.HasPrefix(f.File, "train/image/good") {
			t.Errorf("unexpected finding %v", f)
		}
	}

	usable := map[string]bool{}
	for _, s := range r.Usable("train") {
		usable[s.Name] = true
	}
	for name, want := range map[string]bool{
		"good1": true, "good2": true, "ones": true, "gray": true, "rgba": true, "deep": true, "rotated": true, "fake": true,
		"cut": false, "junk": false, "small": false, "soft": false, "colour": false, "rotmask": false, "dup": false,
	} {
		if usable[name] != want {
			t.Errorf("pair %s usable = %v, want %v", name, usable[name], want)
		}
	}
	train := r.Split("train")
	if train.Images != 17 || train.Masks != 16 || train.Pairs != 15 || train.Usable != 8 || train.Skipped != 7 {
		t.Errorf("train counts %+v", *train)
	}
	if r.OK || r.Errors != 10 || r.Warnings != 7 || r.Infos != 1 {
		t.Errorf("totals ok=%v errors=%d warnings=%d infos=%d", r.OK, r.Errors, r.Warnings, r.Infos)
	}
	err = r.Err()
	var de *DatasetError
	if !errors.Is(err, ErrBrokenDataset) || !errors.As(err, &de) || !strings.Contains(err.Error(), "10 error(s)") {
		t.Fatalf("Err() = %v", err)
	}

	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"train/image/cut.jpg", "truncated", "BROKEN: 10 error(s)", "usable"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || len(back.Findings) != len(r.Findings) || back.Errors != r.Errors {
		t.Fatalf("JSON round trip: %v", err)
	}

	// Training refuses the dataset unless told to skip, then uses the usable pairs.
	if _, err := OpenDataset(context.Background(), dir, DatasetOptions{}); !errors.Is(err, ErrBrokenDataset) {
		t.Fatalf("OpenDataset without SkipBad: %v", err)
	}
	ds, err := OpenDataset(context.Background(), dir, DatasetOptions{SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Train) != 8 || len(ds.Test) != 1 || ds.Report.Split("train").Skipped != 7 {
		t.Fatalf("skip-bad dataset: %d train, %d test", len(ds.Train), len(ds.Test))
	}
}

func TestCheckDatasetSplits(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		code  Code
		file  string
	}{
		{"missing test split", func(t *testing.T, dir string) {
			writePair(t, dir, "train", "a", 8, 8)
		}, MissingSplit, "test/"},
		{"missing mask folder", func(t *testing.T, dir string) {
			writePair(t, dir, "train", "a", 8, 8)
			writeFile(t, dir, "test/image/b.jpg", jpegBytes(t, photo(8, 8)))
		}, MissingSplit, "test/mask/"},
		{"empty split", func(t *testing.T, dir string) {
			writePair(t, dir, "train", "a", 8, 8)
			for _, d := range []string{"test/image", "test/mask"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}, EmptySplit, "test/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			r, err := CheckDataset(context.Background(), dir, CheckOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range r.Findings {
				if f.Code == tc.code && f.File == tc.file && f.Severity == Error {
					return
				}
			}
			t.Fatalf("no %s error for %s: %v", tc.code, tc.file, r.Findings)
		})
	}
	if _, err := CheckDataset(context.Background(), filepath.Join(t.TempDir(), "nope"), CheckOptions{}); err == nil {
		t.Fatal("missing dataset folder accepted")
	}
}

func TestCheckDatasetClean(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b"} {
		writePair(t, dir, "train", n, 16, 12)
	}
	writePair(t, dir, "test", "c", 16, 12)
	r, err := CheckDataset(context.Background(), dir, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Err() != nil || len(r.Findings) != 0 || len(r.Usable("train")) != 2 || len(r.Usable("test")) != 1 {
		t.Fatalf("clean dataset: %+v", r)
	}
}
