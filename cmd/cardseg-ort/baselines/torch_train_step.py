"""PyTorch baseline for `cardseg-ort bench train --compare-torch`: the same training step
(torchvision lraspp_mobilenet_v3_large, 2 classes, train-mode BN, 0.5*CE + 0.5*Dice, AdamW
lr 1e-3) on random data, on the CPU with the given thread count. Prints one JSON line.

usage: torch_train_step.py BATCH HEIGHT WIDTH THREADS STEPS WARMUP

With STEPS 0 it serves instead, so that `bench train --compare-torch` can alternate between
PyTorch and ONNX Runtime in short segments (both see the same machine noise): after the
warm-up it prints {"ready": true, "torch": VERSION}, then for each line N read from stdin it
runs N steps and prints {"step_ms": [...]}; at end of input it prints {"peak_rss_mb": ...}.
"""
import json, resource, sys, time
import torch
import torch.nn.functional as F
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

b, h, w, threads, steps, warmup = map(int, sys.argv[1:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
m = lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randn(b, 3, h, w)
y = torch.zeros(b, h, w, dtype=torch.long)
y[:, h // 3:, w // 4:] = 1

def step():
    opt.zero_grad(set_to_none=True)
    logits = m(x)["out"]
    ce = F.cross_entropy(logits, y)
    p = logits.softmax(1)[:, 1]
    t = (y == 1).float()
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    loss = 0.5 * ce + 0.5 * dice
    loss.backward()
    opt.step()
    return loss.item()

for _ in range(warmup):
    step()

def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

if steps == 0:
    print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        ts = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            step()
            ts.append(round((time.perf_counter() - t0) * 1000, 2))
        print(json.dumps({"step_ms": ts}), flush=True)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
    sys.exit(0)

times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
n = len(times)
med = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "batch": b, "height": h, "width": w, "threads": threads,
                  "step_ms_median": round(med, 1), "step_ms_min": round(times[0], 1),
                  "img_per_s": round(b / (med / 1000), 2),
                  "peak_rss_mb": peak_rss_mb()}))
