#!/usr/bin/env python3
"""Summarise one GPU sitting: the folder device_check.sh wrote ($OUT, fetched back here).

    python3 tools/gpu/summarize.py DIR

Prints, from DIR/results.jsonl, DIR/log.txt, DIR/smi.csv and DIR/ncu_*.csv.gz (whichever are
there): the fused-operator choice of check_fused, every `bench train` variant (step time,
images/s, device memory, fused set, kernels), PyTorch's rows and its best, our default step
against that best, the peak device memory nvidia-smi saw, each training run's final and best
validation IoU against the FP32 CPU run of its seed, and the ncu kernel times by family.
Standard library only, so it runs on the GPU host too.
"""
import csv
import gzip
import json
import os
import re
import statistics
import sys
from collections import defaultdict

# Card IoU of the FP32 CPU runs of the default recipe (30 epochs, cosine T0 29) by seed: the
# references FP16 training on the GPU is held to (within 0.01).
FP32_IOU = {42: 0.762, 43: 0.781, 44: 0.750}
DEFAULT_VARIANT = "fp16_graph"


def load_results(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"{path}:{n}: not JSON ({e}), skipped", file=sys.stderr)
    return rows


def bench_rows(rows):
    out = []
    for r in rows:
        if "step_ms_median" in r and not str(r.get("variant", "")).startswith("train"):
            out.append(r)
    return out


def torch_rows(rows):
    return [r for r in rows if r.get("impl") == "pytorch" and r.get("mode") == "train"]


def torch_label(r):
    parts = ["AMP" if r.get("amp") else "eager FP32"]
    if r.get("channels_last"):
        parts.append("channels_last")
    if r.get("compile"):
        parts.append("torch.compile")
    return " + ".join(parts)


def train_runs(rows):
    """variant -> list of epoch lines (the metrics.jsonl lines device_check tags)."""
    runs = defaultdict(list)
    for r in rows:
        v = str(r.get("variant", ""))
        if v.startswith("train") and "epoch" in r:
            runs[v].append(r)
    return runs


def seed_of(variant, default=42):
    m = re.search(r"_(\d+)$", variant)
    return int(m.group(1)) if m else default


def peak_smi(path):
    peak, at = 0, ""
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 2:
                continue
            m = re.match(r"\s*(\d+)\s*MiB", row[1])
            if m and int(m.group(1)) > peak:
                peak, at = int(m.group(1)), row[0].strip()
    return peak, at


def ncu_families(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = [l for l in f if l.startswith('"')]
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header or "Kernel Name" not in header:
        return None
    ki, vi = header.index("Kernel Name"), header.index("Metric Value")
    fam = defaultdict(lambda: [0.0, 0])
    total = 0.0
    for r in reader:
        ns = float(r[vi].replace(",", ""))
        name = re.sub(r"^void ", "", r[ki])
        name = re.sub(r"[<(].*", "", name).replace("onnxruntime::", "")
        if name.startswith("nvjet") or "gemm" in name or name.startswith("cutlass"):
            name = "GEMM (cuBLAS/cutlass)"
        fam[name][0] += ns
        fam[name][1] += 1
        total += ns
    return total, fam


def main(d):
    res = os.path.join(d, "results.jsonl")
    rows = load_results(res) if os.path.exists(res) else []
    log = os.path.join(d, "log.txt")
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                if " host: " in line or "fused choice" in line:
                    print(line.split(" ", 2)[2].strip())

    bench = bench_rows(rows)
    if bench:
        print("\n`bench train` (ms per step, median):")
        for r in bench:
            print(f"  {r.get('variant', '?'):24s} {r['step_ms_median']:8.2f} ms {r.get('img_per_s', 0):7.1f} img/s"
                  f"  mem {r.get('device_mem_mb', 0) / 1024:5.2f} GB  fused {r.get('fused', '-')}"
                  f"  kernels {r.get('cuda_kernels', '-')}  skipped {r.get('skipped_steps', 0)}")
    torch = torch_rows(rows)
    best = None
    if torch:
        print("\nPyTorch (same sitting):")
        for r in torch:
            print(f"  {torch_label(r):28s} {r['ms_per_step']:8.2f} ms {r.get('img_per_s', 0):7.1f} img/s"
                  f"  peak {r.get('peak_mem_gb', 0):.2f} GB")
        best = min(torch, key=lambda r: r["ms_per_step"])
    ours = next((r for r in bench if r.get("variant") == DEFAULT_VARIANT), None)
    if ours and best:
        ratio = best["ms_per_step"] / ours["step_ms_median"]
        print(f"\nours ({DEFAULT_VARIANT}) {ours['step_ms_median']:.2f} ms against PyTorch's best "
              f"({torch_label(best)}) {best['ms_per_step']:.2f} ms: {ratio:.2f}x its step rate (target 2x)")

    smi = os.path.join(d, "smi.csv")
    if os.path.exists(smi):
        peak, at = peak_smi(smi)
        print(f"\nnvidia-smi peak device memory: {peak} MiB at {at} (match the phase in log.txt)")

    runs = train_runs(rows)
    if runs:
        print("\ntraining runs (card IoU on the validation split):")
        diffs = []
        for v, eps in sorted(runs.items()):
            last = max(eps, key=lambda r: r["epoch"])
            iou = last.get("val", {}).get("iou")
            best_iou = max((r.get("val", {}).get("iou") or 0) for r in eps)
            seed = seed_of(v)
            ref = FP32_IOU.get(seed)
            line = f"  {v:28s} epoch {last['epoch']:3d}  final {iou:.3f}  best {best_iou:.3f}"
            if ref is not None and not v.endswith("_cpu"):
                line += f"  FP32 seed {seed} {ref:.3f}  diff {iou - ref:+.3f}"
                diffs.append((v, iou - ref))
            print(line)
        by_build = defaultdict(list)
        for v, dd in diffs:
            by_build[re.sub(r"_\d+$", "", v)].append(dd)
        for b, dd in sorted(by_build.items()):
            if len(dd) > 1:
                print(f"  {b}: mean difference from FP32 over {len(dd)} seeds {statistics.mean(dd):+.3f}")

    for name in sorted(os.listdir(d)):
        if name.startswith("ncu_") and (name.endswith(".csv") or name.endswith(".csv.gz")):
            got = ncu_families(os.path.join(d, name))
            if not got:
                continue
            total, fam = got
            print(f"\n{name}: {total / 1e6:.2f} ms of kernels, {sum(n for _, n in fam.values())} launches; largest families:")
            for k, (ns, n) in sorted(fam.items(), key=lambda x: -x[1][0])[:15]:
                print(f"  {ns / 1e6:7.3f} ms {n:5d}  {k[:70]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
