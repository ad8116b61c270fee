package augment

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"
)

// Errors a decode can wrap; test them with errors.Is.
var (
	// ErrUnsupportedFormat: the bytes are neither JPEG nor PNG.
	ErrUnsupportedFormat = errors.New("not a JPEG or PNG file")
	// ErrTruncated: the file ends before the image data does (an interrupted copy or download).
	ErrTruncated = errors.New("truncated")
	// ErrCorrupt: the file is JPEG or PNG but its data cannot be decoded.
	ErrCorrupt = errors.New("corrupt image data")
	// ErrTooLarge: the header declares more pixels than the decoder's limit.
	ErrTooLarge = errors.New("image too large")
)

// Format is the container an image was stored in.
type Format string

const (
	JPEG Format = "jpeg"
	PNG  Format = "png"
)

// Info describes a decoded file as it was stored, before conversion to 8-bit RGBA.
type Info struct {
	Format Format `json:"format"`
	// Width and Height are as displayed: after the EXIF orientation is applied.
	Width  int `json:"width"`
	Height int `json:"height"`
	// StoredWidth and StoredHeight are the pixel grid in the file.
	StoredWidth  int `json:"stored_width"`
	StoredHeight int `json:"stored_height"`
	// Orientation is the EXIF orientation tag (1..8); 1 when absent or not JPEG.
	Orientation int `json:"orientation"`
	// Model names the stored pixel layout: "gray", "rgb", "rgba", "paletted", "cmyk".
	Model string `json:"model"`
	// BitDepth is the bits per sample: 8 or 16.
	BitDepth int `json:"bit_depth"`
	// Translucent counts pixels whose alpha is below full opacity (their alpha is dropped).
	Translucent int `json:"translucent"`
}

// Gray reports a single-channel image (its value is copied to R, G and B).
func (i Info) Gray() bool { return i.Model == "gray" }

// Alpha reports an image that stores an alpha channel (paletted images with transparency included).
func (i Info) Alpha() bool { return i.Model == "rgba" || i.Translucent > 0 }

// DefaultMaxPixels bounds the pixel count a Decoder accepts by default: 64 Mpx, more than any
// phone camera, small enough that a hostile header cannot exhaust memory.
const DefaultMaxPixels = 1 << 26

// Decoder decodes JPEG and PNG images and masks. The zero value uses DefaultMaxPixels.
type Decoder struct {
	// MaxPixels is the largest width×height accepted; 0 means DefaultMaxPixels.
	MaxPixels int
}

// DecodeImage decodes an image with the default Decoder.
func DecodeImage(data []byte) (*image.RGBA, Info, error) { return Decoder{}.Image(data, nil) }

// DecodeMask decodes a mask with the default Decoder.
func DecodeMask(data []byte) (*Mask, MaskInfo, error) { return Decoder{}.Mask(data, nil) }

// ReadImage reads and decodes the image file at path; errors name the file.
func ReadImage(path string) (*image.RGBA, Info, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Info{}, err
	}
	img, info, err := DecodeImage(data)
	if err != nil {
		return nil, info, fmt.Errorf("decode image %s: %w", path, err)
	}
	return img, info, nil
}

// ReadMask reads and decodes the mask file at path; errors name the file.
func ReadMask(path string) (*Mask, MaskInfo, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, MaskInfo{}, err
	}
	m, info, err := DecodeMask(data)
	if err != nil {
		return nil, info, fmt.Errorf("decode mask %s: %w", path, err)
	}
	return m, info, nil
}

// Image decodes JPEG or PNG bytes into 8-bit RGBA with alpha 255, EXIF orientation applied.
// When dst is non-nil and its buffer is large enough it is reused (and returned).
func (d Decoder) Image(data []byte, dst *image.RGBA) (*image.RGBA, Info, error) {
	src, info, err := d.decode(data)
	if err != nil {
		return nil, info, err
	}
	w, h := info.StoredWidth, info.StoredHeight
	if info.Orientation == 1 {
		dst = resizeRGBA(dst, w, h)
		info.Translucent = toRGBA(dst, src)
		return dst, info, nil
	}
	stored := image.NewRGBA(image.Rect(0, 0, w, h))
	info.Translucent = toRGBA(stored, src)
	ow, oh := orientedSize(w, h, info.Orientation)
	dst = resizeRGBA(dst, ow, oh)
	orient32(dst.Pix, stored.Pix, w, h, info.Orientation)
	return dst, info, nil
}

// decode sniffs the format, checks the size limit, decodes and reads the EXIF orientation.
func (d Decoder) decode(data []byte) (image.Image, Info, error) {
	var info Info
	info.Orientation = 1
	switch {
	case len(data) == 0:
		return nil, info, fmt.Errorf("%w: empty file", ErrTruncated)
	case bytes.HasPrefix(data, []byte("\xff\xd8")):
		info.Format = JPEG
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		info.Format = PNG
	case len(data) < 8 && (bytes.HasPrefix([]byte("\x89PNG\r\n\x1a\n"), data) || bytes.HasPrefix([]byte("\xff\xd8"), data)):
		return nil, info, fmt.Errorf("%w: %d bytes", ErrTruncated, len(data))
	default:
		return nil, info, ErrUnsupportedFormat
	}
	var cfg image.Config
	var err error
	if info.Format == JPEG {
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	} else {
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return nil, info, classify(err, info.Format, data)
	}
	limit := d.MaxPixels
	if limit <= 0 {
		limit = DefaultMaxPixels
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, info, fmt.Errorf("%w: %d×%d pixels", ErrCorrupt, cfg.Width, cfg.Height)
	}
	if cfg.Width > limit/cfg.Height {
		return nil, info, fmt.Errorf("%w: %d×%d pixels, limit %d", ErrTooLarge, cfg.Width, cfg.Height, limit)
	}
	var src image.Image
	if info.Format == JPEG {
		info.Orientation = jpegOrientation(data)
		src, err = jpeg.Decode(bytes.NewReader(data))
	} else {
		src, err = png.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, info, classify(err, info.Format, data)
	}
	b := src.Bounds()
	info.StoredWidth, info.StoredHeight = b.Dx(), b.Dy()
	info.Width, info.Height = orientedSize(b.Dx(), b.Dy(), info.Orientation)
	info.Model, info.BitDepth = describe(src)
	return src, info, nil
}

// classify maps a decoder error onto the package's error kinds. The decoders report a cut-off
// file in several ways (unexpected EOF, "short Huffman data", "not enough pixel data"), so a
// failed decode of a file that lacks its end marker (JPEG EOI, PNG IEND) counts as truncated.
func classify(err error, format Format, data []byte) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: file ends before the image data does (%d bytes)", ErrTruncated, len(data))
	}
	if !hasEndMarker(format, data) {
		return fmt.Errorf("%w: no %s end marker after %d bytes (%v)", ErrTruncated, format, len(data), err)
	}
	var ju jpeg.UnsupportedError
	var pu png.UnsupportedError
	if errors.As(err, &ju) || errors.As(err, &pu) {
		return fmt.Errorf("%w: unsupported variant: %v", ErrCorrupt, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// pngEnd is the IEND chunk that closes every PNG: zero length, type, CRC.
var pngEnd = []byte("\x00\x00\x00\x00IEND\xae\x42\x60\x82")

// hasEndMarker reports whether data ends (ignoring trailing padding for JPEG) with the format's
// end marker.
func hasEndMarker(format Format, data []byte) bool {
	if format == PNG {
		return bytes.Contains(data[max(0, len(data)-64):], pngEnd)
	}
	tail := bytes.TrimRight(data[max(0, len(data)-4096):], "\x00\r\n ")
	return bytes.HasSuffix(tail, []byte("\xff\xd9"))
}

// describe names the stored pixel layout of a decoded image.
func describe(img image.Image) (model string, bits int) {
	switch img.(type) {
	case *image.Gray:
		return "gray", 8
	case *image.Gray16:
		return "gray", 16
	case *image.YCbCr, *image.RGBA:
		return "rgb", 8
	case *image.NRGBA:
		return "rgba", 8
	case *image.RGBA64:
		return "rgb", 16
	case *image.NRGBA64:
		return "rgba", 16
	case *image.Paletted:
		return "paletted", 8
	case *image.CMYK:
		return "cmyk", 8
	}
	return "other", 8
}

// resizeRGBA returns dst resized to w×h, reusing its buffer when it is large enough.
func resizeRGBA(dst *image.RGBA, w, h int) *image.RGBA {
	n := 4 * w * h
	if dst == nil || cap(dst.Pix) < n {
		return image.NewRGBA(image.Rect(0, 0, w, h))
	}
	dst.Pix = dst.Pix[:n]
	dst.Stride = 4 * w
	dst.Rect = image.Rect(0, 0, w, h)
	return dst
}
