// Package prune shrinks a trained cardseg-ort network.
//
// Unstructured pruning zeroes the smallest-magnitude convolution weights (globally or per
// layer) and records a parameter mask, so that fine-tuning keeps them at zero (the train step
// multiplies gradients and updated parameters by the mask). Structured pruning removes whole
// channels: the expansion channels inside MobileNetV3's inverted-residual blocks (and, on
// request, squeeze-and-excite and head channels). It edits the architecture table and slices
// every tensor that touches a removed channel; the train, eval and inference graphs are then
// regenerated from the smaller table, so the deployed model is physically smaller and faster.
//
// A Job runs the whole command: load a checkpoint, measure it, prune, re-estimate batch-norm
// statistics, measure again, optionally fine-tune and measure a third time, and write a
// checkpoint that `train --resume` continues and `export` ships.
//
// It may import graphs/..., pipeline, runtime, metrics, zerolog and the standard library.
package prune
