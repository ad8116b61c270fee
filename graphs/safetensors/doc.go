// Package safetensors reads and writes the safetensors format, the weight file that PyTorch
// tooling exchanges: an 8-byte little-endian header length N, N bytes of JSON mapping each
// tensor name to its dtype, shape and [begin, end) byte range in the data that follows (plus an
// optional "__metadata__" object of strings), padded with spaces to 8 bytes, then the tensors'
// row-major little-endian bytes, contiguous and without gaps.
//
// Reading validates everything and never panics on bad input; errors name the file, the tensor
// and the problem. Writing orders tensors by name, so equal files give equal bytes, and
// WriteFile replaces its target atomically.
//
// It may import only the standard library and internal/f16.
package safetensors
