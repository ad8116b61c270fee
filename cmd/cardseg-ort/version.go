package main

import (
	"fmt"
	"runtime/debug"

	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// VersionCmd prints versions; the ONNX Runtime part needs the library and says so if missing.
type VersionCmd struct{}

func (c *VersionCmd) Run() error {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v = "dev-" + s.Value[:12]
			}
		}
	}
	fmt.Printf("cardseg-ort %s\n", v)
	if err := runtime.Init(); err != nil {
		fmt.Printf("onnxruntime: not loaded (%v)\n", err)
		return nil
	}
	fmt.Printf("onnxruntime %s (%s)\n", runtime.Version(), runtime.LoadedLibrary())
	return nil
}
