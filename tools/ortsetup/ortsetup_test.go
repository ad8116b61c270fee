package ortsetup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTgz(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
}

// fakeNPM puts an `npm` on PATH that runs the given shell body.
func fakeNPM(t *testing.T, body string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "npm"), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

var testPkg = Package{Spec: "fake@1.0.0", Files: map[string]string{"package/lib/libx.so": "libx.so"}}

func TestEnsureUnpacksAndIsIdempotent(t *testing.T) {
	src := filepath.Join(t.TempDir(), "fake-1.0.0.tgz")
	writeTgz(t, src, map[string]string{"package/lib/libx.so": "ELF...", "package/README": "x"})
	// npm pack --json --pack-destination DIR SPEC: copy the tarball there, print its JSON.
	fakeNPM(t, `cp `+src+` "$4/"; echo '[{"filename":"fake-1.0.0.tgz","integrity":"sha512-test"}]'`)
	dir := t.TempDir()
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, f) }
	if err := Ensure(context.Background(), dir, []Package{testPkg}, logf); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "libx.so"))
	if err != nil || string(b) != "ELF..." {
		t.Fatalf("unpacked %q, %v", b, err)
	}
	// Second run must not call npm at all.
	fakeNPM(t, "exit 1")
	if err := Ensure(context.Background(), dir, []Package{testPkg}, logf); err != nil {
		t.Fatalf("second Ensure fetched again: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("cache holds leftovers: %v", entries)
	}
}

func TestEnsureFailureSaysHowToUseORTLIB(t *testing.T) {
	fakeNPM(t, "echo 'npm error code ENOTFOUND' >&2; exit 1")
	dir := t.TempDir()
	err := Ensure(context.Background(), dir, []Package{testPkg}, func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), "ORT_LIB") || !strings.Contains(err.Error(), "ENOTFOUND") {
		t.Fatalf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "libx.so")); err == nil {
		t.Fatal("a failed fetch left a library behind")
	}
}

func TestEnsureTarballWithoutLibrary(t *testing.T) {
	src := filepath.Join(t.TempDir(), "fake-1.0.0.tgz")
	writeTgz(t, src, map[string]string{"package/README": "x"})
	fakeNPM(t, `cp `+src+` "$4/"; echo '[{"filename":"fake-1.0.0.tgz","integrity":"sha512-test"}]'`)
	err := Ensure(context.Background(), t.TempDir(), []Package{testPkg}, func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), "has no package/lib/libx.so") {
		t.Fatalf("error %v", err)
	}
}
