#!/bin/bash
# Every GPU check in one run, for a lent GPU host with a short time budget. From the repo root
# on the GPU host, after ../shared/gpu/{pack,unpack}.sh has assembled /tmp/ortgpu, with these
# built here and carried along (Go is not installed there): `just gpu-pack` builds the CLI and
# the runtime, pipeline and graphs/step test binaries into .gpubin/bin.tar.xz. Then, back to back
# on the device: carry .gpu1, .gpu2, .gpu3 in turn running `bash .gpuN/unpack.sh`; last, carry
# .gpu4 and .gpubin running
#   bash .gpu4/unpack.sh && tar xJf .gpubin/bin.tar.xz && CHECKS="..." bash tools/gpu/device_check.sh
# Writes $OUT/log.txt (everything) and $OUT/results.jsonl (one JSON line per measurement,
# PyTorch's anchor lines included); `just gpu-summary DIR` (tools/gpu/summarize.py) reads them. Each check has its own time limit; a failure is logged
# and the next check runs. CHECKS names the checks to run, in the order given (default: all).
# Costs seen (2026-11-26), for planning a 15-minute device budget: machine start ~25 s, each
# unpack call ~4 s; on an H100: fused 40 s, bench 4-6 s, anchor 96 s (36 s with ANCHOR_AMP=0),
# ctests 70 s, ncu 12-40 s, a train_matrix run (the default recipe, FP16) 50 s; on an H200:
# gradtest 7 s, bprofile 13 s, the same training run 131 s.
# Sitting 4 (H100, 2026-11-26; 6.5 minutes in two calls, back to back so that /tmp survives):
#   1. CHECKS="fused bench bench_nopack bench_nose bench_scalar bench_blockdiag anchor" (173 s)
#   2. CHECKS="train_matrix ncu" TRAIN_MATRIX="all:42 all:43 all:44" TRAIN_LIMIT=130 (158 s)
# then `just gpu-summary DIR` on each call's files: the step against PyTorch's best of the same
# sitting, and each training run's IoU against the FP32 CPU run of its seed.
# check_fused's choice of operators and kernels is kept in /tmp for the second call.
# fused: each operator's CUDA kernels against its CPU kernels, then the step; it narrows
# CARDSEG_CUDA_KERNELS and CARDSEG_FUSED_OPS for the later checks itself when something fails
# (see check_fused), so run it first;
# torch: every PyTorch mode, for "PyTorch's best" in the same sitting; train_matrix: the
# default build's accuracy over three seeds against the FP32 CPU runs of the same seeds (IoU
# 0.762 seed 42, 0.781 seed 43, 0.750 seed 44).
# nvidia-smi samples device memory and utilisation into $OUT/smi.csv the whole time (peak memory
# of each phase, ours and PyTorch's, can be read off against log.txt's timestamps).
set -u
OUT=${OUT:-/tmp/cardseg-gpu}
mkdir -p "$OUT"
LOG=$OUT/log.txt
RES=$OUT/results.jsonl
CHOICE=${CHOICE:-/tmp/cardseg_fused_choice.sh}
# shellcheck disable=SC1091
[ -f /tmp/ortgpu/env.sh ] && source /tmp/ortgpu/env.sh
export PYTHONUNBUFFERED=1
anchor=$(ls .gpu*/torch_anchor.py 2>/dev/null | head -1)
# DEV and B can be overridden for a dry run of this script on a machine without a GPU, e.g.
#   DEV="cpu --resident" B="--batch 2 --height 64 --width 96 --json" CHECKS="bench" OUT=/tmp/x bash tools/gpu/device_check.sh
DEV=${DEV:-cuda}
B=${B:-"--batch 8 --height 480 --width 640 --json"}
note() { echo "=== $(date +%T) $*" >> "$LOG"; }
# bench NAME LIMIT ARGS...: one `bench train` JSON line, tagged with NAME.
bench() {
  local name=$1 limit=$2; shift 2
  note "bench $name: $*"
  local t0=$SECONDS line
  line=$(timeout "$limit" bin/cardseg-ort --log-format json bench train "$@" 2>>"$LOG")
  local rc=$?
  note "bench $name rc=$rc $((SECONDS - t0))s"
  [ -n "$line" ] && echo "${line/\{/\{\"variant\":\"$name\",}" >> "$RES"
  return $rc
}

note "host: $(hostname) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
bin/cardseg-ort doctor >> "$LOG" 2>&1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 250 > "$OUT/smi.csv" 2>/dev/null &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT

check_rtest() {
  note "runtime CUDA tests"
  timeout 60 bin/runtime.test -test.run 'Device|CUDA|TensorBlock' -test.v >> "$LOG" 2>&1; note "runtime tests rc=$?"
}
check_tests() {
  note "graphs/step FP16 tests (CUDA subtests)"
  timeout 150 bin/step.test -test.run 'FP16' -test.v >> "$LOG" 2>&1; note "step tests rc=$?"
  note "pipeline CUDA tests"
  timeout 150 bin/pipeline.test -test.run 'CUDA' -test.v >> "$LOG" 2>&1; note "pipeline tests rc=$?"
}
# The runtime's CUDA tests, the FP16 step test and the pipeline's CUDA tests (the full set is
# check_rtest and check_tests).
check_ctests() {
  note "runtime CUDA tests, FP16 step test (CUDA subtest) and pipeline CUDA tests"
  timeout 60 bin/runtime.test -test.run 'CUDA' -test.v >> "$LOG" 2>&1; note "runtime CUDA tests rc=$?"
  timeout 90 bin/step.test -test.run 'FP16TrainStepMatchesFP32/^cuda$' -test.v >> "$LOG" 2>&1; note "step FP16 test rc=$?"
  timeout 150 bin/pipeline.test -test.run 'CUDA' -test.v >> "$LOG" 2>&1; note "pipeline tests rc=$?"
}
# Our fused operators: each one's CUDA kernels against its CPU kernels, one test process each
# (a kernel that faults can take its process's CUDA context with it), then the FP16 step with
# them against the step in ONNX operators alone (CUDA graphs). What fails is left out of every
# later check, so one bad kernel does not spend the sitting: CARDSEG_CUDA_KERNELS=scalar where a
# layer operator passes only on its first kernels, CARDSEG_FUSED_OPS without an operator that
# fails on both; if the step then fails, sitting 3's set (first kernels; bn, act, dwconv,
# dwgrad), then none. The choice goes to the log and to results.jsonl (variant fused_choice);
# bench and training read both variables, and train_matrix's "all" means the chosen set.
fused_test() { # fused_test NAME KERNELS: TestFusedNAMECUDA on those kernels
  CARDSEG_CUDA_KERNELS=$2 timeout 90 bin/model.test -test.run "^TestFused$1CUDA\$" -test.v >> "$LOG" 2>&1
  local rc=$?
  note "TestFused$1CUDA (kernels $2) rc=$rc"
  return $rc
}
step_test() { # the FP16 step with the exported set against ONNX operators
  timeout 150 bin/pipeline.test -test.run '^TestCUDAFusedOpsMatchUnfused$' -test.v >> "$LOG" 2>&1
  local rc=$?
  note "step with fused operators ${CARDSEG_FUSED_OPS} (kernels ${CARDSEG_CUDA_KERNELS}) rc=$rc"
  return $rc
}
check_fused() {
  note "fused operators: CUDA kernels against the CPU's, one operator at a time"
  local kernels=auto failed="" drop="" t
  declare -A ops=([BatchNorm]="bn act" [DepthwiseConv]=dwconv [DepthwiseWeightGrad]="dwgrad dwconv" [SE]=se [PackRows]=pack [AdamW]=adam [SegLoss]=loss)
  for t in BatchNorm DepthwiseConv DepthwiseWeightGrad SE PackRows AdamW SegLoss; do
    fused_test "$t" auto && continue
    failed="$failed $t"
    case $t in
      BatchNorm | Depthwise*) fused_test "$t" scalar && { kernels=scalar; continue; } ;;
    esac
    drop="$drop ${ops[$t]}"
  done
  local set="" o
  for o in bn act dwconv dwgrad se pack adam loss; do
    [[ " $drop " == *" $o "* ]] || set="$set,$o"
  done
  set=${set#,}
  export CARDSEG_CUDA_KERNELS=$kernels CARDSEG_FUSED_OPS=${set:-none}
  if [ "$CARDSEG_FUSED_OPS" != none ] && ! step_test; then
    failed="$failed step"
    export CARDSEG_CUDA_KERNELS=scalar CARDSEG_FUSED_OPS=bn,act,dwconv,dwgrad
    step_test || { failed="$failed step3"; export CARDSEG_CUDA_KERNELS=auto CARDSEG_FUSED_OPS=none; }
  fi
  note "fused choice: CARDSEG_FUSED_OPS=$CARDSEG_FUSED_OPS CARDSEG_CUDA_KERNELS=$CARDSEG_CUDA_KERNELS (failed:${failed:- none})"
  printf 'export CARDSEG_FUSED_OPS=%s CARDSEG_CUDA_KERNELS=%s\n' "$CARDSEG_FUSED_OPS" "$CARDSEG_CUDA_KERNELS" > "$CHOICE"
  echo "{\"variant\":\"fused_choice\",\"fused\":\"$CARDSEG_FUSED_OPS\",\"cuda_kernels\":\"$CARDSEG_CUDA_KERNELS\",\"failed\":\"${failed# }\"}" >> "$RES"
}
# The fused operators on their first CUDA kernels (one float16 value per load, one thread per
# element), for the speed of the vector and strip kernels that replaced them.
check_bench_scalar() { CARDSEG_CUDA_KERNELS=scalar bench fp16_graph_scalar 180 --device $DEV --fp16 $B --steps 50 --warmup 10; }
# bench_without NAME OPS...: the step with the chosen fused set (CARDSEG_FUSED_OPS, as
# check_fused narrowed it) less OPS.
bench_without() {
  local name=$1 f=${CARDSEG_FUSED_OPS:-all} o set=""
  shift
  [ "$f" = all ] && f=bn,act,dwconv,dwgrad,se,pack,adam,loss
  for o in ${f//,/ }; do [[ " $* none " == *" $o "* ]] || set="$set,$o"; done
  set=${set#,}
  bench "$name" 180 --device $DEV --fp16 --fused "${set:-none}" $B --steps 50 --warmup 10
}
# The step with sitting 3's operators only (bn, act, dwconv, dwgrad): without pack, adam, loss
# (Concat, Split and a Cast per tensor around AdamW, AdamW in about twenty element-wise nodes,
# the loss in about forty full-resolution float32 passes) and se, for what those four save.
check_bench_nopack() { bench_without fp16_graph_nopack pack adam loss se; }
# The step without the squeeze-and-excitation operators (Mul, ReduceSum and a broadcast Add in
# ONNX operators), for what se saves.
check_bench_nose() { bench_without fp16_graph_nose se; }
# The weight gradients of the stem and the thin 1×1 layers as a thin product per image
# ("batched"), against check_bench's one product of the batch ("blockdiag", the FP16 CUDA
# default since sitting 4 timed it at 7.62 ms against 7.81 ms).
check_bench_batched() { bench fp16_graph_batched 180 --device $DEV --fp16 --wgrad-product batched $B --steps 50 --warmup 10; }
check_bench_unfused() { bench fp16_graph_unfused 180 --device $DEV --fp16 --fused none $B --steps 50 --warmup 10; }
# The step with ORT's default float16 GEMM reductions (split-K partial sums in float16), for
# the speed cost of the float32 ones the runtime asks for.
check_gemm0() { ORT_CUDA_GEMM_OPTIONS=0 bench fp16_graph_gemm0 150 --device $DEV --fp16 $B --steps 50 --warmup 10; }
check_bench() {
  if ! bench fp16_graph 180 --device $DEV --fp16 $B --steps 50 --warmup 10; then
    note "diagnose: which nodes leave the CUDA provider"
    CARDSEG_ORT_LOG_SEVERITY=1 timeout 120 bin/cardseg-ort bench train --device $DEV --fp16 $B --steps 1 --warmup 0 \
      --ort-config session.disable_cpu_ep_fallback=1 2>&1 | grep -v "^\s*$" | tail -60 >> "$LOG"
  fi
}
check_quick() { bench fp16_graph_quick 150 --device $DEV --fp16 $B --steps 20 --warmup 5; check_anchor; }
# PyTorch's train rows only, with the anchor script's own functions: eager FP32, AMP and AMP
# with channels_last (on the H200 and the H100 eager FP32 was PyTorch's best; ANCHOR_AMP=0 runs
# it alone), without torch.compile's minutes of compiling (check_torch runs everything).
check_anchor() {
  [ -n "$anchor" ] || { note "no torch_anchor.py carried"; return; }
  note "PyTorch anchor, train rows only (eager FP32, AMP, AMP + channels_last)"
  timeout 120 python3 - "$anchor" 2>>"$LOG" >> "$RES" <<'PY'
import json, sys
import torch
path = sys.argv[1]
sys.argv = [path, "/tmp/torch_anchor"]  # the script's own argument: its output folder
src = open(path).read().split("for cfg in")[0]
exec(src)
import os
cfgs = [dict(amp=False), dict(amp=True), dict(amp=True, channels_last=True)] if os.environ.get("ANCHOR_AMP", "1") == "1" else [dict(amp=False)]
for cfg in cfgs:
    torch.cuda.reset_peak_memory_stats()
    r = bench_train(**cfg)
    r["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    r["max_memory_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    print(json.dumps(r), flush=True)
PY
  note "anchor (train rows) rc=$?"
}
check_torch() {
  [ -n "$anchor" ] || { note "no torch_anchor.py carried"; return; }
  note "PyTorch anchor $anchor"
  timeout 200 python3 "$anchor" /tmp/torch_anchor 2>>"$LOG" | grep '^{' >> "$RES"; note "anchor rc=${PIPESTATUS[0]}"
}
check_smoke() {
  note "smoke training run through the pipeline on the GPU (gpu path: FP16, CUDA graphs)"
  timeout 120 bin/cardseg-ort train --preset smoke --device ${TDEV:-cuda} --precision fp16 --cuda-graph --synth-dir /tmp/synth-smoke --out /tmp/smoke >> "$LOG" 2>&1
  note "smoke train rc=$?"
}
check_profile() {
  note "profile (FP16, no CUDA graph)"
  local line prof
  line=$(timeout 150 bin/cardseg-ort bench train --device $DEV --fp16 --no-cuda-graph $B --steps 3 --warmup 2 --profile /tmp/prof_fp16 2>>"$LOG")
  prof=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("profile",""))' 2>/dev/null)
  [ -n "$prof" ] && python3 tools/gpu/profile_summary.py "$prof" >> "$LOG" 2>&1
  note "profile done"
}
# Per-node GPU times: with CUDA_LAUNCH_BLOCKING=1 every launch waits for its kernel, so the
# profile's kernel times are device times (plus ~10 us each); the profile comes back gzipped.
# DWGRAD=gather|im2col|... profiles that depthwise weight-gradient formulation (default: auto).
check_bprofile() {
  local dw=${DWGRAD:-auto}
  note "blocking profile (FP16, no CUDA graph, --dw-grad $dw)"
  local line prof
  line=$(CUDA_LAUNCH_BLOCKING=1 timeout 150 bin/cardseg-ort bench train --device $DEV --fp16 --no-cuda-graph --dw-grad "$dw" $B --steps 2 --warmup 1 --profile /tmp/bprof_$dw 2>>"$LOG")
  prof=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("profile",""))' 2>/dev/null)
  [ -n "$prof" ] && { python3 tools/gpu/profile_summary.py "$prof" >> "$LOG" 2>&1; gzip -c "$prof" > "$OUT/profile_blocking_$dw.json.gz"; }
  note "blocking profile done"
}
check_bprofile_gather() { DWGRAD=gather check_bprofile; }
check_gradtest() {
  note "CUDA gradients against the CPU's"
  timeout 120 bin/pipeline.test -test.run 'TestCUDAGradientsMatchCPU' -test.v >> "$LOG" 2>&1; note "gradient test rc=$?"
}
# Kernel by kernel device times of one FP16 step (CUDA graph replayed node by node), by Nsight
# Compute; the bench brackets its last step with cudaProfilerStart/Stop.
check_ncu() {
  local ncu; ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { note "no ncu"; return; }
  note "ncu: one FP16 step, --dw-grad ${DWGRAD:-auto}"
  CARDSEG_CUDA_PROFILE_LAST=1 timeout 300 "$ncu" --profile-from-start off --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv --log-file "$OUT/ncu_${DWGRAD:-auto}.csv" \
    bin/cardseg-ort bench train --device $DEV --fp16 --dw-grad "${DWGRAD:-auto}" $B --steps 1 --warmup 2 >> "$LOG" 2>&1
  note "ncu rc=$? $(wc -l < "$OUT/ncu_${DWGRAD:-auto}.csv" 2>/dev/null) lines"
  gzip -f "$OUT/ncu_${DWGRAD:-auto}.csv"
}
# ncu with the first kernels (CARDSEG_CUDA_KERNELS=scalar), kernel by kernel against check_ncu's.
check_ncu_scalar() {
  local ncu; ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { note "no ncu"; return; }
  note "ncu: one FP16 step, first kernels"
  CARDSEG_CUDA_KERNELS=scalar CARDSEG_CUDA_PROFILE_LAST=1 timeout 300 "$ncu" --profile-from-start off --clock-control none \
    --cache-control none --metrics gpu__time_duration.sum --csv --log-file "$OUT/ncu_scalar.csv" \
    bin/cardseg-ort bench train --device $DEV --fp16 $B --steps 1 --warmup 2 >> "$LOG" 2>&1
  note "ncu scalar rc=$? $(wc -l < "$OUT/ncu_scalar.csv" 2>/dev/null) lines"
  gzip -f "$OUT/ncu_scalar.csv"
}
# Nsight Systems on one replayed step, graph nodes traced one by one: memory copies as well as
# kernels. ncu sees only kernels, and sitting 3's step took 0.55 ms longer than its kernels;
# ONNX Runtime's CUDA Concat and Split build a host table with one int64 per row of the joined
# axis and copy it to the device on every run, which in a captured graph is a copy node per
# replay (the optimizer's packing: three tables of about 400,000 rows, ~10 MB a step).
check_nsys() {
  local nsys; nsys=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda*/bin/nsys 2>/dev/null | head -1)
  [ -n "$nsys" ] || { note "no nsys"; return; }
  note "nsys: one FP16 step, CUDA graph nodes traced"
  CARDSEG_CUDA_PROFILE_LAST=1 timeout 200 "$nsys" profile -o /tmp/nsys_step --force-overwrite true --trace cuda \
    --cuda-graph-trace node --capture-range cudaProfilerApi --capture-range-end stop \
    bin/cardseg-ort bench train --device $DEV --fp16 $B --steps 1 --warmup 2 >> "$LOG" 2>&1
  note "nsys rc=$?"
  timeout 120 "$nsys" stats --report cuda_gpu_mem_time_sum,cuda_gpu_mem_size_sum,cuda_gpu_kern_sum --format csv \
    --output "$OUT/nsys" /tmp/nsys_step.nsys-rep >> "$LOG" 2>&1
  note "nsys stats rc=$? $(ls "$OUT"/nsys_* 2>/dev/null | tr '\n' ' ')"
}
check_nograph() { bench fp16_nograph 150 --device $DEV --fp16 --no-cuda-graph $B --steps 30 --warmup 5; }
check_fp32() { bench fp32_graph 150 --device $DEV $B --steps 30 --warmup 5; }
check_taps() { bench fp16_graph_taps 150 --device $DEV --fp16 --dw-grad taps $B --steps 50 --warmup 10; }
check_gather() { bench fp16_graph_gather 150 --device $DEV --fp16 --dw-grad gather $B --steps 50 --warmup 10; }
# prefer_nhwc leaves some nodes off the CUDA provider (H200, ORT 1.29: "cannot use the graph
# capture feature"), so it is timed without CUDA graphs; compare with nograph.
check_nhwc() { bench fp16_nograph_nhwc 150 --device $DEV --fp16 --no-cuda-graph --cuda-opt prefer_nhwc=1 $B --steps 30 --warmup 5; }
check_again() { bench fp16_graph_again 150 --device $DEV --fp16 $B --steps 50 --warmup 10; }
# FP16 on the GPU against FP32 on the CPU: same data, seed and schedule. The CPU run is
# deterministic (same validation IoU on any machine), so with TRAIN_CPU=0 only the GPU run is
# made here and compared with a CPU run of the same recipe made elsewhere, e.g. the default
# `just train` recipe: TRAIN_CPU=0 TRAIN_EPOCHS=30 TRAIN_T0=29.
check_train() {
  local common="--preset cpu --epochs ${TRAIN_EPOCHS:-6} --cosine-t0 ${TRAIN_T0:-5} --synth-dir /tmp/synth --log-format json"
  local runs="gpu" cpu=""
  if [ "${TRAIN_CPU:-1}" = 1 ]; then
    runs="cpu gpu"
    note "train: FP32 on the CPU (background) and FP16 on the GPU"
    timeout ${TRAIN_LIMIT:-400} bin/cardseg-ort train $common --device cpu --precision fp32 --out /tmp/run_cpu > /tmp/run_cpu.log 2>&1 &
    cpu=$!
    for _ in $(seq 120); do ls -d /tmp/synth/synth-*/train >/dev/null 2>&1 && break; sleep 1; done # the CPU run generates the set
  else
    note "train: FP16 on the GPU ($common)"
  fi
  timeout ${TRAIN_LIMIT:-400} bin/cardseg-ort train $common --device ${TDEV:-cuda} --precision fp16 --cuda-graph --out /tmp/run_gpu > /tmp/run_gpu.log 2>&1
  note "gpu train rc=$?"
  [ -n "$cpu" ] && { wait $cpu; note "cpu train rc=$?"; }
  for r in $runs; do
    grep -h '"epoch done"\|error\|"best' /tmp/run_$r.log | tail -12 | sed "s/^/[$r] /" >> "$LOG"
    [ -f /tmp/run_$r/logs/metrics.jsonl ] && sed "s/^{/{\"variant\":\"train_$r\",/" /tmp/run_$r/logs/metrics.jsonl >> "$RES"
  done
}

# Several FP16 training runs of the default recipe on the GPU, one per TRAIN_MATRIX entry
# "FUSED:SEED" (FUSED as CARDSEG_FUSED_OPS reads it, e.g. "all:42 bn,dwgrad:42 all:43"): one
# run per build says little, since a 1e-4 change of the weight decay alone moved the FP32 CPU
# run's final IoU by 0.010. Results: variant train_gpu_FUSED_SEED in results.jsonl.
check_train_matrix() {
  local common="--preset cpu --epochs ${TRAIN_EPOCHS:-30} --cosine-t0 ${TRAIN_T0:-29} --synth-dir /tmp/synth --log-format json"
  for e in ${TRAIN_MATRIX:-all:42 bn,dwgrad:42}; do
    local f=${e%%:*} seed=${e##*:} tag="${e//[:,]/_}"
    [ "$f" = all ] && f=${CARDSEG_FUSED_OPS:-all} # check_fused's choice, when it ran
    note "train matrix $e: FP16 on the GPU, CARDSEG_FUSED_OPS=$f, seed $seed"
    CARDSEG_FUSED_OPS=$f timeout ${TRAIN_LIMIT:-120} bin/cardseg-ort train $common --seed "$seed" --device ${TDEV:-cuda} --precision fp16 --cuda-graph --out "/tmp/run_$tag" > "/tmp/run_$tag.log" 2>&1
    note "train matrix $e rc=$?"
    grep -h '"epoch done"' "/tmp/run_$tag.log" | tail -2 | sed "s/^/[$tag] /" >> "$LOG"
    [ -f "/tmp/run_$tag/logs/metrics.jsonl" ] && sed "s/^{/{\"variant\":\"train_gpu_$tag\",/" "/tmp/run_$tag/logs/metrics.jsonl" >> "$RES"
  done
}

# A later call on the same warm machine keeps the earlier call's check_fused choice.
if [[ " ${CHECKS:-} " != *" fused "* && -f $CHOICE ]]; then
  # shellcheck disable=SC1090
  source "$CHOICE"
  note "fused choice of an earlier call: CARDSEG_FUSED_OPS=$CARDSEG_FUSED_OPS CARDSEG_CUDA_KERNELS=$CARDSEG_CUDA_KERNELS"
fi
for c in ${CHECKS:-rtest tests bench anchor gather torch smoke profile bprofile nograph fp32 taps again train}; do
  if declare -F "check_$c" >/dev/null; then "check_$c"; else note "unknown check $c"; fi
done
note "done"
