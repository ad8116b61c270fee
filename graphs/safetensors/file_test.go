package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// raw builds a file from a header string and data bytes, with no padding.
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// must unwraps a tensor built from test constants; an error there is a bug in the test.
func must(tensor Tensor, err error) Tensor {
	if err != nil {
		panic(err)
	}
	return tensor
}

// sample returns a file with every dtype, a scalar, an empty tensor and metadata that needs
// JSON escaping.
func sample(t testing.TB) File {
	t.Helper()
	return File{
		Tensors: map[string]Tensor{
			"backbone.0.0.weight": must(FromFloat32([]float32{1, -2.5, 3, 0, float32(math.Inf(1)), 1e-30}, 2, 3)),
			"step":                must(FromInt64([]int64{-7})),
			"mask":                must(FromUint8([]uint8{0, 255, 7}, 3)),
			"empty":               must(FromFloat32(nil, 0, 4)),
			"half":                must(New(F16, []int64{2}, []byte{0x00, 0x3c, 0x00, 0xc0})),
			"brain":               must(New(BF16, []int64{1}, []byte{0x80, 0x3f})),
			"double":              must(New(F64, []int64{1}, binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1)))),
			"int32":               must(New(I32, []int64{1, 1}, []byte{0xff, 0xff, 0xff, 0xff})),
			"flags":               must(New(BOOL, []int64{2}, []byte{1, 0})),
			`odd "name" <&> é`:    must(FromUint8([]uint8{1}, 1)),
		},
		Metadata: map[string]string{"format": "pt", "note": `a "quoted" <tag> & ünïcode`},
	}
}

func sameFile(t *testing.T, got, want File) {
	t.Helper()
	if !reflect.DeepEqual(got.Names(), want.Names()) {
		t.Fatalf("names %v, want %v", got.Names(), want.Names())
	}
	for _, name := range want.Names() {
		g, w := got.Tensors[name], want.Tensors[name]
		if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("tensor %q = %s %v % x, want %s %v % x", name, g.DType, g.Shape, g.Data, w.DType, w.Shape, w.Data)
		}
	}
	if len(got.Metadata) != len(want.Metadata) || (len(want.Metadata) > 0 && !reflect.DeepEqual(got.Metadata, want.Metadata)) {
		t.Errorf("metadata %v, want %v", got.Metadata, want.Metadata)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		file File
	}{
		{"every dtype", sample(t)},
		{"no tensors", File{}},
		{"metadata only", File{Metadata: map[string]string{"k": "v"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tc.file); err != nil {
				t.Fatal(err)
			}
			if n := binary.LittleEndian.Uint64(buf.Bytes()); n%8 != 0 {
				t.Errorf("header length %d is not a multiple of 8", n)
			}
			got, err := Read(&buf)
			if err != nil {
				t.Fatal(err)
			}
			sameFile(t, got, tc.file)
			for name, tensor := range got.Tensors {
				if cap(tensor.Data) != len(tensor.Data) {
					t.Errorf("tensor %q: appending to Data would overwrite its neighbour", name)
				}
			}

			path := filepath.Join(t.TempDir(), "m.safetensors")
			if err := WriteFile(path, tc.file); err != nil {
				t.Fatal(err)
			}
			fromDisk, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sameFile(t, fromDisk, tc.file)
		})
	}
}

// TestExactBytes checks the writer against a hand-written file: metadata first, tensors
// sorted by name in the header and in the data, header padded with spaces to 8 bytes.
func TestExactBytes(t *testing.T) {
	f := File{
		Tensors: map[string]Tensor{
			"b": must(FromFloat32([]float32{1, 2}, 2)),
			"a": must(FromUint8([]uint8{1, 2, 3}, 3)),
		},
		Metadata: map[string]string{"format": "pt"},
	}
	header := `{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},` +
		`"b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}`
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	want := raw(header, []byte{1, 2, 3, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40})

	var first bytes.Buffer
	if err := Write(&first, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), want) {
		t.Fatalf("wrote\n%q\nwant\n%q", first.Bytes(), want)
	}
	// Map iteration order varies from run to run; the bytes must not.
	for i := 0; i < 20; i++ {
		var again bytes.Buffer
		if err := Write(&again, sample(t)); err != nil {
			t.Fatal(err)
		}
		var ref bytes.Buffer
		if err := Write(&ref, sample(t)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), ref.Bytes()) {
			t.Fatal("two writes of the same file differ")
		}
	}
}

// TestReadsForeignLayout reads a file laid out unlike ours: header entries unsorted, data in
// another order than the header, metadata last, header padded with spaces.
func TestReadsForeignLayout(t *testing.T) {
	header := `{"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}, "a":{"data_offsets":[2,6],"shape":[],"dtype":"F32"},` +
		`"__metadata__":{"x":"y"}}      `
	f, err := Read(bytes.NewReader(raw(header, []byte{9, 8, 0, 0, 0x80, 0x3f})))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); !reflect.DeepEqual(got, []string{"a", "z"}) {
		t.Errorf("Names = %v", got)
	}
	a, err := f.Tensors["a"].Float32s()
	if err != nil || len(a) != 1 || a[0] != 1 || len(f.Tensors["a"].Shape) != 0 {
		t.Errorf("a = %v %v (%v)", f.Tensors["a"].Shape, a, err)
	}
	if !bytes.Equal(f.Tensors["z"].Data, []byte{9, 8}) || f.Metadata["x"] != "y" {
		t.Errorf("z = %v, metadata %v", f.Tensors["z"].Data, f.Metadata)
	}
}

func TestReadErrors(t *testing.T) {
	f32 := func(name, offsets string) string {
		return `"` + name + `":{"dtype":"F32","shape":[2],"data_offsets":` + offsets + `}`
	}
	eight := make([]byte, 8)
	tests := []struct {
		name    string
		file    []byte
		wantErr string
	}{
		{"shorter than the length field", []byte{1, 2, 3}, "file is 3 bytes, too short"},
		{"header larger than file", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), "header length 100 exceeds the 2 bytes that follow it"},
		{"absurd header length", binary.LittleEndian.AppendUint64(nil, 1<<62), "exceeds the limit"},
		{"empty header", raw("", nil), "not a JSON object"},
		{"header not JSON", raw("nope", nil), "not a JSON object"},
		{"header is an array", raw("[]", nil), "not a JSON object"},
		{"header not closed", raw(`{"a":{}`, nil), "header"},
		{"trailing bytes after header JSON", raw(`{}x`, nil), "trailing data"},
		{"header not UTF-8", raw("{\"\xff\":1}", nil), "not valid UTF-8"},
		{"unknown dtype", raw(`{"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}}`, []byte{0, 0}), `tensor "w": unknown dtype "F8"`},
		{"shape and dtype disagree with offsets", raw(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), `tensor "w": F32 [3] is 3 elements of 4 bytes, but data_offsets [0, 8] hold 8 bytes`},
		{"offsets past the data", raw(`{`+f32("w", "[0,8]")+`}`, eight[:4]), `tensor "w": data_offsets [0, 8] out of range for 4 data bytes`},
		{"offsets reversed", raw(`{`+f32("w", "[8,0]")+`}`, eight), "out of range"},
		{"negative offset", raw(`{`+f32("w", "[-8,0]")+`}`, eight), "out of range"},
		{"three offsets", raw(`{`+f32("w", "[0,8,8]")+`}`, eight), "must be [begin, end]"},
		{"fractional offset", raw(`{`+f32("w", "[0,8.5]")+`}`, eight), `tensor "w": bad data_offsets`},
		{"overlapping tensors", raw(`{`+f32("a", "[0,8]")+`,`+f32("b", "[4,12]")+`}`, make([]byte, 12)), `tensor "b": data_offsets [4, 12] overlap tensor "a"`},
		{"gap between tensors", raw(`{`+f32("a", "[0,8]")+`,`+f32("b", "[12,20]")+`}`, make([]byte, 20)), `tensor "b": data_offsets [12, 20] leave a gap of 4 bytes`},
		{"gap at the start", raw(`{`+f32("a", "[4,12]")+`}`, make([]byte, 12)), `tensor "a"`},
		{"bytes after the last tensor", raw(`{`+f32("a", "[0,8]")+`}`, make([]byte, 9)), "tensors cover 8 data bytes, but 9 follow the header"},
		{"duplicate tensor", raw(`{`+f32("a", "[0,8]")+`,`+f32("a", "[0,8]")+`}`, eight), `tensor "a" appears twice`},
		{"missing dtype", raw(`{"w":{"shape":[2],"data_offsets":[0,2]}}`, []byte{0, 0}), `tensor "w": missing dtype`},
		{"missing shape", raw(`{"w":{"dtype":"U8","data_offsets":[0,2]}}`, []byte{0, 0}), `tensor "w": missing shape`},
		{"null offsets", raw(`{"w":{"dtype":"U8","shape":[2],"data_offsets":null}}`, []byte{0, 0}), `tensor "w": missing data_offsets`},
		{"unknown field", raw(`{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"strides":[1]}}`, []byte{0, 0}), `tensor "w": unknown field "strides"`},
		{"field name in wrong case", raw(`{"w":{"DTYPE":"U8","shape":[2],"data_offsets":[0,2]}}`, []byte{0, 0}), `unknown field "DTYPE"`},
		{"negative dimension", raw(`{"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}`, []byte{0, 0}), `tensor "w": shape [-2] has a negative dimension`},
		{"overflowing shape", raw(`{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,2]}}`, []byte{0, 0}), "too many elements"},
		{"entry not an object", raw(`{"w":[1,2]}`, nil), `tensor "w": entry is not a JSON object`},
		{"empty tensor name", raw(`{"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil), "empty name"},
		{"metadata value not a string", raw(`{"__metadata__":{"epoch":3}}`, nil), "__metadata__ must map strings to strings"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestReadFileNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(path, raw(`{"w":{"dtype":"F8","shape":[],"data_offsets":[0,0]}}`, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `tensor "w": unknown dtype "F8"`) {
		t.Errorf("error %v, want one naming %s, the tensor and the problem", err, path)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    File
		wantErr string
	}{
		{"unknown dtype", File{Tensors: map[string]Tensor{"w": {DType: "F8", Shape: []int64{1}, Data: []byte{0}}}}, `tensor "w": unknown dtype "F8"`},
		{"data too short for shape", File{Tensors: map[string]Tensor{"w": {DType: F32, Shape: []int64{2}, Data: make([]byte, 4)}}}, `tensor "w": F32 [2] needs 2 elements of 4 bytes, have 4 bytes`},
		{"negative dimension", File{Tensors: map[string]Tensor{"w": {DType: U8, Shape: []int64{-1}}}}, "negative dimension"},
		{"reserved name", File{Tensors: map[string]Tensor{"__metadata__": {DType: U8, Shape: []int64{0}}}}, "reserved"},
		{"empty name", File{Tensors: map[string]Tensor{"": {DType: U8, Shape: []int64{0}}}}, "reserved"},
		{"name not UTF-8", File{Tensors: map[string]Tensor{"\xff": {DType: U8, Shape: []int64{0}}}}, "not valid UTF-8"},
		{"metadata not UTF-8", File{Metadata: map[string]string{"k": "\xff"}}, "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Write error %v, want one containing %q", err, tc.wantErr)
			}
			if buf.Len() != 0 {
				t.Errorf("Write of an invalid file wrote %d bytes", buf.Len())
			}
			dir := t.TempDir()
			path := filepath.Join(dir, "m.safetensors")
			if err := WriteFile(path, tc.file); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("WriteFile error %v, want one naming %s", err, path)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("WriteFile of an invalid file left %v", entries)
			}
		})
	}
}

func TestNewChecksSize(t *testing.T) {
	if _, err := FromFloat32([]float32{1, 2, 3}, 2, 2); err == nil {
		t.Error("FromFloat32 of 3 values as [2 2]: no error")
	}
	if _, err := FromInt64([]int64{1, 2}, 2); err != nil {
		t.Errorf("FromInt64: %v", err)
	}
	if _, err := New(BF16, []int64{3}, make([]byte, 5)); err == nil {
		t.Error("New BF16 [3] over 5 bytes: no error")
	}
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, sample(t)); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, got, sample(t))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "m.safetensors" {
		t.Errorf("directory holds %v, want only m.safetensors", entries)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o644 {
		t.Errorf("mode %v (%v), want 0644", info.Mode(), err)
	}
	if err := WriteFile(filepath.Join(dir, "no", "such", "dir.safetensors"), sample(t)); err == nil {
		t.Error("WriteFile into a missing directory: no error")
	}
}

func TestConversions(t *testing.T) {
	le16 := func(v ...uint16) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint16(b, x)
		}
		return b
	}
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		tensor Tensor
		want   []float32
	}{
		{"F16", Tensor{F16, []int64{9}, le16(0x3c00, 0xc000, 0x7bff, 0x0400, 0x0001, 0x83ff, 0x8000, 0x7c00, 0x3555)},
			[]float32{1, -2, 65504, 1.0 / (1 << 14), 1.0 / (1 << 24), -1023.0 / (1 << 24), 0, inf, 0.333251953125}},
		{"BF16", Tensor{BF16, []int64{3}, le16(0x3f80, 0xc049, 0xff80)}, []float32{1, -3.140625, -inf}},
		{"F64", Tensor{F64, []int64{2}, binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1)), math.Float64bits(-1e300))},
			[]float32{0.1, -inf}},
		{"F32", must(FromFloat32([]float32{1.5, 0}, 2)), []float32{1.5, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.tensor.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Float32s = %v, want %v", got, tc.want)
			}
		})
	}
	if v, err := (Tensor{F16, []int64{2}, le16(0x7e00, 0x8000)}).Float32s(); err != nil || !math.IsNaN(float64(v[0])) || !math.Signbit(float64(v[1])) {
		t.Errorf("F16 NaN and -0 = %v (%v)", v, err)
	}
	if _, err := must(FromInt64([]int64{1}, 1)).Float32s(); err == nil {
		t.Error("Float32s of I64: no error")
	}

	ints := []struct {
		tensor Tensor
		want   []int64
	}{
		{must(FromInt64([]int64{-1, math.MaxInt64}, 2)), []int64{-1, math.MaxInt64}},
		{Tensor{I32, []int64{2}, []byte{0xfe, 0xff, 0xff, 0xff, 5, 0, 0, 0}}, []int64{-2, 5}},
		{must(FromUint8([]uint8{255, 0}, 2)), []int64{255, 0}},
		{Tensor{BOOL, []int64{2}, []byte{1, 0}}, []int64{1, 0}},
	}
	for _, tc := range ints {
		got, err := tc.tensor.Int64s()
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s Int64s = %v (%v), want %v", tc.tensor.DType, got, err, tc.want)
		}
	}
	if _, err := must(FromFloat32([]float32{1}, 1)).Int64s(); err == nil {
		t.Error("Int64s of F32: no error")
	}
}

func FuzzRead(f *testing.F) {
	var valid bytes.Buffer
	if err := Write(&valid, sample(f)); err != nil {
		f.Fatal(err)
	}
	f.Add(valid.Bytes())
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}`, make([]byte, 8)))
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)))
	f.Add(raw(`{"__metadata__":{"a":"b"}}`, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Read(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Whatever reads must write, read back the same and write the same bytes again.
		var once, twice bytes.Buffer
		if err := Write(&once, file); err != nil {
			t.Fatalf("read a file that does not write: %v", err)
		}
		back, err := Read(bytes.NewReader(once.Bytes()))
		if err != nil {
			t.Fatalf("our own output does not read: %v", err)
		}
		sameFile(t, back, file)
		if err := Write(&twice, back); err != nil || !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("writing is not stable (%v)", err)
		}
		for _, tensor := range file.Tensors {
			tensor.Float32s()
			tensor.Int64s()
		}
	})
}
