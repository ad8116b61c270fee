// Package metrics scores segmentation predictions against ground truth: a K×K confusion
// matrix (rows = truth, columns = prediction), per-class precision, recall, F1, IoU and Dice,
// pixel accuracy and mean IoU, pooled over all pixels or averaged over images, and the JSON
// summary that `cardseg-ort eval --json` prints. Class 0 is background and class 1 is card.
//
// Every ratio whose denominator is zero is ZeroDivision (1): a class that is absent from both
// the truth and the prediction was segmented perfectly, so an image with no card that gets no
// card predicted has card IoU 1. This is segmentation_models_pytorch's default
// (smp.metrics, zero_division=1.0). Results are therefore never NaN and always encode as JSON.
// The one exception is Confusion.Normalized, whose empty rows are zeros, as in scikit-learn's
// confusion_matrix(normalize="true").
//
// It may import only the standard library.
package metrics
