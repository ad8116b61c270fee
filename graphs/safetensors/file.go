package safetensors

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every error that reports a file breaking the format.
var ErrMalformed = errors.New("malformed safetensors")

// MaxHeaderSize bounds the JSON header, as the reference implementation does (100 MB), so
// that a corrupt length cannot make a reader allocate without limit.
const MaxHeaderSize = 100_000_000

const metadataKey = "__metadata__"

// File is the content of one safetensors file.
type File struct {
	Tensors  map[string]Tensor
	Metadata map[string]string // nil or empty: no "__metadata__" entry
}

// Names returns the tensor names, sorted.
func (f File) Names() []string {
	names := make([]string, 0, len(f.Tensors))
	for name := range f.Tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// ReadFile reads and validates the safetensors file at path.
func ReadFile(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", path, err)
	}
	f, err := parse(b)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", path, err)
	}
	return f, nil
}

// Read reads a whole safetensors file from r and validates it. The tensors' Data share one
// buffer.
func Read(r io.Reader) (File, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return File{}, fmt.Errorf("read safetensors: %w", err)
	}
	return parse(b)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// span is one tensor's byte range in the data buffer.
type span struct {
	name       string
	begin, end int64
}

func parse(b []byte) (File, error) {
	if len(b) < 8 {
		return File{}, malformed("file is %d bytes, too short for the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderSize {
		return File{}, malformed("header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return File{}, malformed("header length %d exceeds the %d bytes that follow it (header larger than file)", n, len(b)-8)
	}
	header, data := b[8:8+n], b[8+n:]
	entries, err := splitHeader(header)
	if err != nil {
		return File{}, err
	}
	f := File{Tensors: make(map[string]Tensor, len(entries))}
	spans := make([]span, 0, len(entries))
	for _, e := range entries {
		if e.name == metadataKey {
			if f.Metadata, err = parseMetadata(e.value); err != nil {
				return File{}, err
			}
			continue
		}
		t, begin, end, err := parseEntry(e.name, e.value, int64(len(data)))
		if err != nil {
			return File{}, err
		}
		t.Data = data[begin:end:end]
		f.Tensors[e.name] = t
		spans = append(spans, span{e.name, begin, end})
	}
	if err := checkCoverage(spans, int64(len(data))); err != nil {
		return File{}, err
	}
	return f, nil
}

type rawEntry struct {
	name  string
	value json.RawMessage
}

// splitHeader splits the header object into its entries in file order, rejecting duplicate
// names, which a map decode would silently collapse.
func splitHeader(header []byte) ([]rawEntry, error) {
	if !utf8.Valid(header) {
		return nil, malformed("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, malformed("header is not a JSON object")
	}
	var entries []rawEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed("header JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, malformed("header JSON: key %v is not a string", tok)
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, malformed("header JSON at %q: %v", name, err)
		}
		if seen[name] {
			return nil, malformed("tensor %q appears twice in the header", name)
		}
		seen[name] = true
		entries = append(entries, rawEntry{name, value})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, malformed("header JSON object is not closed")
	}
	// The writer pads the header with spaces to an 8-byte boundary; nothing else may follow.
	if rest := bytes.Trim(header[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, malformed("header has %d bytes of trailing data after the JSON object", len(rest))
	}
	return entries, nil
}

func parseMetadata(value json.RawMessage) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(value, &m); err != nil {
		return nil, malformed("%s must map strings to strings: %v", metadataKey, err)
	}
	return m, nil
}

// parseEntry decodes one tensor's header entry and checks it against the data buffer size.
func parseEntry(name string, value json.RawMessage, dataLen int64) (t Tensor, begin, end int64, err error) {
	if name == "" {
		return Tensor{}, 0, 0, malformed("a tensor has an empty name")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(value, &fields); err != nil || fields == nil {
		return Tensor{}, 0, 0, malformed("tensor %q: entry is not a JSON object", name)
	}
	for key := range fields {
		if key != "dtype" && key != "shape" && key != "data_offsets" {
			return Tensor{}, 0, 0, malformed("tensor %q: unknown field %q", name, key)
		}
	}
	var offsets []int64
	for _, field := range []struct {
		key string
		dst any
	}{{"dtype", &t.DType}, {"shape", &t.Shape}, {"data_offsets", &offsets}} {
		raw, ok := fields[field.key]
		if !ok || string(raw) == "null" {
			return Tensor{}, 0, 0, malformed("tensor %q: missing %s", name, field.key)
		}
		if err := json.Unmarshal(raw, field.dst); err != nil {
			return Tensor{}, 0, 0, malformed("tensor %q: bad %s %s: %v", name, field.key, raw, err)
		}
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	size, ok := DTypeSize(t.DType)
	if !ok {
		return Tensor{}, 0, 0, malformed("tensor %q: unknown dtype %q", name, t.DType)
	}
	if len(offsets) != 2 {
		return Tensor{}, 0, 0, malformed("tensor %q: data_offsets %v must be [begin, end]", name, offsets)
	}
	begin, end = offsets[0], offsets[1]
	if begin < 0 || end < begin || end > dataLen {
		return Tensor{}, 0, 0, malformed("tensor %q: data_offsets [%d, %d] out of range for %d data bytes", name, begin, end, dataLen)
	}
	elements, err := Elements(t.Shape)
	if err != nil {
		return Tensor{}, 0, 0, malformed("tensor %q: %v", name, err)
	}
	if elements > (end-begin)/int64(size) || elements*int64(size) != end-begin {
		return Tensor{}, 0, 0, malformed("tensor %q: %s %v is %d elements of %d bytes, but data_offsets [%d, %d] hold %d bytes",
			name, t.DType, t.Shape, elements, size, begin, end, end-begin)
	}
	return t, begin, end, nil
}

// checkCoverage checks that the tensors tile the data buffer exactly: no overlap, no gap, no
// trailing bytes.
func checkCoverage(spans []span, dataLen int64) error {
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.begin, b.begin), cmp.Compare(a.end, b.end), cmp.Compare(a.name, b.name))
	})
	var at int64
	prev := ""
	for _, s := range spans {
		switch {
		case s.begin < at:
			return malformed("tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d", s.name, s.begin, s.end, prev, at)
		case s.begin > at:
			return malformed("tensor %q: data_offsets [%d, %d] leave a gap of %d bytes before it", s.name, s.begin, s.end, s.begin-at)
		}
		at, prev = s.end, s.name
	}
	if at != dataLen {
		return malformed("tensors cover %d data bytes, but %d follow the header", at, dataLen)
	}
	return nil
}

// Write writes f to w in safetensors format: metadata first, then tensors sorted by name, the
// header padded with spaces to 8 bytes. Equal files give equal bytes. Nothing is written when
// f is invalid.
func Write(w io.Writer, f File) error {
	header, names, err := encodeHeader(f)
	if err == nil {
		err = writeEncoded(w, f, header, names)
	}
	if err != nil {
		return fmt.Errorf("write safetensors: %w", err)
	}
	return nil
}

func writeEncoded(w io.Writer, f File, header []byte, names []string) error {
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], uint64(len(header)))
	if _, err := w.Write(size[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, name := range names {
		if _, err := w.Write(f.Tensors[name].Data); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
	}
	return nil
}

// encodeHeader validates f and returns its padded JSON header and the tensor names in data order.
func encodeHeader(f File) ([]byte, []string, error) {
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			h.WriteByte(',')
		}
		first = false
	}
	if len(f.Metadata) > 0 {
		keys := make([]string, 0, len(f.Metadata))
		for k, v := range f.Metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, nil, fmt.Errorf("metadata %q is not valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		comma()
		writeJSONString(&h, metadataKey)
		h.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, f.Metadata[k])
		}
		h.WriteByte('}')
	}
	names := f.Names()
	var offset int64
	for _, name := range names {
		t := f.Tensors[name]
		switch {
		case name == "" || name == metadataKey:
			return nil, nil, fmt.Errorf("tensor name %q is reserved", name)
		case !utf8.ValidString(name):
			return nil, nil, fmt.Errorf("tensor name %q is not valid UTF-8", name)
		}
		if err := t.Validate(); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		comma()
		writeJSONString(&h, name)
		h.WriteString(`:{"dtype":`)
		writeJSONString(&h, t.DType)
		h.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				h.WriteByte(',')
			}
			fmt.Fprint(&h, d)
		}
		end := offset + int64(len(t.Data))
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	if h.Len() > MaxHeaderSize {
		return nil, nil, fmt.Errorf("header of %d bytes exceeds the limit of %d", h.Len(), MaxHeaderSize)
	}
	return h.Bytes(), names, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)       // a valid UTF-8 string always encodes
	b.Truncate(b.Len() - 1) // Encode ends with a newline
}

// WriteFile writes f to path atomically: it writes a temporary file in the same directory,
// syncs it and renames it over path, so a crash leaves either the old file or the new one,
// never a truncated one. The file gets mode 0644.
func WriteFile(path string, f File) (err error) {
	header, names, err := encodeHeader(f)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := writeEncoded(bw, f, header, names); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
