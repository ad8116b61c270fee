package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the ONNX Runtime release cardseg-ort is built and tested against. The core
// library and the CUDA provider must both be this version.
const ORTVersion = "1.29.0"

// Library file names inside the cache folder (and next to ORT_LIB).
const (
	CoreLibraryName      = "libonnxruntime.so.1"
	CUDAProviderName     = "libonnxruntime_providers_cuda.so"
	SharedProviderName   = "libonnxruntime_providers_shared.so"
	envLibrary           = "ORT_LIB"
	envCacheDir          = "CARDSEG_ORT_DIR"
	setupHint            = "run `just setup` (or `cardseg-ort setup`) to fetch it, or set ORT_LIB to the path of a libonnxruntime.so " + ORTVersion
	cacheFolderComponent = "cardseg-ort"
)

// CacheDir is where `cardseg-ort setup` unpacks ONNX Runtime: $CARDSEG_ORT_DIR if set, else
// <user cache dir>/cardseg-ort/onnxruntime-<version>. It lives outside the repository so that
// every checkout and every working directory finds the same library.
func CacheDir() string {
	if d := os.Getenv(envCacheDir); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil || base == "" {
		base = filepath.Join(os.TempDir(), "cardseg-ort-cache")
	}
	return filepath.Join(base, cacheFolderComponent, "onnxruntime-"+ORTVersion)
}

// LibrarySource says where the library path came from.
type LibrarySource string

const (
	SourceEnv   LibrarySource = "ORT_LIB"
	SourceCache LibrarySource = "setup cache"
)

// LibraryPath finds the ONNX Runtime core library: ORT_LIB when set (it must exist), else the
// setup cache. The error names the path that was looked for and how to fix it.
func LibraryPath() (string, LibrarySource, error) {
	if p := os.Getenv(envLibrary); p != "" {
		if err := checkLibraryFile(p); err != nil {
			return p, SourceEnv, fmt.Errorf("ORT_LIB=%s: %w", p, err)
		}
		return p, SourceEnv, nil
	}
	p := filepath.Join(CacheDir(), CoreLibraryName)
	if err := checkLibraryFile(p); err != nil {
		return p, SourceCache, fmt.Errorf("ONNX Runtime library %s: %w; %s", p, err, setupHint)
	}
	return p, SourceCache, nil
}

func checkLibraryFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory, not a shared library")
	}
	return nil
}

var (
	initOnce    sync.Once
	initErr     error
	initLibPath string
)

// Init loads ONNX Runtime once per process. Later calls return the first call's result.
func Init() error {
	initOnce.Do(func() {
		p, _, err := LibraryPath()
		if err != nil {
			initErr = err
			return
		}
		ort.SetSharedLibraryPath(p)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("load ONNX Runtime from %s: %w", p, err)
			return
		}
		initLibPath = p
		v := ort.GetVersion()
		if !strings.HasPrefix(v, "1.") {
			initErr = fmt.Errorf("load ONNX Runtime from %s: unexpected version %q", p, v)
		}
	})
	return initErr
}

// Version is the loaded ONNX Runtime's version string (Init must have succeeded).
func Version() string {
	if Init() != nil {
		return ""
	}
	return ort.GetVersion()
}

// LoadedLibrary is the path the library was loaded from (empty before a successful Init).
func LoadedLibrary() string { return initLibPath }
