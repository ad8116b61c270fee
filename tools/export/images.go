package export

import (
	"fmt"
	"image"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/augment"
	"github.com/cardseg-ort/cardseg-ort/graphs/step"
)

// imageExts are the files the decoder reads.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

// listImages finds the images of a folder in name order. dir may be a dataset (DIR/SPLIT/image
// for the first of splits that exists), a split (DIR/image) or a plain folder of images.
// It reports which folder the images came from.
func listImages(dir string, splits ...string) ([]string, string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, "", fmt.Errorf("images: %w", err)
	}
	if !st.IsDir() {
		return nil, "", fmt.Errorf("images: %s is not a folder", dir)
	}
	var candidates []string
	for _, s := range splits {
		candidates = append(candidates, filepath.Join(dir, s, "image"))
	}
	candidates = append(candidates, filepath.Join(dir, "image"), dir)
	for _, c := range candidates {
		entries, err := os.ReadDir(c)
		if err != nil {
			continue
		}
		var files []string
		for _, e := range entries {
			if !e.IsDir() && imageExts[strings.ToLower(filepath.Ext(e.Name()))] && !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(c, e.Name()))
			}
		}
		if len(files) > 0 {
			sort.Strings(files)
			return files, c, nil
		}
	}
	want := "*.jpg, *.jpeg or *.png files"
	if len(splits) > 0 {
		want += fmt.Sprintf(" (in %s/image, image/ or the folder itself)", strings.Join(splits, "/image or "))
	}
	return nil, "", fmt.Errorf("images: %s holds no %s", dir, want)
}

// spread picks n of the files evenly spaced over the list (all when n <= 0 or n >= len), so a
// subset covers a dataset sorted by name rather than its first few scenes.
func spread(files []string, n int) []string {
	if n <= 0 || n >= len(files) {
		return files
	}
	out := make([]string, n)
	for i := range out {
		out[i] = files[i*len(files)/n]
	}
	return out
}

// loadedImage is one sample image: as decoded (for the RGB variants, which resize inside)
// and resized to the network's input size (bilinear, as evaluation does).
type loadedImage struct {
	Path    string
	Orig    *image.RGBA
	Resized *image.RGBA
}

func loadImages(paths []string, height, width int) ([]loadedImage, error) {
	out := make([]loadedImage, 0, len(paths))
	for _, p := range paths {
		img, _, err := augment.ReadImage(p)
		if err != nil {
			return nil, fmt.Errorf("sample image %s: %w", p, err)
		}
		r := img
		if img.Rect.Dx() != width || img.Rect.Dy() != height {
			if r, _, err = augment.Resize(img, nil, width, height); err != nil {
				return nil, fmt.Errorf("sample image %s: %w", p, err)
			}
		}
		out = append(out, loadedImage{Path: p, Orig: img, Resized: r})
	}
	return out, nil
}

// normalize writes img (at the network's size) as the network's input planes: RGB scaled to
// [0,1], then ImageNet's mean and standard deviation (step.Mean, step.Std).
func normalize(dst []float32, img *image.RGBA) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	n := w * h
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				dst[c*n+y*w+x] = (float32(row[4*x+c])/255 - step.Mean[c]) / step.Std[c]
			}
		}
	}
}

// hwc returns img's pixels as uint8 RGB rows (height × width × 3), the RGB variants' input.
func hwc(img *image.RGBA) []uint8 {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	out := make([]uint8, 0, w*h*3)
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			out = append(out, row[4*x], row[4*x+1], row[4*x+2])
		}
	}
	return out
}
