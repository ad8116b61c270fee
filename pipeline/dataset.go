package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// A dataset folder holds DIR/{train,test}/{image,mask}: images are .jpg, .jpeg or .png, masks
// are PNGs (white card on black), and an image and its mask share the base name.

// Splits are the dataset's sub-folders, in report order.
var Splits = []string{"train", "test"}

// imageExts are the file extensions discovery accepts, for images and masks alike.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

// Sample is one image/mask pair.
type Sample struct {
	Split string `json:"split"`
	Name  string `json:"name"`  // the shared base name
	Image string `json:"image"` // path of the image file
	Mask  string `json:"mask"`  // path of the mask file
}

// Severity says what a finding does to training.
type Severity string

const (
	// Error: the pair (or split) cannot be used; training refuses the dataset unless told to
	// skip bad pairs.
	Error Severity = "error"
	// Warning: the loader handles it (e.g. drops an alpha channel), but the user should know.
	Warning Severity = "warning"
	// Info: how a file is read, for the record.
	Info Severity = "info"
)

// Code names a kind of dataset problem.
type Code string

const (
	MissingSplit      Code = "missing_split"      // a split folder or its image/mask folder is absent
	EmptySplit        Code = "empty_split"        // a split has no image/mask pairs
	UnmatchedImage    Code = "unmatched_image"    // an image has no mask of the same base name
	UnmatchedMask     Code = "unmatched_mask"     // a mask has no image of the same base name
	DuplicateName     Code = "duplicate_name"     // two images (or masks) share a base name
	UnsupportedFile   Code = "unsupported_file"   // not .jpg/.jpeg/.png; ignored
	Unreadable        Code = "unreadable"         // cannot be read or decoded
	Truncated         Code = "truncated"          // ends before its image data does
	SizeMismatch      Code = "size_mismatch"      // image and mask differ in size
	MaskNotBinary     Code = "mask_not_binary"    // values other than 0 and 255 (or 0 and 1), or colour
	MaskMaxOne        Code = "mask_max_one"       // a 0/1 mask: 1 is read as card
	Grayscale         Code = "grayscale"          // single-channel image; copied to RGB
	Alpha             Code = "alpha"              // alpha channel; dropped
	SixteenBit        Code = "16_bit"             // 16 bits per sample; reduced to 8
	CMYK              Code = "cmyk"               // CMYK JPEG; converted to RGB
	EXIFOrientation   Code = "exif_orientation"   // JPEG EXIF orientation; applied
	ExtensionMismatch Code = "extension_mismatch" // the content is not what the extension says
)

// severities maps each code to what it does to training.
var severities = map[Code]Severity{
	MissingSplit: Error, EmptySplit: Error, UnmatchedImage: Error, UnmatchedMask: Error,
	DuplicateName: Error, Unreadable: Error, Truncated: Error, SizeMismatch: Error,
	MaskNotBinary:   Error,
	UnsupportedFile: Warning, Grayscale: Warning, Alpha: Warning, SixteenBit: Warning,
	CMYK: Warning, EXIFOrientation: Warning, ExtensionMismatch: Warning,
	MaskMaxOne: Info,
}

// Finding is one problem, tied to a file where there is one.
type Finding struct {
	Code     Code     `json:"code"`
	Severity Severity `json:"severity"`
	Split    string   `json:"split,omitempty"`
	File     string   `json:"file,omitempty"` // relative to the dataset folder, with forward slashes
	Message  string   `json:"message"`
	sample   string   // base name of the pair the finding disqualifies, if any
}

// SplitReport counts one split.
type SplitReport struct {
	Name    string `json:"name"`
	Images  int    `json:"images"`
	Masks   int    `json:"masks"`
	Pairs   int    `json:"pairs"`
	Usable  int    `json:"usable"`  // pairs without errors
	Skipped int    `json:"skipped"` // pairs with errors
	samples []Sample
}

// Report is the result of checking a dataset folder.
type Report struct {
	Dir      string        `json:"dir"`
	OK       bool          `json:"ok"` // no errors
	Errors   int           `json:"errors"`
	Warnings int           `json:"warnings"`
	Infos    int           `json:"infos"`
	Splits   []SplitReport `json:"splits"`
	Findings []Finding     `json:"findings"`
}

// ErrBrokenDataset is matched (errors.Is) by the error of a dataset with errors.
var ErrBrokenDataset = errors.New("broken dataset")

// DatasetError refuses a dataset; it carries the full report.
type DatasetError struct{ Report *Report }

func (e *DatasetError) Error() string {
	r := e.Report
	var first []string
	for _, f := range r.Findings {
		if f.Severity == Error && len(first) < 3 {
			first = append(first, f.String())
		}
	}
	more := ""
	if r.Errors > len(first) {
		more = fmt.Sprintf("; and %d more", r.Errors-len(first))
	}
	return fmt.Sprintf("dataset %s has %d error(s): %s%s", r.Dir, r.Errors, strings.Join(first, "; "), more)
}

func (e *DatasetError) Is(target error) bool { return target == ErrBrokenDataset }

func (f Finding) String() string {
	if f.File != "" {
		return fmt.Sprintf("%s: %s: %s", f.File, f.Code, f.Message)
	}
	return fmt.Sprintf("%s: %s", f.Code, f.Message)
}

// Err returns a *DatasetError when the report has errors, nil otherwise.
func (r *Report) Err() error {
	if r.Errors == 0 {
		return nil
	}
	return &DatasetError{Report: r}
}

// Split returns the report of the named split, or nil.
func (r *Report) Split(name string) *SplitReport {
	for i := range r.Splits {
		if r.Splits[i].Name == name {
			return &r.Splits[i]
		}
	}
	return nil
}

// Usable returns the pairs of a split that have no errors, sorted by name.
func (r *Report) Usable(split string) []Sample {
	if s := r.Split(split); s != nil {
		return slices.Clone(s.samples)
	}
	return nil
}

// WriteText writes the report for people: the counts per split, then one line per finding,
// then a verdict.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "dataset %s\n\n", r.Dir)
	fmt.Fprintln(tw, "split\timages\tmasks\tpairs\tusable\tskipped")
	for _, s := range r.Splits {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", s.Name, s.Images, s.Masks, s.Pairs, s.Usable, s.Skipped)
	}
	if len(r.Findings) > 0 {
		fmt.Fprintln(tw)
		for _, f := range r.Findings {
			file := f.File
			if file == "" {
				file = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Severity, f.Code, file, f.Message)
		}
	}
	verdict := "OK"
	if r.Errors > 0 {
		verdict = "BROKEN"
	}
	fmt.Fprintf(tw, "\n%s: %d error(s), %d warning(s), %d info\n", verdict, r.Errors, r.Warnings, r.Infos)
	return tw.Flush()
}

// CheckOptions tune CheckDataset.
type CheckOptions struct {
	// Workers decoding files in parallel; 0 means GOMAXPROCS.
	Workers int
	// Decoder decodes the files (its zero value is the default limits).
	Decoder augment.Decoder
}

// CheckDataset discovers the pairs under dir and decodes every file, reporting each problem with
// the file's name. The error is for a folder that cannot be read at all; problems with the
// dataset's contents are findings in the report (see Report.Err).
func CheckDataset(ctx context.Context, dir string, opts CheckOptions) (*Report, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("dataset: %s is not a folder", dir)
	}
	r := &Report{Dir: dir}
	var pairs []Sample
	for _, split := range Splits {
		sr, sp, findings, err := discover(dir, split)
		if err != nil {
			return nil, err
		}
		r.Splits = append(r.Splits, sr)
		r.Findings = append(r.Findings, findings...)
		pairs = append(pairs, sp...)
	}
	findings, err := validate(ctx, dir, pairs, opts)
	if err != nil {
		return nil, err
	}
	r.Findings = append(r.Findings, findings...)

	bad := map[string]bool{} // split/name of pairs with an error
	for _, f := range r.Findings {
		if f.Severity == Error && f.sample != "" {
			bad[f.Split+"/"+f.sample] = true
		}
	}
	for i := range r.Splits {
		sr := &r.Splits[i]
		for _, s := range pairs {
			if s.Split != sr.Name {
				continue
			}
			if bad[s.Split+"/"+s.Name] {
				sr.Skipped++
			} else {
				sr.samples = append(sr.samples, s)
			}
		}
		sr.Usable = len(sr.samples)
	}
	order := map[string]int{}
	for i, s := range Splits {
		order[s] = i
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		if a.Split != b.Split {
			return order[a.Split] - order[b.Split]
		}
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return strings.Compare(string(a.Code), string(b.Code))
	})
	for _, f := range r.Findings {
		switch f.Severity {
		case Error:
			r.Errors++
		case Warning:
			r.Warnings++
		default:
			r.Infos++
		}
	}
	r.OK = r.Errors == 0
	return r, nil
}

// finding builds a Finding with the code's severity.
func finding(code Code, split, file, sample, format string, args ...any) Finding {
	return Finding{Code: code, Severity: severities[code], Split: split, File: file,
		Message: fmt.Sprintf(format, args...), sample: sample}
}

// discover lists one split's image and mask folders and pairs files by base name.
func discover(dir, split string) (SplitReport, []Sample, []Finding, error) {
	sr := SplitReport{Name: split}
	var findings []Finding
	if _, err := os.Stat(filepath.Join(dir, split)); errors.Is(err, fs.ErrNotExist) {
		findings = append(findings, finding(MissingSplit, split, split+"/", "", "folder %s/ is missing", split))
		return sr, nil, findings, nil
	}
	files := map[string]map[string][]string{} // kind → base name → file names
	for _, kind := range []string{"image", "mask"} {
		files[kind] = map[string][]string{}
		rel := split + "/" + kind
		entries, err := os.ReadDir(filepath.Join(dir, split, kind))
		if errors.Is(err, fs.ErrNotExist) {
			findings = append(findings, finding(MissingSplit, split, rel+"/", "", "folder %s/ is missing", rel))
			continue
		}
		if err != nil {
			return sr, nil, nil, fmt.Errorf("dataset: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || e.IsDir() {
				continue // hidden files (.DS_Store) and sub-folders are not part of the layout
			}
			ext := strings.ToLower(filepath.Ext(name))
			if !imageExts[ext] {
				findings = append(findings, finding(UnsupportedFile, split, rel+"/"+name, "",
					"extension %q is not .jpg, .jpeg or .png; ignored", filepath.Ext(name)))
				continue
			}
			base := strings.TrimSuffix(name, filepath.Ext(name))
			files[kind][base] = append(files[kind][base], name)
		}
	}
	images, masks := files["image"], files["mask"]
	for _, n := range images {
		sr.Images += len(n)
	}
	for _, n := range masks {
		sr.Masks += len(n)
	}
	var pairs []Sample
	for _, kind := range []string{"image", "mask"} {
		for base, names := range files[kind] {
			if len(names) > 1 {
				slices.Sort(names)
				for _, n := range names {
					findings = append(findings, finding(DuplicateName, split, split+"/"+kind+"/"+n, base,
						"%d %ss share the base name %q (%s); a pair needs exactly one", len(names), kind, base, strings.Join(names, ", ")))
				}
			}
		}
	}
	for base, names := range images {
		m, ok := masks[base]
		if !ok {
			for _, n := range names {
				findings = append(findings, finding(UnmatchedImage, split, split+"/image/"+n, "",
					"no mask named %s.png in %s/mask/", base, split))
			}
			continue
		}
		if len(names) == 1 && len(m) == 1 {
			pairs = append(pairs, Sample{Split: split, Name: base,
				Image: filepath.Join(dir, split, "image", names[0]),
				Mask:  filepath.Join(dir, split, "mask", m[0])})
		} else {
			// Counted as a pair, and disqualified by its duplicate_name finding.
			pairs = append(pairs, Sample{Split: split, Name: base})
		}
	}
	for base, names := range masks {
		if _, ok := images[base]; !ok {
			for _, n := range names {
				findings = append(findings, finding(UnmatchedMask, split, split+"/mask/"+n, "",
					"no image named %s.jpg, .jpeg or .png in %s/image/", base, split))
			}
		}
	}
	slices.SortFunc(pairs, func(a, b Sample) int { return strings.Compare(a.Name, b.Name) })
	sr.Pairs = len(pairs)
	if len(pairs) == 0 && !hasCode(findings, MissingSplit) {
		findings = append(findings, finding(EmptySplit, split, split+"/", "",
			"no image/mask pairs in %s/ (%d images, %d masks)", split, sr.Images, sr.Masks))
	}
	return sr, pairs, findings, nil
}

func hasCode(fs []Finding, c Code) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Code == c })
}

// validate decodes every pair in parallel and returns the findings in pair order.
func validate(ctx context.Context, dir string, pairs []Sample, opts CheckOptions) ([]Finding, error) {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([][]Finding, len(pairs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, max(len(pairs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = checkPair(dir, pairs[i], opts.Decoder)
			}
		}()
	}
	var err error
feed:
	for i, p := range pairs {
		if p.Image == "" {
			continue // a duplicate name; already reported
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("dataset check: %w", err)
	}
	var out []Finding
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

// relPath is path relative to dir with forward slashes, for reports.
func relPath(dir, path string) string {
	if r, err := filepath.Rel(dir, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

// checkPair decodes one image and its mask and reports what it finds.
func checkPair(dir string, s Sample, dec augment.Decoder) []Finding {
	var out []Finding
	imgRel, maskRel := relPath(dir, s.Image), relPath(dir, s.Mask)
	add := func(code Code, file, format string, args ...any) {
		out = append(out, finding(code, s.Split, file, s.Name, format, args...))
	}
	decodeErr := func(file string, err error) {
		switch {
		case errors.Is(err, augment.ErrTruncated):
			add(Truncated, file, "%v", err)
		default:
			add(Unreadable, file, "%v", err)
		}
	}
	var img augment.Info
	imgOK := false
	if data, err := os.ReadFile(s.Image); err != nil {
		add(Unreadable, imgRel, "%v", err)
	} else if _, info, err := dec.Image(data, nil); err != nil {
		decodeErr(imgRel, err)
	} else {
		img, imgOK = info, true
		describeColor(info, imgRel, s.Image, add, false)
	}
	var mask augment.MaskInfo
	maskOK := false
	if data, err := os.ReadFile(s.Mask); err != nil {
		add(Unreadable, maskRel, "%v", err)
	} else if _, info, err := dec.Mask(data, nil); err != nil {
		decodeErr(maskRel, err)
	} else {
		mask, maskOK = info, true
		describeColor(info.Info, maskRel, s.Mask, add, true)
		switch {
		case info.Colored > 0:
			add(MaskNotBinary, maskRel, "%d pixels are coloured (R, G, B differ); a mask is gray: 0 background, 255 card", info.Colored)
		case info.NonBinary > 0:
			add(MaskNotBinary, maskRel, "%d pixels are neither 0 nor %d (e.g. %d): anti-aliased or lossy mask; a mask holds only 0 (background) and 255 (card)",
				info.NonBinary, info.CardValue, info.Example)
		case info.CardValue == 1 && info.Max == 1:
			add(MaskMaxOne, maskRel, "values are 0 and 1, so 1 is read as card")
		}
	}
	if imgOK && maskOK && (img.Width != mask.Width || img.Height != mask.Height) {
		hint := ""
		if img.Orientation != 1 && img.StoredWidth == mask.Width && img.StoredHeight == mask.Height {
			hint = fmt.Sprintf("; the mask matches the image as stored, before its EXIF orientation (%s) is applied: rotate the mask to match or strip the tag",
				augment.OrientationName(img.Orientation))
		}
		add(SizeMismatch, imgRel, "image is %d×%d but mask %s is %d×%d%s", img.Width, img.Height, maskRel, mask.Width, mask.Height, hint)
	}
	return out
}

// describeColor reports colour models and metadata the loader converts.
func describeColor(info augment.Info, rel, path string, add func(Code, string, string, ...any), isMask bool) {
	if !isMask && info.Gray() {
		add(Grayscale, rel, "single-channel (%d-bit gray) image; the gray value is used for R, G and B", info.BitDepth)
	}
	if info.Alpha() {
		if info.Translucent > 0 {
			add(Alpha, rel, "has an alpha channel with %d translucent pixels; alpha is dropped, so their stored colour is used", info.Translucent)
		} else {
			add(Alpha, rel, "has an alpha channel (all opaque); alpha is dropped")
		}
	}
	if info.BitDepth == 16 {
		add(SixteenBit, rel, "16 bits per sample; reduced to 8")
	}
	if info.Model == "cmyk" {
		add(CMYK, rel, "CMYK JPEG; converted to RGB")
	}
	if info.Orientation != 1 {
		add(EXIFOrientation, rel, "EXIF orientation %d (%s) is applied: used as displayed, %d×%d (stored %d×%d)",
			info.Orientation, augment.OrientationName(info.Orientation), info.Width, info.Height, info.StoredWidth, info.StoredHeight)
	}
	ext := strings.ToLower(filepath.Ext(path))
	if (ext == ".png") != (info.Format == augment.PNG) {
		add(ExtensionMismatch, rel, "extension %s but the content is %s", filepath.Ext(path), strings.ToUpper(string(info.Format)))
	}
}

// DatasetOptions tune OpenDataset.
type DatasetOptions struct {
	CheckOptions
	// SkipBad trains on the usable pairs of a dataset with errors instead of refusing it.
	SkipBad bool
}

// Dataset is a checked dataset's usable pairs.
type Dataset struct {
	Dir         string
	Train, Test []Sample
	Report      *Report
}

// OpenDataset checks dir and returns its usable pairs. A dataset with errors is refused with a
// *DatasetError (carrying the report) unless opts.SkipBad; then the bad pairs are left out and
// counted in Report.Splits[i].Skipped. A training split without usable pairs is always refused.
func OpenDataset(ctx context.Context, dir string, opts DatasetOptions) (*Dataset, error) {
	r, err := CheckDataset(ctx, dir, opts.CheckOptions)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Dir: dir, Train: r.Usable("train"), Test: r.Usable("test"), Report: r}
	if err := r.Err(); err != nil && !opts.SkipBad {
		return d, err
	}
	if len(d.Train) == 0 {
		return d, fmt.Errorf("dataset %s: no usable training pairs (%w)", dir, &DatasetError{Report: r})
	}
	return d, nil
}
