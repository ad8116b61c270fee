package pipeline

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// Folders inside the eval output folder.
const (
	dirPredictions = "predictions"
	dirFailures    = "failures"
	dirConfidence  = "confidence"
	dirPlots       = "plots"
)

// Colours of the pictures; the report's legend uses the same ones.
var (
	colTruth = color.RGBA{0, 200, 83, 255}   // ground-truth card
	colPred  = color.RGBA{255, 145, 0, 255}  // predicted card
	colTP    = color.RGBA{0, 200, 83, 255}   // card predicted as card
	colFP    = color.RGBA{229, 57, 53, 255}  // background predicted as card
	colFN    = color.RGBA{30, 136, 229, 255} // card predicted as background
)

// PanelColumns names the pictures of a panel, left to right; the last only when the model gives
// probabilities.
var PanelColumns = []string{"image", "ground truth", "prediction", "errors (TP green, FP red, FN blue)", "confidence (max probability)"}

// visuals draws the per-image pictures eval writes, and keeps the worst images' panels until the
// end, when their ranks are known.
type visuals struct {
	out      string
	analyze  bool
	plots    bool
	failures int
	worst    []keptPanel // sorted like metrics.PerImage.Worst: IoU, then index
}

type keptPanel struct {
	index int
	iou   float64
	name  string
	panel *image.RGBA
}

func newVisuals(opts EvalOptions) (*visuals, error) {
	v := &visuals{out: opts.Out, analyze: opts.AnalyzePredictions, plots: opts.SavePlots, failures: opts.FindFailures}
	if v.out == "" {
		var asked []string
		if v.analyze {
			asked = append(asked, "--analyze-predictions")
		}
		if v.plots {
			asked = append(asked, "--save-plots")
		}
		if v.failures > 0 {
			asked = append(asked, "--find-failures")
		}
		if len(asked) > 0 {
			return nil, fmt.Errorf("eval: %s draw pictures into an output folder; give one with --out", strings.Join(asked, " and "))
		}
		return v, nil
	}
	dirs := []string{v.out}
	if v.analyze {
		dirs = append(dirs, filepath.Join(v.out, dirPredictions))
	}
	if v.failures > 0 {
		dirs = append(dirs, filepath.Join(v.out, dirFailures))
	}
	if v.plots {
		dirs = append(dirs, filepath.Join(v.out, dirConfidence), filepath.Join(v.out, dirPlots))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("eval: output folder: %w", err)
		}
	}
	return v, nil
}

func (v *visuals) active() bool { return v.analyze || v.plots || v.failures > 0 }

// fileStem is a file name for image index i: its number, for order and uniqueness, then its
// name with characters that need escaping in a URL replaced.
func fileStem(i int, name string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
	return fmt.Sprintf("%04d-%s", i, clean)
}

// thumbSize fits w×h into thumbSide on the longer side, never enlarging.
func thumbSize(w, h int) (int, int) {
	s := max(w, h)
	if s <= thumbSide {
		return w, h
	}
	return max(1, (w*thumbSide+s/2)/s), max(1, (h*thumbSide+s/2)/s)
}

// add draws image r's pictures: the panel when predictions are analysed or the image may be
// among the worst, the confidence map when plots are asked for.
func (v *visuals) add(r *ImageResult, l evalItem, s scoreMap, pred []uint8) error {
	if !v.active() {
		return nil
	}
	candidate := v.failures > 0 && (len(v.worst) < v.failures || r.IoU < v.worst[len(v.worst)-1].iou)
	if !v.analyze && !v.plots && !candidate {
		return nil
	}
	tw, th := thumbSize(l.mask.Width, l.mask.Height)
	img, _, err := augment.Resize(l.orig, nil, tw, th)
	if err != nil {
		return fmt.Errorf("picture of %s: %w", r.Name, err)
	}
	truth := make([]uint8, tw*th)
	resizeNearest(truth, tw, th, l.mask.Pix, l.mask.Width, l.mask.Height)
	p := make([]uint8, tw*th)
	resizeNearest(p, tw, th, pred, l.mask.Width, l.mask.Height)
	var conf *image.RGBA
	if s.hasConfidence() {
		conf = confidenceImage(s.resized(tw, th))
	}
	stem := fileStem(r.Index, r.Name)
	if v.plots && conf != nil {
		rel := dirConfidence + "/" + stem + ".png"
		if err := writePNG(filepath.Join(v.out, rel), conf); err != nil {
			return err
		}
		r.ConfidenceMap = rel
	}
	if !v.analyze && !candidate {
		return nil
	}
	panels := []*image.RGBA{img, tint(img, truth, colTruth), tint(img, p, colPred), errorMap(img, truth, p)}
	if conf != nil {
		panels = append(panels, conf)
	}
	panel := hstack(panels, 4)
	if v.analyze {
		rel := dirPredictions + "/" + stem + ".png"
		if err := writePNG(filepath.Join(v.out, rel), panel); err != nil {
			return err
		}
		r.Panel = rel
	}
	if candidate {
		k := keptPanel{index: r.Index, iou: r.IoU, name: r.Name, panel: panel}
		at := sort.Search(len(v.worst), func(i int) bool { return v.worst[i].iou > k.iou })
		v.worst = append(v.worst, keptPanel{})
		copy(v.worst[at+1:], v.worst[at:])
		v.worst[at] = k
		if len(v.worst) > v.failures {
			v.worst = v.worst[:v.failures]
		}
	}
	return nil
}

// finish writes the worst images' panels under their ranks and draws the plots.
func (v *visuals) finish(res *EvalResult) error {
	if len(v.worst) != len(res.Worst) {
		return fmt.Errorf("eval: kept %d failure panels for %d worst images", len(v.worst), len(res.Worst))
	}
	for rank, k := range v.worst {
		w := &res.Worst[rank]
		if w.Index != k.index {
			return fmt.Errorf("eval: failure %d is image %d but its panel is of image %d", rank+1, w.Index, k.index)
		}
		rel := fmt.Sprintf("%s/%02d-%s.png", dirFailures, rank+1, fileStem(k.index, k.name))
		if err := writePNG(filepath.Join(v.out, rel), k.panel); err != nil {
			return err
		}
		w.FailurePanel = rel
		res.PerImage[k.index].FailurePanel = rel
	}
	v.worst = nil
	if v.plots {
		return drawPlots(res, v.out)
	}
	return nil
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	err = enc.Encode(f, img)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("eval: write %s: %w", path, err)
	}
	return nil
}

// tint blends colour c over img where labels are card, and draws the region's outline solid.
func tint(img *image.RGBA, labels []uint8, c color.RGBA) *image.RGBA {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	out := image.NewRGBA(img.Rect)
	copy(out.Pix, img.Pix)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			if labels[i] == 0 {
				continue
			}
			o := out.Pix[y*out.Stride+4*x:]
			if edge(labels, w, h, x, y) {
				o[0], o[1], o[2] = c.R, c.G, c.B
				continue
			}
			o[0] = blend(o[0], c.R, 0.45)
			o[1] = blend(o[1], c.G, 0.45)
			o[2] = blend(o[2], c.B, 0.45)
		}
	}
	return out
}

// edge reports whether card pixel (x, y) touches background or the border.
func edge(labels []uint8, w, h, x, y int) bool {
	if x == 0 || y == 0 || x == w-1 || y == h-1 {
		return true
	}
	i := y*w + x
	return labels[i-1] == 0 || labels[i+1] == 0 || labels[i-w] == 0 || labels[i+w] == 0
}

func blend(a, b uint8, alpha float64) uint8 {
	return uint8(float64(a)*(1-alpha) + float64(b)*alpha + 0.5)
}

// errorMap shows the image in dimmed gray with true positives, false positives and false
// negatives in colour.
func errorMap(img *image.RGBA, truth, pred []uint8) *image.RGBA {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	out := image.NewRGBA(img.Rect)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			s := img.Pix[y*img.Stride+4*x:]
			g := uint8((299*int(s[0]) + 587*int(s[1]) + 114*int(s[2])) / 2000) // luma at half
			o := out.Pix[y*out.Stride+4*x:]
			o[0], o[1], o[2], o[3] = g, g, g, 255
			var c color.RGBA
			switch {
			case truth[i] == 1 && pred[i] == 1:
				c = colTP
			case truth[i] == 0 && pred[i] == 1:
				c = colFP
			case truth[i] == 1 && pred[i] == 0:
				c = colFN
			default:
				continue
			}
			o[0], o[1], o[2] = blend(g, c.R, 0.7), blend(g, c.G, 0.7), blend(g, c.B, 0.7)
		}
	}
	return out
}

// viridis holds matplotlib's viridis colour map at 9 evenly spaced stops.
var viridis = [...][3]float64{
	{68, 1, 84}, {71, 44, 122}, {59, 81, 139}, {44, 113, 142}, {33, 144, 141},
	{39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37},
}

// colormap maps t in [0,1] onto viridis.
func colormap(t float64) color.RGBA {
	t = max(0, min(1, t))
	f := t * float64(len(viridis)-1)
	i := min(int(f), len(viridis)-2)
	u := f - float64(i)
	a, b := viridis[i], viridis[i+1]
	return color.RGBA{
		uint8(a[0] + u*(b[0]-a[0]) + 0.5),
		uint8(a[1] + u*(b[1]-a[1]) + 0.5),
		uint8(a[2] + u*(b[2]-a[2]) + 0.5),
		255,
	}
}

// confidenceImage draws the per-pixel max class probability, 0.5 (a coin toss) dark purple to 1
// (certain) yellow.
func confidenceImage(s scoreMap) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, s.W, s.H))
	for i, v := range s.S {
		c := colormap(2 * (float64(s.Kind.confidence(v)) - 0.5))
		o := out.Pix[4*i : 4*i+4 : 4*i+4]
		o[0], o[1], o[2], o[3] = c.R, c.G, c.B, 255
	}
	return out
}

// hstack places pictures side by side on white, gap pixels apart, tops aligned.
func hstack(pics []*image.RGBA, gap int) *image.RGBA {
	if len(pics) == 0 {
		panic(errors.New("hstack of nothing"))
	}
	w, h := gap*(len(pics)-1), 0
	for _, p := range pics {
		w += p.Rect.Dx()
		h = max(h, p.Rect.Dy())
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range out.Pix {
		out.Pix[i] = 255
	}
	x := 0
	for _, p := range pics {
		pw, ph := p.Rect.Dx(), p.Rect.Dy()
		for y := 0; y < ph; y++ {
			copy(out.Pix[y*out.Stride+4*x:y*out.Stride+4*(x+pw)], p.Pix[y*p.Stride:y*p.Stride+4*pw])
		}
		x += pw + gap
	}
	return out
}
