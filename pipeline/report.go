package pipeline

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Files eval writes at the top of its output folder.
const (
	ReportFile  = "report.html"
	MetricsFile = "metrics.json"
)

//go:embed report.html.tmpl
var reportTemplate string

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"f4":  func(v float64) string { return fmt.Sprintf("%.4f", v) },
	"pct": func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) },
	"fp4": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.4f", *v)
	},
	"rgb": func(c [3]uint8) template.CSS { return template.CSS(fmt.Sprintf("rgb(%d,%d,%d)", c[0], c[1], c[2])) },
}).Parse(reportTemplate))

// metricsFile is metrics.json: the eval result with every image's scores.
type metricsFile struct {
	*EvalResult
	Confidence *ConfidenceHistogram `json:"confidence_histogram,omitempty"`
	PerImage   []ImageResult        `json:"per_image"`
}

// reportData is what report.html.tmpl renders.
type reportData struct {
	*EvalResult
	Title       string
	Columns     []string
	Legend      []legendEntry
	Failures    []ImageResult
	Gallery     []ImageResult
	GalleryMore int
	ConfMaps    []ImageResult
	ConfMore    int
	Sorted      []ImageResult
	ScoreRows   []scoreRow
}

type legendEntry struct {
	Name  string
	Color [3]uint8
}

type scoreRow struct {
	Name             string
	Pooled, PerImage float64
}

// WriteReport writes metrics.json and report.html into opts.Out. report.html refers to the
// pictures by relative paths inside the folder, so the folder opens offline as a whole.
func WriteReport(res *EvalResult, opts EvalOptions) error {
	out := opts.Out
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("eval: output folder: %w", err)
	}
	res.Out = out
	res.Report = filepath.Join(out, ReportFile)
	mf := metricsFile{EvalResult: res, Confidence: res.ConfHist, PerImage: res.PerImage}
	b, err := json.MarshalIndent(mf, "", "  ")
	if err != nil {
		return fmt.Errorf("eval: encode %s: %w", MetricsFile, err)
	}
	if err := WriteFileAtomic(filepath.Join(out, MetricsFile), append(b, '\n')); err != nil {
		return err
	}

	limit := opts.ReportImages
	if limit <= 0 {
		limit = DefaultReportImages
	}
	d := reportData{
		EvalResult: res,
		Title:      filepath.Base(res.Model.Path),
		Columns:    PanelColumns[:4],
		Legend: []legendEntry{
			{"ground truth", rgb3(colTruth)}, {"prediction", rgb3(colPred)},
			{"true positive", rgb3(colTP)}, {"false positive", rgb3(colFP)}, {"false negative", rgb3(colFN)},
		},
		Failures: res.Worst,
	}
	if res.ConfHist != nil {
		d.Columns = PanelColumns
	}
	for _, r := range res.PerImage {
		if r.Panel != "" {
			if len(d.Gallery) < limit {
				d.Gallery = append(d.Gallery, r)
			} else {
				d.GalleryMore++
			}
		}
		if r.ConfidenceMap != "" {
			if len(d.ConfMaps) < limit {
				d.ConfMaps = append(d.ConfMaps, r)
			} else {
				d.ConfMore++
			}
		}
	}
	d.Sorted = append([]ImageResult(nil), res.PerImage...)
	sort.SliceStable(d.Sorted, func(i, j int) bool { return d.Sorted[i].IoU < d.Sorted[j].IoU })
	d.ScoreRows = []scoreRow{
		{"pixel accuracy", res.PixelAccuracy, res.PerImageMean.PixelAccuracy},
		{"mean IoU (both classes)", res.MeanIoU, res.PerImageMean.MeanIoU},
	}
	var html strings.Builder
	if err := reportTmpl.Execute(&html, d); err != nil {
		return fmt.Errorf("eval: render %s: %w", ReportFile, err)
	}
	return WriteFileAtomic(res.Report, []byte(html.String()))
}

func rgb3(c interface{ RGBA() (r, g, b, a uint32) }) [3]uint8 {
	r, g, b, _ := c.RGBA()
	return [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}
}
