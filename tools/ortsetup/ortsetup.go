// Package ortsetup fetches ONNX Runtime shared libraries from the npm registry with the npm
// client (`npm pack`, which verifies the registry's integrity hash) and unpacks them into
// runtime.CacheDir(). It is idempotent: when the files are already there it does nothing.
//
// It may import runtime and the standard library.
package ortsetup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// Package is one npm package and the files taken from it.
type Package struct {
	Spec  string            // name@version
	Files map[string]string // path inside the tarball -> file name in the cache
}

// Core is ONNX Runtime's CPU build (it also carries the provider bridge the CUDA provider needs).
var Core = Package{
	Spec:  "onnxruntime-node@" + runtime.ORTVersion,
	Files: map[string]string{"package/bin/napi-v6/linux/x64/libonnxruntime.so.1": runtime.CoreLibraryName},
}

// CUDA is the ORT 1.29.0 CUDA 13 execution provider that pairs with Core.
var CUDA = Package{
	Spec: "com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9",
	Files: map[string]string{
		"package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so":   runtime.CUDAProviderName,
		"package/Plugins/Linux/x64/libonnxruntime_providers_shared.so": runtime.SharedProviderName,
	},
}

// Logf reports progress.
type Logf func(format string, args ...any)

// Ensure makes sure the packages' files are in dir, fetching what is missing.
func Ensure(ctx context.Context, dir string, pkgs []Package, logf Logf) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("setup: create %s: %w", dir, err)
	}
	for _, p := range pkgs {
		if present(dir, p) {
			logf("%s: already in %s", p.Spec, dir)
			continue
		}
		if err := fetch(ctx, dir, p, logf); err != nil {
			return fmt.Errorf("setup: %s: %w\nOffline or blocked? Point ORT_LIB at an existing libonnxruntime.so %s (the CUDA provider libraries go next to it).", p.Spec, err, runtime.ORTVersion)
		}
	}
	return nil
}

func present(dir string, p Package) bool {
	for _, name := range p.Files {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

type packResult struct {
	Filename  string `json:"filename"`
	Integrity string `json:"integrity"`
}

func fetch(ctx context.Context, dir string, p Package, logf Logf) error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errors.New("the npm client is not installed (it is needed to fetch ONNX Runtime)")
	}
	work, err := os.MkdirTemp(dir, ".fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf("%s: fetching with npm pack (integrity-checked)", p.Spec)
	cmd := exec.CommandContext(ctx, npm, "pack", "--json", "--pack-destination", work, p.Spec)
	cmd.Dir = work
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("npm pack failed: %w: %s", err, strings.TrimSpace(lastLines(stderr.String(), 5)))
	}
	var res []packResult
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		return fmt.Errorf("npm pack printed unexpected output: %.200s", out)
	}
	logf("%s: %s (%s)", p.Spec, res[0].Filename, res[0].Integrity)
	if err := extract(filepath.Join(work, filepath.Base(res[0].Filename)), work, p); err != nil {
		return err
	}
	// Move into place only once everything is extracted, so an interrupted setup never leaves a
	// truncated library where discovery would find it.
	for _, name := range p.Files {
		if err := os.Rename(filepath.Join(work, name), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	logf("%s: unpacked into %s", p.Spec, dir)
	return nil
}

func extract(tgz, work string, p Package) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", tgz, err)
	}
	tr := tar.NewReader(gz)
	found := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tgz, err)
		}
		name, ok := p.Files[path.Clean(h.Name)]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		if err := writeFile(filepath.Join(work, name), tr); err != nil {
			return err
		}
		found[name] = true
	}
	for src, name := range p.Files {
		if !found[name] {
			return fmt.Errorf("%s has no %s", filepath.Base(tgz), src)
		}
	}
	return nil
}

func writeFile(dst string, r io.Reader) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return out.Close()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
