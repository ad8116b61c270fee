package runtime

import "embed"

// customops.c includes kernels/cpu.h (and its act.h) and kernels/launch.h from the
// subdirectory. The go command hashes only the files of a package's own directory into its
// build, so an edit to those headers alone would leave a stale customops.o in the build cache;
// embedding them makes their contents part of this package's build. (bn_ptx.h, the compiled
// kernels, is in this directory.)
//
//go:embed kernels/cpu.h kernels/launch.h kernels/act.h
var kernelHeaders embed.FS
