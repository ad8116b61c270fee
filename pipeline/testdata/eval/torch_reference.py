"""Independent reference for `cardseg-ort eval` on a PyTorch-exported model.

Writes into OUT:
  data/test/{image,mask}/*.png   a small dataset: images of several sizes, masks at their own
                                 resolutions (some differ from their image's)
  lraspp.onnx                    torchvision lraspp_mobilenet_v3_large(num_classes=2), eval mode,
                                 exported with opset 17, batch symbolic, 96x128 input
  lraspp_dynamic.onnx            the same model with symbolic batch, height and width
  reference.json                 the scores of torch's own predictions, computed here with numpy

The predictions follow eval's rules, written out again here rather than shared: each image is
resized to the model's input size by augment.Resize's rules (a k x k box prefilter when the image
is at least twice the input size, then bilinear with half-pixel centres, rounded to 8 bits),
normalised with ImageNet statistics, run through torch, and the logits are resized to the mask's
size with F.interpolate(mode="bilinear", align_corners=False) before the argmax. A class absent
from both truth and prediction scores 1 (0/0 := 1), as in the metrics package.

The weights are random (seeded), with the card logit's bias shifted so that about half of the
pixels are predicted card; the scores are therefore far from 0 and 1, and any change in resizing,
normalisation or channel order moves them.
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

H, W = 96, 128
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])

# name, image (height, width), mask (height, width), block: the image is drawn at 1/block of its
# size and each pixel repeated block x block times. With the model's size times block, the
# block average of the box prefilter is exact, so eval and the reference feed the model the same
# pixels and every difference comes from resizing the logits to the mask.
SAMPLES = [
    ("x0_same", (96, 128), (96, 128), 1),
    ("x1_double", (192, 256), (192, 256), 2),  # logits upsampled 2x
    ("x2_mask_up", (96, 128), (150, 200), 1),  # logits upsampled by 1.5625
    ("x3_mask_down", (96, 128), (60, 80), 1),  # logits downsampled
    ("x4_triple", (288, 384), (144, 192), 3),  # mask at half the image's size
    ("g0_large", (250, 330), (125, 165), 1),  # box filter k=2, then bilinear; mask at half size
    ("g1_small", (60, 80), (120, 160), 1),  # upsampled input; mask at twice the image's size
    ("g2_portrait", (160, 120), (160, 120), 1),  # another aspect ratio than the model's
    ("g3_odd", (101, 137), (101, 137), 1),
    ("g4_big", (300, 400), (300, 400), 1),  # k=3, then bilinear
    ("g5_empty", (96, 128), (96, 128), 1),  # no card in the truth
]


def make_sample(rng, ih, iw, mh, mw, with_card, block):
    """A textured background with a brighter rotated card; the mask is the card at (mh, mw)."""
    full = (ih, iw)
    ih, iw = ih // block, iw // block
    yy, xx = np.mgrid[0:ih, 0:iw].astype(np.float64)
    base = rng.uniform(30, 120, size=3)
    grad = rng.uniform(-40, 40, size=(2, 3))
    img = base + (yy / ih)[..., None] * grad[0] + (xx / iw)[..., None] * grad[1]
    img += rng.normal(0, 12, size=(ih, iw, 3))
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    hw, hh = rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.35)
    ang = rng.uniform(-0.6, 0.6)

    def inside(y, x, h, w):
        u, v = x / w - cx, y / h - cy
        ru = np.cos(ang) * u + np.sin(ang) * v
        rv = -np.sin(ang) * u + np.cos(ang) * v
        return (np.abs(ru) < hw) & (np.abs(rv) < hh)

    if with_card:
        card = inside(yy + 0.5, xx + 0.5, ih, iw)
        face = rng.uniform(150, 240, size=3) + 25 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
        img = np.where(card[..., None], face, img)
        my, mx = np.mgrid[0:mh, 0:mw].astype(np.float64)
        mask = inside(my + 0.5, mx + 0.5, mh, mw)
    else:
        mask = np.zeros((mh, mw), dtype=bool)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8).repeat(block, axis=0).repeat(block, axis=1)
    assert img.shape[:2] == full
    return img, (mask * 255).astype(np.uint8)


def augment_resize(img, w, h):
    """augment.Resize's rules for an image without augmentation, in floating point: when the
    image is at least k >= 2 times the output size in both directions, average k x k blocks
    first (dropping the last partial row and column of blocks); then sample bilinearly with
    half-pixel centres, edges clamped, and round half up to 8 bits. augment computes this in fixed
    point, so single levels may differ."""
    sh, sw = img.shape[:2]
    if (sw, sh) == (w, h):
        return img
    k = max(1, min(sw // w, sh // h))
    dw, dh = sw // k * k, sh // k * k
    src = img[:dh, :dw].astype(np.float64)
    if k > 1:
        src = src.reshape(dh // k, k, dw // k, k, 3).mean(axis=(1, 3))
    ih, iw = src.shape[:2]

    def taps(n, limit):
        s = (np.arange(n) + 0.5) * (limit / n) - 0.5
        i0 = np.floor(s).astype(np.int64)
        f = s - i0
        return np.clip(i0, 0, limit - 1), np.clip(i0 + 1, 0, limit - 1), f

    x0, x1, fx = taps(w, iw)
    y0, y1, fy = taps(h, ih)
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
    bot = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
    return np.clip(np.floor(top * (1 - fy) + bot * fy + 0.5), 0, 255).astype(np.uint8)


def normalise(img):
    x = (img.astype(np.float64) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


class Out(torch.nn.Module):
    """torchvision's segmentation models return a dict; export its "out" tensor."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def ratio(a, b):
    return 1.0 if b == 0 else a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(7)

    data = os.path.join(args.out, "data", "test")
    os.makedirs(os.path.join(data, "image"), exist_ok=True)
    os.makedirs(os.path.join(data, "mask"), exist_ok=True)
    samples = []
    for name, (ih, iw), (mh, mw), block in SAMPLES:
        img, mask = make_sample(rng, ih, iw, mh, mw, name != "g5_empty", block)
        Image.fromarray(img, "RGB").save(os.path.join(data, "image", name + ".png"))
        Image.fromarray(mask, "L").save(os.path.join(data, "mask", name + ".png"))
        samples.append(name)

    model = Out(lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None)).eval()

    def read(name):
        img = np.asarray(Image.open(os.path.join(data, "image", name + ".png")).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(data, "mask", name + ".png")).convert("L")) >= 128
        return img, mask

    with torch.no_grad():
        inputs = {n: normalise(augment_resize(read(n)[0], W, H)) for n in samples}
        # Shift the card logit so that about half of all pixels are predicted card.
        diffs = []
        for x in inputs.values():
            o = model(x)
            diffs.append((o[:, 1] - o[:, 0]).flatten())
        shift = float(torch.cat(diffs).median())
        model.m.classifier.low_classifier.bias[1] -= shift

        dummy = torch.zeros(1, 3, H, W)
        torch.onnx.export(model, dummy, os.path.join(args.out, "lraspp.onnx"), opset_version=17,
                          input_names=["input"], output_names=["out"],
                          dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}})
        torch.onnx.export(model, dummy, os.path.join(args.out, "lraspp_dynamic.onnx"), opset_version=17,
                          input_names=["input"], output_names=["out"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "out": {0: "batch", 2: "height", 3: "width"}})

        tp = fp = fn = tn = 0
        per_image, per_image_confusion = {}, {}
        pred_card = 0
        for n in samples:
            _, truth = read(n)
            logits = model(inputs[n])
            up = F.interpolate(logits, size=truth.shape, mode="bilinear", align_corners=False)
            pred = (up.argmax(1)[0].numpy() == 1)
            a, b, c = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
            d = pred.size - a - b - c
            tp, fp, fn, tn = tp + a, fp + b, fn + c, tn + d
            pred_card += int(pred.sum())
            per_image[n] = ratio(a, a + b + c)
            per_image_confusion[n] = [[d, b], [c, a]]

    total = tp + fp + fn + tn
    ref = {
        "card_iou": ratio(tp, tp + fp + fn),
        "card_dice": ratio(2 * tp, 2 * tp + fp + fn),
        "pixel_accuracy": (tp + tn) / total,
        "confusion": [[tn, fp], [fn, tp]],
        "per_image_iou": per_image,
        "per_image_confusion": per_image_confusion,
        "predicted_card_fraction": pred_card / total,
        "logit_shift": shift,
        "input_size": [H, W],
        "torch": torch.__version__,
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
