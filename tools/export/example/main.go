// Command cardseg-example runs a model exported by `cardseg-ort export` on one photo with ONNX
// Runtime and writes the card mask and an overlay:
//
//	go run . -model ../cardseg.rgb.onnx -image photo.jpg -mask mask.png -overlay overlay.png
//
// It takes either kind of exported model: an RGB variant (*.rgb.onnx: uint8 pixels of any
// size in, a uint8 mask out; all preprocessing is inside the model) or a plain network
// (image float32 [N,3,H,W] in, logits [N,2,H,W] out), for which it does the resizing and
// ImageNet normalisation itself, as an app would. It uses only the standard library and
// github.com/yalue/onnxruntime_go, so it can be copied into any Go project; it needs the ONNX
// Runtime shared library (-ort-lib, or $ORT_LIB).
//
// Inside the cardseg-ort repository this program is the template `cardseg-ort export
// --create-package` copies into every package; it is the only code there that calls
// onnxruntime_go directly instead of through package runtime, because users copy it alone.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/jpeg"
	"image/png"
	"math"
	"os"
	"runtime"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

func main() {
	modelPath := flag.String("model", "cardseg.rgb.onnx", "exported model (.onnx)")
	imagePath := flag.String("image", "", "photo to segment (JPEG or PNG)")
	maskPath := flag.String("mask", "mask.png", "where to write the mask (white = card)")
	overlayPath := flag.String("overlay", "overlay.png", "where to write the photo with the card tinted")
	lib := flag.String("ort-lib", os.Getenv("ORT_LIB"), "ONNX Runtime shared library (default: $ORT_LIB, else the platform's usual name)")
	threads := flag.Int("threads", 0, "ONNX Runtime intra-op threads (0: its default)")
	flag.Parse()
	if *imagePath == "" {
		fmt.Fprintln(os.Stderr, "usage: cardseg-example -model MODEL.onnx -image PHOTO.jpg [-mask mask.png] [-overlay overlay.png] [-ort-lib libonnxruntime.so]")
		os.Exit(2)
	}
	if err := run(*modelPath, *imagePath, *maskPath, *overlayPath, *lib, *threads); err != nil {
		fmt.Fprintln(os.Stderr, "cardseg-example:", err)
		os.Exit(1)
	}
}

func defaultLibrary() string {
	switch runtime.GOOS {
	case "darwin":
		return "libonnxruntime.dylib"
	case "windows":
		return "onnxruntime.dll"
	}
	return "libonnxruntime.so"
}

func run(modelPath, imagePath, maskPath, overlayPath, lib string, threads int) error {
	if lib == "" {
		lib = defaultLibrary()
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(); err != nil {
		return fmt.Errorf("load ONNX Runtime %s: %w", lib, err)
	}
	defer ort.DestroyEnvironment()

	photo, err := readImage(imagePath)
	if err != nil {
		return err
	}
	inputs, outputs, err := ort.GetInputOutputInfo(modelPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", modelPath, err)
	}
	if len(inputs) != 1 {
		return fmt.Errorf("%s has %d inputs; want one image input", modelPath, len(inputs))
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer opts.Destroy()
	if threads > 0 {
		if err := opts.SetIntraOpNumThreads(threads); err != nil {
			return err
		}
	}

	var mask *image.Gray
	start := time.Now()
	switch in := inputs[0]; in.DataType {
	case ort.TensorElementDataTypeUint8:
		mask, err = runRGB(modelPath, in, outputs, opts, photo)
	case ort.TensorElementDataTypeFloat:
		mask, err = runNetwork(modelPath, in, outputs, opts, photo)
	default:
		err = fmt.Errorf("%s takes %v; this example runs the uint8 RGB variants and float32 models (export float16 models with float32 I/O, the default)", modelPath, in.DataType)
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)

	if err := writePNG(maskPath, mask); err != nil {
		return err
	}
	if err := writePNG(overlayPath, overlay(photo, mask)); err != nil {
		return err
	}
	card := 0
	for _, v := range mask.Pix {
		if v > 127 {
			card++
		}
	}
	fmt.Printf("%s: %dx%d, card covers %.1f%% of the photo (%.0f ms incl. session start); wrote %s and %s\n",
		imagePath, photo.Rect.Dx(), photo.Rect.Dy(), 100*float64(card)/float64(len(mask.Pix)), float64(elapsed.Microseconds())/1000, maskPath, overlayPath)
	return nil
}

// runRGB feeds the photo's pixels as they are: the model resizes, normalises, and returns the
// mask at the photo's size.
func runRGB(modelPath string, in ort.InputOutputInfo, outputs []ort.InputOutputInfo, opts *ort.SessionOptions, photo *image.RGBA) (*image.Gray, error) {
	w, h := photo.Rect.Dx(), photo.Rect.Dy()
	pix := make([]uint8, 0, w*h*3)
	for y := 0; y < h; y++ {
		row := photo.Pix[y*photo.Stride:]
		for x := 0; x < w; x++ {
			pix = append(pix, row[4*x], row[4*x+1], row[4*x+2])
		}
	}
	shape := ort.NewShape(int64(h), int64(w), 3)
	if len(in.Dimensions) == 4 { // exported with --dynamic-batch: [N,H,W,3]
		shape = ort.NewShape(1, int64(h), int64(w), 3)
	}
	x, err := ort.NewTensor(shape, pix)
	if err != nil {
		return nil, err
	}
	defer x.Destroy()
	if !hasOutput(outputs, "mask") {
		return nil, fmt.Errorf("%s has no output named mask", modelPath)
	}
	sess, err := ort.NewDynamicAdvancedSession(modelPath, []string{in.Name}, []string{"mask"}, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", modelPath, err)
	}
	defer sess.Destroy()
	out := []ort.Value{nil}
	if err := sess.Run([]ort.Value{x}, out); err != nil {
		return nil, fmt.Errorf("run %s: %w", modelPath, err)
	}
	defer out[0].Destroy()
	m, ok := out[0].(*ort.Tensor[uint8])
	if !ok {
		return nil, fmt.Errorf("%s: mask is not uint8", modelPath)
	}
	mask := image.NewGray(image.Rect(0, 0, w, h))
	copy(mask.Pix, m.GetData())
	return mask, nil
}

// runNetwork does what the RGB variants do inside: resize the photo to the network's input
// size, normalise with ImageNet's statistics, run, and turn the logits back into a mask at the
// photo's size.
func runNetwork(modelPath string, in ort.InputOutputInfo, outputs []ort.InputOutputInfo, opts *ort.SessionOptions, photo *image.RGBA) (*image.Gray, error) {
	d := in.Dimensions
	if len(d) != 4 || d[1] != 3 || d[2] <= 0 || d[3] <= 0 {
		return nil, fmt.Errorf("%s: input %s has shape %v; want [N,3,H,W] with a fixed H and W", modelPath, in.Name, d)
	}
	h, w := int(d[2]), int(d[3])
	mean, std := normalization(modelPath)
	small := resizePlanes(photo, w, h)
	planes := make([]float32, 3*h*w)
	for c := 0; c < 3; c++ {
		for i, v := range small[c] {
			planes[c*h*w+i] = (v/255 - mean[c]) / std[c]
		}
	}
	x, err := ort.NewTensor(ort.NewShape(1, 3, int64(h), int64(w)), planes)
	if err != nil {
		return nil, err
	}
	defer x.Destroy()
	if !hasOutput(outputs, "logits") {
		return nil, fmt.Errorf("%s has no output named logits", modelPath)
	}
	logits, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 2, int64(h), int64(w)))
	if err != nil {
		return nil, err
	}
	defer logits.Destroy()
	sess, err := ort.NewDynamicAdvancedSession(modelPath, []string{in.Name}, []string{"logits"}, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", modelPath, err)
	}
	defer sess.Destroy()
	if err := sess.Run([]ort.Value{x}, []ort.Value{logits}); err != nil {
		return nil, fmt.Errorf("run %s: %w", modelPath, err)
	}
	l := logits.GetData()
	// Card where the card logit beats the background logit; the margin is resized to the
	// photo's size first so the mask's edges are smooth.
	margin := make([]float32, h*w)
	for i := range margin {
		margin[i] = l[h*w+i] - l[i]
	}
	pw, ph := photo.Rect.Dx(), photo.Rect.Dy()
	mask := image.NewGray(image.Rect(0, 0, pw, ph))
	for y := 0; y < ph; y++ {
		for x := 0; x < pw; x++ {
			if bilinear(margin, w, h, x, y, pw, ph) > 0 {
				mask.Pix[y*mask.Stride+x] = 255
			}
		}
	}
	return mask, nil
}

// normalization reads the model's cardseg.normalization metadata (ImageNet's statistics when
// absent).
func normalization(modelPath string) (mean, std [3]float32) {
	mean, std = [3]float32{0.485, 0.456, 0.406}, [3]float32{0.229, 0.224, 0.225}
	md, err := ort.GetModelMetadata(modelPath)
	if err != nil {
		return mean, std
	}
	defer md.Destroy()
	s, ok, err := md.LookupCustomMetadataMap("cardseg.normalization")
	if err != nil || !ok {
		return mean, std
	}
	var n struct {
		Mean, Std [3]float32
	}
	if json.Unmarshal([]byte(s), &n) == nil && n.Std[0] > 0 && n.Std[1] > 0 && n.Std[2] > 0 {
		return n.Mean, n.Std
	}
	return mean, std
}

func hasOutput(outputs []ort.InputOutputInfo, name string) bool {
	for _, o := range outputs {
		if o.Name == name {
			return true
		}
	}
	return false
}

// bilinear samples a w×h plane at output pixel (x, y) of a pw×ph grid, pixel centres aligned
// (as PyTorch's align_corners=False).
func bilinear(p []float32, w, h, x, y, pw, ph int) float32 {
	sx := math.Max((float64(x)+0.5)*float64(w)/float64(pw)-0.5, 0)
	sy := math.Max((float64(y)+0.5)*float64(h)/float64(ph)-0.5, 0)
	x0, y0 := min(int(sx), w-1), min(int(sy), h-1)
	x1, y1 := min(x0+1, w-1), min(y0+1, h-1)
	fx, fy := float32(sx-float64(x0)), float32(sy-float64(y0))
	top := p[y0*w+x0]*(1-fx) + p[y0*w+x1]*fx
	bottom := p[y1*w+x0]*(1-fx) + p[y1*w+x1]*fx
	return top*(1-fy) + bottom*fy
}

// resizePlanes scales a photo to w×h float planes (R, G, B; values 0–255) as the RGB variants
// do inside: separable linear interpolation with half-pixel centres and, when shrinking, the
// triangle filter widened by the scale factor so that every source pixel counts (ONNX Resize
// with antialias=1, the same as PIL and PyTorch's antialiased bilinear).
func resizePlanes(src *image.RGBA, w, h int) [3][]float32 {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	xs, ys := resampleTaps(sw, w), resampleTaps(sh, h)
	var out [3][]float32
	rows := make([]float32, sh*w) // horizontal pass: sh rows of w
	for c := 0; c < 3; c++ {
		for y := 0; y < sh; y++ {
			line := src.Pix[y*src.Stride:]
			for x, t := range xs {
				var acc float32
				for k, wt := range t.w {
					acc += wt * float32(line[4*(t.start+k)+c])
				}
				rows[y*w+x] = acc
			}
		}
		plane := make([]float32, h*w)
		for y, t := range ys {
			for x := 0; x < w; x++ {
				var acc float32
				for k, wt := range t.w {
					acc += wt * rows[(t.start+k)*w+x]
				}
				plane[y*w+x] = acc
			}
		}
		out[c] = plane
	}
	return out
}

// taps are one output sample's source range and normalised weights.
type taps struct {
	start int
	w     []float32
}

// resampleTaps computes, for each of m outputs resampled from n inputs, the linear filter's
// taps: centre (o+½)·n/m in input coordinates, radius 1 input pixel when enlarging and n/m
// when shrinking, weights 1−|distance|/radius normalised to sum 1.
func resampleTaps(n, m int) []taps {
	scale := float64(n) / float64(m)
	radius := math.Max(scale, 1)
	out := make([]taps, m)
	for o := range out {
		centre := (float64(o) + 0.5) * scale
		lo := max(int(centre-radius+0.5), 0)
		hi := min(int(centre+radius+0.5), n)
		var ws []float64
		var sum float64
		for i := lo; i < hi; i++ {
			wt := math.Max(0, 1-math.Abs((float64(i)+0.5-centre)/radius))
			ws = append(ws, wt)
			sum += wt
		}
		t := taps{start: lo, w: make([]float32, len(ws))}
		for k, wt := range ws {
			t.w[k] = float32(wt / sum)
		}
		out[o] = t
	}
	return out
}

// readImage decodes a JPEG or PNG into RGBA. (Phones record their rotation in EXIF; the
// standard library ignores it, so a rotated photo is segmented as stored.)
func readImage(path string) (*image.RGBA, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if rgba, ok := img.(*image.RGBA); ok && rgba.Rect.Min == (image.Point{}) {
		return rgba, nil
	}
	b := img.Bounds()
	rgba := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(rgba, rgba.Rect, img, b.Min, draw.Src)
	return rgba, nil
}

// overlay tints the card green and outlines it.
func overlay(photo *image.RGBA, mask *image.Gray) *image.RGBA {
	w, h := photo.Rect.Dx(), photo.Rect.Dy()
	out := image.NewRGBA(photo.Rect)
	copy(out.Pix, photo.Pix)
	tint := color.RGBA{0, 220, 90, 255}
	card := func(x, y int) bool {
		return x >= 0 && y >= 0 && x < w && y < h && mask.Pix[y*mask.Stride+x] > 127
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if !card(x, y) {
				continue
			}
			p := out.Pix[y*out.Stride+4*x:]
			edge := !card(x-1, y) || !card(x+1, y) || !card(x, y-1) || !card(x, y+1)
			a := 0.4
			if edge {
				a = 1
			}
			p[0] = uint8(float64(p[0])*(1-a) + float64(tint.R)*a)
			p[1] = uint8(float64(p[1])*(1-a) + float64(tint.G)*a)
			p[2] = uint8(float64(p[2])*(1-a) + float64(tint.B)*a)
		}
	}
	return out
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(path))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
