// Package pipeline runs cardseg-ort's jobs: dataset discovery and validation, the batch loader,
// training and evaluation loops, schedules, early stopping and checkpoints.
//
// It may import all of the project's packages (graphs and its sub-packages, runtime, augment,
// metrics), gonum/plot (training curves and the evaluation report's plots), zerolog and the
// standard library.
package pipeline
