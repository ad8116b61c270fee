// Package tools groups cardseg-ort's offline tools; each lives in its own sub-package
// (ortsetup: fetch ONNX Runtime from the npm registry; later prune, export, quantize, synth).
// Sub-packages may import the leaf packages, pipeline and the standard library.
package tools
