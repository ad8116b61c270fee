// CUDA kernels of our custom operators (ai.cardseg) for the FP16 train step: batch norm with
// the activation after it, and depthwise convolutions, forward and backward; float16
// activations in NCHW, float32 statistics, parameters and sums. ONNX Runtime's inference build
// has no training-mode batch norm, so the decomposed form costs about fifteen full-tensor passes
// per layer (forward and backward, float32 casts included); these kernels do it in five or
// fewer: statistics and normalisation forward (two reads, one write; one and one for small
// channels), reductions and input gradient backward (four reads, one write; two and one).
// launch.h says which kernels each operator runs; cpu.h has the CPU kernels they are tested
// against, on the GPU and through the CPU emulation of these kernels (emu.cc).
//
// Compiled to PTX by clang (no CUDA toolkit needed), without CUDA's headers:
//   go run ./tools/gen/ptx      (writes runtime/bn_ptx.h; see there for the command)
// The driver JIT-compiles the PTX for the GPU it runs on (sm_80 and newer).
//
// Reductions are deterministic: per-block partial sums for each channel (grid: splits ×
// channels), then a fixed-order sum of them (bn_*_finish, or each block of the vector
// kernels). Sums are taken around a per-channel pivot (the channel's first element) so that
// the variance's one-pass formula does not cancel when the mean is large against the spread.

#if defined(__CUDA__)  // clang -x cuda: the GPU build
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define INLINE static __device__ __attribute__((always_inline))

typedef unsigned short u16;

INLINE float h2f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

INLINE u16 f2h(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

INLINE unsigned tid() { return __nvvm_read_ptx_sreg_tid_x(); }
INLINE unsigned ntid() { return __nvvm_read_ptx_sreg_ntid_x(); }
INLINE unsigned bx() { return __nvvm_read_ptx_sreg_ctaid_x(); }
INLINE unsigned by() { return __nvvm_read_ptx_sreg_ctaid_y(); }
INLINE unsigned nbx() { return __nvvm_read_ptx_sreg_nctaid_x(); }
INLINE float sqrt_rn(float x) { return __nvvm_sqrt_rn_f(x); }
// Single roundings, never contracted into fused multiply-adds: the fused AdamW computes what
// ONNX Runtime's separate element-wise kernels compute, to the bit. Inline PTX with .rn, which
// neither LLVM (it turns the nvvm builtins into plain fmul and fuses them) nor ptxas (it may
// fuse a mul and add written without a rounding mode) contracts.
INLINE float mul_rn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
INLINE float add_rn(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
INLINE float div_rn(float a, float b) { return __nvvm_div_rn_f(a, b); }
// exp and log through the special-function unit (no libdevice here): relative error about
// 2^-22, ample for the loss.
INLINE float exp_f(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.4426950408889634f));
  return r;
}
INLINE float log_f(float x) {
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r * 0.6931471805599453f;
}
INLINE void sync_block() { __syncthreads(); }
// shfl_down: lane l gets lane l+off's v (its own where l+off ≥ 32); all 32 lanes take part.
INLINE float shfl_down(float v, int off) { return __nvvm_shfl_sync_down_f32(0xffffffffu, v, off, 0x1f); }
#else  // the host: emu.cc runs these kernels on the CPU (it defines the emu_* calls)
#define __global__
#define __device__
#define __shared__ static  // one block runs at a time
#define INLINE static inline

typedef unsigned short u16;

INLINE float h2f(u16 h) { return half_to_float(h); }
INLINE u16 f2h(float f) { return float_to_half(f); }
INLINE unsigned tid() { return emu_tid(); }
INLINE unsigned ntid() { return emu_ntid(); }
INLINE unsigned bx() { return emu_bx(); }
INLINE unsigned by() { return emu_by(); }
INLINE unsigned nbx() { return emu_nbx(); }
INLINE float sqrt_rn(float x) { return sqrtf(x); }
INLINE float mul_rn(float a, float b) { return a * b; }
INLINE float add_rn(float a, float b) { return a + b; }
INLINE float div_rn(float a, float b) { return a / b; }
INLINE float exp_f(float x) { return expf(x); }
INLINE float log_f(float x) { return logf(x); }
INLINE void sync_block() { emu_sync(); }
INLINE float shfl_down(float v, int off) { return emu_shfl_down(v, off); }
#endif

// The activation fused after batch norm (the `act` argument) and its derivative.
#ifndef ACT_INLINE  // (the emulation has act.h already, through cpu.h)
#define ACT_INLINE INLINE
#endif
#include "act.h"
#include "pack.h"

#define THREADS 256

// block_sum2 adds a and b over the block (THREADS threads); thread 0 gets the totals.
INLINE void block_sum2(float* a, float* b) {
  __shared__ float sa[THREADS], sb[THREADS];
  unsigned t = tid();
  sa[t] = *a;
  sb[t] = *b;
  sync_block();
  for (unsigned s = THREADS / 2; s > 0; s >>= 1) {
    if (t < s) {
      sa[t] += sa[t + s];
      sb[t] += sb[t + s];
    }
    sync_block();
  }
  *a = sa[0];
  *b = sb[0];
}

// The channel's slice [lo, hi) of each image's plane handled by block x of nbx splits.
INLINE void slice(int HW, int* lo, int* hi) {
  int per = (HW + (int)nbx() - 1) / (int)nbx();
  *lo = (int)bx() * per;
  *hi = *lo + per < HW ? *lo + per : HW;
}

// bn_fwd_partial: grid (S, C). part[(c*S+s)*2+{0,1}] = Σ(x−k), Σ(x−k)² over block s's slice of
// channel c, k = x[0,c,0].
extern "C" __global__ void bn_fwd_partial(const u16* x, float* part, int N, int C, int HW) {
  int c = (int)by(), lo, hi;
  slice(HW, &lo, &hi);
  float k = h2f(x[(long)c * HW]);
  float s1 = 0, s2 = 0;
  for (int n = 0; n < N; n++) {
    const u16* p = x + ((long)n * C + c) * HW;
    int i = lo + (int)tid();
    for (; i + 3 * THREADS < hi; i += 4 * THREADS) {
      float a = h2f(p[i]) - k, b = h2f(p[i + THREADS]) - k, d = h2f(p[i + 2 * THREADS]) - k, e = h2f(p[i + 3 * THREADS]) - k;
      s1 += (a + b) + (d + e);
      s2 += (a * a + b * b) + (d * d + e * e);
    }
    for (; i < hi; i += THREADS) {
      float a = h2f(p[i]) - k;
      s1 += a;
      s2 += a * a;
    }
  }
  block_sum2(&s1, &s2);
  if (tid() == 0) {
    long o = ((long)c * nbx() + bx()) * 2;
    part[o] = s1;
    part[o + 1] = s2;
  }
}

// bn_fwd_finish: one thread per channel. mean and biased variance from the partials.
extern "C" __global__ void bn_fwd_finish(const u16* x, const float* part, float* mean, float* var, int C, int HW, int S, float count) {
  int c = (int)(bx() * ntid() + tid());
  if (c >= C) return;
  float k = h2f(x[(long)c * HW]);
  float s1 = 0, s2 = 0;
  for (int s = 0; s < S; s++) {
    s1 += part[((long)c * S + s) * 2];
    s2 += part[((long)c * S + s) * 2 + 1];
  }
  float m = s1 / count;
  float v = s2 / count - m * m;
  mean[c] = k + m;
  var[c] = v > 0 ? v : 0;
}

// bn_fwd_apply: grid (X, N*C). y = act((x−μ)·γ/√(σ²+ε) + β).
extern "C" __global__ void bn_fwd_apply(const u16* x, const float* gamma, const float* beta, const float* mean,
                                        const float* var, u16* y, int C, int HW, float eps, int act) {
  int nc = (int)by(), c = nc % C, lo, hi;
  slice(HW, &lo, &hi);
  float scale = gamma[c] / sqrt_rn(var[c] + eps);
  float shift = beta[c] - mean[c] * scale;
  const u16* p = x + (long)nc * HW;
  u16* q = y + (long)nc * HW;
  int i = lo + (int)tid();
  for (; i + 3 * THREADS < hi; i += 4 * THREADS) { // four loads in flight per thread
    u16 a = p[i], b = p[i + THREADS], d = p[i + 2 * THREADS], e = p[i + 3 * THREADS];
    q[i] = f2h(act_f(h2f(a) * scale + shift, act));
    q[i + THREADS] = f2h(act_f(h2f(b) * scale + shift, act));
    q[i + 2 * THREADS] = f2h(act_f(h2f(d) * scale + shift, act));
    q[i + 3 * THREADS] = f2h(act_f(h2f(e) * scale + shift, act));
  }
  for (; i < hi; i += THREADS) q[i] = f2h(act_f(h2f(p[i]) * scale + shift, act));
}

// bn_bwd_partial: grid (S, C). part = Σdz, Σdz·(x−μ) over the slice, dz = dy·act'(z) with z the
// forward's pre-activation, recomputed from x exactly as bn_fwd_apply computed it.
extern "C" __global__ void bn_bwd_partial(const u16* dy, const u16* x, const float* gamma, const float* beta, const float* mean,
                                          const float* var, float* part, int N, int C, int HW, float eps, int act) {
  int c = (int)by(), lo, hi;
  slice(HW, &lo, &hi);
  float m = mean[c];
  float scale = gamma[c] / sqrt_rn(var[c] + eps);
  float shift = beta[c] - m * scale;
  float s1 = 0, s2 = 0;
  for (int n = 0; n < N; n++) {
    long base = ((long)n * C + c) * HW;
    const u16* g = dy + base;
    const u16* p = x + base;
    int i = lo + (int)tid();
    for (; i + THREADS < hi; i += 2 * THREADS) {
      float x0 = h2f(p[i]), x1 = h2f(p[i + THREADS]);
      float a = h2f(g[i]) * act_d(x0 * scale + shift, act), b = h2f(g[i + THREADS]) * act_d(x1 * scale + shift, act);
      s1 += a + b;
      s2 += a * (x0 - m) + b * (x1 - m);
    }
    for (; i < hi; i += THREADS) {
      float x0 = h2f(p[i]);
      float a = h2f(g[i]) * act_d(x0 * scale + shift, act);
      s1 += a;
      s2 += a * (x0 - m);
    }
  }
  block_sum2(&s1, &s2);
  if (tid() == 0) {
    long o = ((long)c * nbx() + bx()) * 2;
    part[o] = s1;
    part[o + 1] = s2;
  }
}

// bn_bwd_finish: one thread per channel. dβ = Σdy, dγ = Σdy·(x−μ)/√(σ²+ε).
extern "C" __global__ void bn_bwd_finish(const float* part, const float* var, float* dgamma, float* dbeta, int C, int S, float eps) {
  int c = (int)(bx() * ntid() + tid());
  if (c >= C) return;
  float s1 = 0, s2 = 0;
  for (int s = 0; s < S; s++) {
    s1 += part[((long)c * S + s) * 2];
    s2 += part[((long)c * S + s) * 2 + 1];
  }
  dbeta[c] = s1;
  dgamma[c] = s2 / sqrt_rn(var[c] + eps);
}

// bn_bwd_apply: grid (X, N*C). dx = a·dz + b·(x−μ) + d with dz = dy·act'(z), a = γ/σ,
// b = −a·Σdz(x−μ)/(M·σ²), d = −a·Σdz/M (σ = √(σ²+ε), M = count).
extern "C" __global__ void bn_bwd_apply(const u16* dy, const u16* x, const float* gamma, const float* beta, const float* mean,
                                        const float* var, const float* dgamma, const float* dbeta, u16* dx, int C, int HW, float eps,
                                        float count, int act) {
  int nc = (int)by(), c = nc % C, lo, hi;
  slice(HW, &lo, &hi);
  float sd = sqrt_rn(var[c] + eps);
  float inv = 1 / sd;
  float a = gamma[c] * inv;
  float sdyxc = dgamma[c] * sd;
  float b = -a * inv * inv * sdyxc / count;
  float d = -a * dbeta[c] / count;
  float m = mean[c];
  float scale = gamma[c] / sd;
  float shift = beta[c] - m * scale;
  long base = (long)nc * HW;
  const u16* g = dy + base;
  const u16* p = x + base;
  u16* q = dx + base;
  int i = lo + (int)tid();
  for (; i + THREADS < hi; i += 2 * THREADS) { // four loads in flight per thread
    u16 g0 = g[i], g1 = g[i + THREADS], p0 = p[i], p1 = p[i + THREADS];
    float x0 = h2f(p0), x1 = h2f(p1);
    q[i] = f2h(a * h2f(g0) * act_d(x0 * scale + shift, act) + b * (x0 - m) + d);
    q[i + THREADS] = f2h(a * h2f(g1) * act_d(x1 * scale + shift, act) + b * (x1 - m) + d);
  }
  for (; i < hi; i += THREADS) {
    float x0 = h2f(p[i]);
    q[i] = f2h(a * h2f(g[i]) * act_d(x0 * scale + shift, act) + b * (x0 - m) + d);
  }
}

// ---- batch norm on 8-wide vectors ----
//
// The same arithmetic as the kernels above for planes of a multiple of 8 elements on 16-byte
// aligned tensors (every layer of the network at the GPU preset's sizes): each load and store
// moves eight float16 values, where the kernels above move one; a block's threads walk all N
// planes of its channel as one range, so that small planes still fill whole blocks; and the
// element-wise kernels add up the partial sums themselves, so the finish kernels' launches go.
// launch.h picks these when the shapes and pointers allow.

typedef unsigned int u32x4 __attribute__((vector_size(16)));

INLINE float lo_h(unsigned v) { return h2f((u16)(v & 0xffffu)); }
INLINE float hi_h(unsigned v) { return h2f((u16)(v >> 16)); }
INLINE unsigned pack_h(float a, float b) { return (unsigned)f2h(a) | ((unsigned)f2h(b) << 16); }

// The channel's slice [lo, hi) of each plane's HW/8 vectors handled by block x of nbx splits.
INLINE void slice8(int HW, int* lo, int* hi) { slice(HW >> 3, lo, hi); }

// moments8 adds v's eight values less k, and their squares, to s1 and s2.
INLINE void moments8(u32x4 v, float k, float* s1, float* s2) {
#pragma unroll
  for (int j = 0; j < 4; j++) {
    float a = lo_h(v[j]) - k, b = hi_h(v[j]) - k;
    *s1 += a + b;
    *s2 += a * a + b * b;
  }
}

// bn_fwd_partial8: bn_fwd_partial on vectors; the block walks its slice of all N planes as one
// range, so that every thread has loads in flight however short the slice.
extern "C" __global__ void bn_fwd_partial8(const u16* x, float* part, int N, int C, int HW) {
  int c = (int)by(), lo, hi;
  slice8(HW, &lo, &hi);
  float k = h2f(x[(long)c * HW]);
  float s1 = 0, s2 = 0;
  int len = hi - lo, items = N * len;  // the slice of every image, as one range
  if (len > 0) {
    const u32x4* p = (const u32x4*)x;
    long plane = (long)C * (HW >> 3), first = (long)c * (HW >> 3) + lo;
    int i = (int)tid();
    for (; i + THREADS < items; i += 2 * THREADS) {  // two loads in flight per thread
      int j = i + THREADS;
      u32x4 a = p[first + (long)(i / len) * plane + i % len], b = p[first + (long)(j / len) * plane + j % len];
      moments8(a, k, &s1, &s2);
      moments8(b, k, &s1, &s2);
    }
    if (i < items) moments8(p[first + (long)(i / len) * plane + i % len], k, &s1, &s2);
  }
  block_sum2(&s1, &s2);
  if (tid() == 0) {
    long o = ((long)c * nbx() + bx()) * 2;
    part[o] = s1;
    part[o + 1] = s2;
  }
}

// partial_totals: every thread of the block gets channel c's totals of the S partial sums
// (fixed order: each block of the channel gets the same bits).
INLINE void partial_totals(const float* part, int c, int S, float* s1, float* s2) {
  float a = 0, b = 0;
  for (int s = (int)tid(); s < S; s += THREADS) {
    a += part[((long)c * S + s) * 2];
    b += part[((long)c * S + s) * 2 + 1];
  }
  block_sum2(&a, &b);
  *s1 = a;
  *s2 = b;
}

// bn_fwd_apply8: grid (X, C): blocks of channel c share its N·HW/8 vectors. Each block first
// takes the channel's mean and biased variance from bn_fwd_partial8's sums (what
// bn_fwd_finish computes, without a launch of its own; block 0 writes them out), then
// y = act((x−μ)·γ/√(σ²+ε) + β).
extern "C" __global__ void bn_fwd_apply8(const u16* x, const float* part, const float* gamma, const float* beta, float* mean,
                                         float* var, u16* y, int N, int C, int HW, int S, float count, float eps, int act) {
  int c = (int)by();
  float s1, s2;
  partial_totals(part, c, S, &s1, &s2);
  float k = h2f(x[(long)c * HW]);
  float m = s1 / count;
  float v = s2 / count - m * m;
  float mu = k + m, sigma2 = v > 0 ? v : 0;
  if (bx() == 0 && tid() == 0) {
    mean[c] = mu;
    var[c] = sigma2;
  }
  float scale = gamma[c] / sqrt_rn(sigma2 + eps);
  float shift = beta[c] - mu * scale;
  const u32x4* p = (const u32x4*)x;
  u32x4* q = (u32x4*)y;
  int HW8 = HW >> 3, items = N * HW8;
  for (int it = (int)(bx() * THREADS + tid()); it < items; it += (int)(nbx() * THREADS)) {
    int n = it / HW8;
    long i = ((long)n * C + c) * HW8 + (it - n * HW8);
    u32x4 v8 = p[i], r;
#pragma unroll
    for (int j = 0; j < 4; j++) r[j] = pack_h(act_f(lo_h(v8[j]) * scale + shift, act), act_f(hi_h(v8[j]) * scale + shift, act));
    q[i] = r;
  }
}

// bn_bwd_partial8: bn_bwd_partial on vectors.
extern "C" __global__ void bn_bwd_partial8(const u16* dy, const u16* x, const float* gamma, const float* beta, const float* mean,
                                           const float* var, float* part, int N, int C, int HW, float eps, int act) {
  int c = (int)by(), lo, hi;
  slice8(HW, &lo, &hi);
  float m = mean[c];
  float scale = gamma[c] / sqrt_rn(var[c] + eps);
  float shift = beta[c] - m * scale;
  float s1 = 0, s2 = 0;
  int len = hi - lo, items = N * len;  // the slice of every image, as one range
  const u32x4* g = (const u32x4*)dy;
  const u32x4* p = (const u32x4*)x;
  long plane = (long)C * (HW >> 3), first = (long)c * (HW >> 3) + lo;
  for (int it = (int)tid(); it < items; it += THREADS) {
    long i = first + (long)(it / len) * plane + it % len;
    u32x4 gv = g[i], xv = p[i];
#pragma unroll
    for (int j = 0; j < 4; j++) {
      float x0 = lo_h(xv[j]), x1 = hi_h(xv[j]);
      float a = lo_h(gv[j]) * act_d(x0 * scale + shift, act), b = hi_h(gv[j]) * act_d(x1 * scale + shift, act);
      s1 += a + b;
      s2 += a * (x0 - m) + b * (x1 - m);
    }
  }
  block_sum2(&s1, &s2);
  if (tid() == 0) {
    long o = ((long)c * nbx() + bx()) * 2;
    part[o] = s1;
    part[o + 1] = s2;
  }
}

// bn_bwd_apply8: grid (X, C), as bn_fwd_apply8: each block takes dβ = Σdz and dγ = Σdz·(x−μ)/σ
// from bn_bwd_partial8's sums (block 0 writes them out), then bn_bwd_apply's arithmetic.
extern "C" __global__ void bn_bwd_apply8(const u16* dy, const u16* x, const float* part, const float* gamma, const float* beta,
                                         const float* mean, const float* var, float* dgamma, float* dbeta, u16* dx, int N, int C,
                                         int HW, int S, float count, float eps, int act) {
  int c = (int)by();
  float sdz, sdzx;
  partial_totals(part, c, S, &sdz, &sdzx);
  float sd = sqrt_rn(var[c] + eps);
  if (bx() == 0 && tid() == 0) {
    dbeta[c] = sdz;
    dgamma[c] = sdzx / sd;
  }
  float inv = 1 / sd;
  float a = gamma[c] * inv;
  float b = -a * inv * inv * sdzx / count;
  float d = -a * sdz / count;
  float m = mean[c];
  float scale = gamma[c] / sd;
  float shift = beta[c] - m * scale;
  const u32x4* g = (const u32x4*)dy;
  const u32x4* p = (const u32x4*)x;
  u32x4* q = (u32x4*)dx;
  int HW8 = HW >> 3, items = N * HW8;
  for (int it = (int)(bx() * THREADS + tid()); it < items; it += (int)(nbx() * THREADS)) {
    int n = it / HW8;
    long i = ((long)n * C + c) * HW8 + (it - n * HW8);
    u32x4 gv = g[i], xv = p[i], r;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      float x0 = lo_h(xv[j]), x1 = hi_h(xv[j]);
      r[j] = pack_h(a * lo_h(gv[j]) * act_d(x0 * scale + shift, act) + b * (x0 - m) + d,
                    a * hi_h(gv[j]) * act_d(x1 * scale + shift, act) + b * (x1 - m) + d);
    }
    q[i] = r;
  }
}

// ---- batch norm of small channels in one pass ----
//
// A channel of at most 256·8·SMALL_R elements (N·H·W; at 480×640 every 30×40 layer, a third
// of the network's batch-norm traffic) fits in one block's registers: each thread loads its
// SMALL_R vectors once, the block sums them, and the output is computed from the registers.
// Forward one read and one write instead of two reads and one write, backward two reads and
// one write instead of four and one, one launch each instead of two. grid (1, C).

#define SMALL_R 6  // launch.h's K_SMALL_VECTORS

// bn_fwd_small8: BatchNormTrain16 for one channel per block (mean, biased variance, y).
extern "C" __global__ void bn_fwd_small8(const u16* x, const float* gamma, const float* beta, float* mean, float* var, u16* y, int N,
                                         int C, int HW, float count, float eps, int act) {
  int c = (int)by(), HW8 = HW >> 3, items = N * HW8;
  const u32x4* p = (const u32x4*)x;
  u32x4* q = (u32x4*)y;
  float k = h2f(x[(long)c * HW]);
  float s1 = 0, s2 = 0;
  u32x4 v[SMALL_R];
#pragma unroll
  for (int r = 0; r < SMALL_R; r++) {
    int it = (int)tid() + r * THREADS;
    if (it < items) {
      int n = it / HW8;
      v[r] = p[((long)n * C + c) * HW8 + (it - n * HW8)];
      moments8(v[r], k, &s1, &s2);
    }
  }
  block_sum2(&s1, &s2);
  float m = s1 / count;
  float d = s2 / count - m * m;
  float mu = k + m, sigma2 = d > 0 ? d : 0;
  if (tid() == 0) {
    mean[c] = mu;
    var[c] = sigma2;
  }
  float scale = gamma[c] / sqrt_rn(sigma2 + eps);
  float shift = beta[c] - mu * scale;
#pragma unroll
  for (int r = 0; r < SMALL_R; r++) {
    int it = (int)tid() + r * THREADS;
    if (it < items) {
      int n = it / HW8;
      u32x4 o;
#pragma unroll
      for (int j = 0; j < 4; j++) o[j] = pack_h(act_f(lo_h(v[r][j]) * scale + shift, act), act_f(hi_h(v[r][j]) * scale + shift, act));
      q[((long)n * C + c) * HW8 + (it - n * HW8)] = o;
    }
  }
}

// bn_bwd_small8: BatchNormTrain16Grad for one channel per block (dγ, dβ, dx).
extern "C" __global__ void bn_bwd_small8(const u16* dy, const u16* x, const float* gamma, const float* beta, const float* mean,
                                         const float* var, float* dgamma, float* dbeta, u16* dx, int N, int C, int HW, float count,
                                         float eps, int act) {
  int c = (int)by(), HW8 = HW >> 3, items = N * HW8;
  const u32x4* g = (const u32x4*)dy;
  const u32x4* p = (const u32x4*)x;
  u32x4* q = (u32x4*)dx;
  float m = mean[c];
  float sd = sqrt_rn(var[c] + eps);
  float scale = gamma[c] / sd;
  float shift = beta[c] - m * scale;
  float s1 = 0, s2 = 0;
  u32x4 gv[SMALL_R], xv[SMALL_R];
#pragma unroll
  for (int r = 0; r < SMALL_R; r++) {
    int it = (int)tid() + r * THREADS;
    if (it < items) {
      int n = it / HW8;
      long i = ((long)n * C + c) * HW8 + (it - n * HW8);
      gv[r] = g[i];
      xv[r] = p[i];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        float x0 = lo_h(xv[r][j]), x1 = hi_h(xv[r][j]);
        float a = lo_h(gv[r][j]) * act_d(x0 * scale + shift, act), b = hi_h(gv[r][j]) * act_d(x1 * scale + shift, act);
        s1 += a + b;
        s2 += a * (x0 - m) + b * (x1 - m);
      }
    }
  }
  block_sum2(&s1, &s2);
  if (tid() == 0) {
    dbeta[c] = s1;
    dgamma[c] = s2 / sd;
  }
  float inv = 1 / sd;
  float a = gamma[c] * inv;
  float b = -a * inv * inv * s2 / count;
  float d = -a * s1 / count;
#pragma unroll
  for (int r = 0; r < SMALL_R; r++) {
    int it = (int)tid() + r * THREADS;
    if (it < items) {
      int n = it / HW8;
      u32x4 o;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        float x0 = lo_h(xv[r][j]), x1 = hi_h(xv[r][j]);
        o[j] = pack_h(a * lo_h(gv[r][j]) * act_d(x0 * scale + shift, act) + b * (x0 - m) + d,
                      a * hi_h(gv[r][j]) * act_d(x1 * scale + shift, act) + b * (x1 - m) + d);
      }
      q[((long)n * C + c) * HW8 + (it - n * HW8)] = o;
    }
  }
}

// ---- depthwise convolution weight gradient ----
//
// dW[c,0,a,b] = Σ_{n,y,x} dy[n,c,y,x] · x[n,c, y·sh + a·dh − ph, x·sw + b·dw − pw] (zero outside),
// for the FP16 step's depthwise layers: one pass over dy with the k×k taps read from cache,
// float32 sums, instead of unfolding k² copies of the input (Gather) for a batched MatMul.
// dw_partial_k<K>: grid (S, C), per-block partial sums part[(c·S+s)·K² + tap]; dw_finish adds
// them into dW (float16).

INLINE float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += shfl_down(v, off);
  return v;
}

template <int KH, int KW>
INLINE void dw_partial(const u16* x, const u16* dy, float* part, int N, int C, int H, int W, int Ho, int Wo, int sh, int sw,
                       int dh, int dw, int ph, int pw) {
  const int K = KH * KW;
  int c = (int)by(), lo, hi;
  slice(Ho * Wo, &lo, &hi);
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; k++) acc[k] = 0;
  for (int n = 0; n < N; n++) {
    const u16* xs = x + ((long)n * C + c) * H * W;
    const u16* gs = dy + ((long)n * C + c) * Ho * Wo;
    for (int i = lo + (int)tid(); i < hi; i += THREADS) {
      int oy = i / Wo, ox = i - oy * Wo;
      float g = h2f(gs[i]);
      int y0 = oy * sh - ph, x0 = ox * sw - pw;
#pragma unroll
      for (int a = 0; a < KH; a++) {
        int iy = y0 + a * dh;
        if (iy >= 0 && iy < H) {
          const u16* row = xs + (long)iy * W;
#pragma unroll
          for (int b = 0; b < KW; b++) {
            int ix = x0 + b * dw;
            if (ix >= 0 && ix < W) acc[a * KW + b] += g * h2f(row[ix]);
          }
        }
      }
    }
  }
  __shared__ float red[25][THREADS / 32];
  unsigned lane = tid() & 31, warp = tid() >> 5;
#pragma unroll
  for (int k = 0; k < K; k++) {
    float v = warp_sum(acc[k]);
    if (lane == 0) red[k][warp] = v;
  }
  sync_block();
  if ((int)tid() < K) {
    float s = 0;
    for (int w = 0; w < THREADS / 32; w++) s += red[tid()][w];
    part[((long)c * nbx() + bx()) * K + tid()] = s;
  }
}

extern "C" __global__ void dw_partial_k3(const u16* x, const u16* dy, float* part, int N, int C, int H, int W, int Ho, int Wo,
                                         int sh, int sw, int dh, int dw, int ph, int pw) {
  dw_partial<3, 3>(x, dy, part, N, C, H, W, Ho, Wo, sh, sw, dh, dw, ph, pw);
}

extern "C" __global__ void dw_partial_k5(const u16* x, const u16* dy, float* part, int N, int C, int H, int W, int Ho, int Wo,
                                         int sh, int sw, int dh, int dw, int ph, int pw) {
  dw_partial<5, 5>(x, dy, part, N, C, H, W, Ho, Wo, sh, sw, dh, dw, ph, pw);
}

// dw_finish: one thread per weight (C·K of them).
extern "C" __global__ void dw_finish(const float* part, u16* dW, int C, int K, int S) {
  int i = (int)(bx() * ntid() + tid());
  if (i >= C * K) return;
  int c = i / K, t = i - c * K;
  float s = 0;
  for (int j = 0; j < S; j++) s += part[((long)c * S + j) * K + t];
  dW[i] = f2h(s);
}

// ---- depthwise convolution, forward and input gradient ----
//
// y[n,c,oy,ox] = Σ_{a,b} w[c,a,b] · x[n,c, oy·sh + a·dh − ph, ox·sw + b·dw − pw] (zero outside), and
// dx[n,c,iy,ix] = Σ_{a,b} w[c,a,b] · dy[n,c,oy,ox] over the (oy, ox) with oy·sh + a·dh − ph = iy and
// ox·sw + b·dw − pw = ix (strides 1 or 2). One thread per output (input) element, the taps from cache, float32
// sums: cuDNN ran several of the network's depthwise layers on slow direct kernels (ncu, H100:
// 1.7 ms of a 15 ms step in six forward and two backward calls). grid (X, N·C), X blocks a plane.

template <int KH, int KW>
INLINE void dwconv_fwd(const u16* x, const u16* w, u16* y, int C, int H, int W, int Ho, int Wo, int sh, int sw, int dh, int dw,
                       int ph, int pw) {
  int nc = (int)by(), c = nc % C, lo, hi;
  slice(Ho * Wo, &lo, &hi);
  float k[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; t++) k[t] = h2f(w[c * KH * KW + t]);
  const u16* xs = x + (long)nc * H * W;
  u16* ys = y + (long)nc * Ho * Wo;
  for (int i = lo + (int)tid(); i < hi; i += THREADS) {
    int oy = i / Wo, ox = i - oy * Wo;
    int y0 = oy * sh - ph, x0 = ox * sw - pw;
    float s = 0;
#pragma unroll
    for (int a = 0; a < KH; a++) {
      int iy = y0 + a * dh;
      if (iy >= 0 && iy < H) {
        const u16* row = xs + (long)iy * W;
#pragma unroll
        for (int b = 0; b < KW; b++) {
          int ix = x0 + b * dw;
          if (ix >= 0 && ix < W) s += k[a * KW + b] * h2f(row[ix]);
        }
      }
    }
    ys[i] = f2h(s);
  }
}

template <int KH, int KW>
INLINE void dwconv_dgrad(const u16* dy, const u16* w, u16* dx, int C, int H, int W, int Ho, int Wo, int sh, int sw, int dh, int dw,
                         int ph, int pw) {
  int nc = (int)by(), c = nc % C, lo, hi;
  slice(H * W, &lo, &hi);
  float k[KH * KW];
#pragma unroll
  for (int t = 0; t < KH * KW; t++) k[t] = h2f(w[c * KH * KW + t]);
  const u16* gs = dy + (long)nc * Ho * Wo;
  u16* xs = dx + (long)nc * H * W;
  for (int i = lo + (int)tid(); i < hi; i += THREADS) {
    int iy = i / W, ix = i - iy * W;
    float s = 0;
#pragma unroll
    for (int a = 0; a < KH; a++) {
      int ty = iy + ph - a * dh;  // = oy·sh
      if (ty < 0) continue;
      int oy = ty >> (sh - 1);  // strides are 1 or 2
      if ((oy << (sh - 1)) != ty || oy >= Ho) continue;
      const u16* row = gs + (long)oy * Wo;
#pragma unroll
      for (int b = 0; b < KW; b++) {
        int tx = ix + pw - b * dw;
        if (tx < 0) continue;
        int ox = tx >> (sw - 1);
        if ((ox << (sw - 1)) == tx && ox < Wo) s += k[a * KW + b] * h2f(row[ox]);
      }
    }
    xs[i] = f2h(s);
  }
}

#define DW_ARGS int C, int H, int W, int Ho, int Wo, int sh, int sw, int dh, int dw, int ph, int pw
#define DW_PASS C, H, W, Ho, Wo, sh, sw, dh, dw, ph, pw
extern "C" __global__ void dwconv_fwd_k3(const u16* x, const u16* w, u16* y, DW_ARGS) { dwconv_fwd<3, 3>(x, w, y, DW_PASS); }
extern "C" __global__ void dwconv_fwd_k5(const u16* x, const u16* w, u16* y, DW_ARGS) { dwconv_fwd<5, 5>(x, w, y, DW_PASS); }
extern "C" __global__ void dwconv_dgrad_k3(const u16* dy, const u16* w, u16* dx, DW_ARGS) { dwconv_dgrad<3, 3>(dy, w, dx, DW_PASS); }
extern "C" __global__ void dwconv_dgrad_k5(const u16* dy, const u16* w, u16* dx, DW_ARGS) { dwconv_dgrad<5, 5>(dy, w, dx, DW_PASS); }

// ---- depthwise convolution and its input gradient, eight outputs per thread ----
//
// The kernels above spend their time on per-tap index arithmetic and bounds checks (one
// thread per output, k² taps each). These give each thread a strip of 8 consecutive outputs of
// a row: per kernel row they load the input window the strip needs once (bounds-checked), then
// do the 8·k multiply-adds from registers, and store the strip with one 16-byte store when the
// rows allow. Grid-stride over the N·C·Hout·⌈Wout/8⌉ strips. launch.h uses them for the
// network's geometries and keeps the kernels above for any other.
//
// dw_strip: out[oy, ox] = Σ_{a,b} w'[a,b] · in[oy·S + a·D − ph, ox·S + b·D − pw], where w' is
// the filter (FLIP 0: the forward convolution) or the filter turned by 180° (FLIP 1: the input
// gradient of a stride-1 convolution, with the padding (K−1)·D − p and in = dy).

#define STRIP 8

INLINE void store_strip(u16* o, const float* acc, int n, int vec) {
  if (vec) {  // n == STRIP and o 16-byte aligned
    u32x4 r;
#pragma unroll
    for (int j = 0; j < 4; j++) r[j] = pack_h(acc[2 * j], acc[2 * j + 1]);
    *(u32x4*)o = r;
    return;
  }
#pragma unroll
  for (int j = 0; j < STRIP; j++)
    if (j < n) o[j] = f2h(acc[j]);
}

// load_window: win[i] = row[i0 + i] as a float, 0 outside [0, n), for i < L (a kernel row's
// window of the input a strip needs).
template <int L>
INLINE void load_window(const u16* row, int i0, int n, float* win) {
#pragma unroll
  for (int i = 0; i < L; i++) {
    int ix = i0 + i;
    win[i] = ix >= 0 && ix < n ? h2f(row[ix]) : 0.0f;
  }
}

template <int K, int S, int D, int FLIP>
INLINE void dw_strip(const u16* in, const u16* w, u16* out, int C, int Hin, int Win, int Hout, int Wout, int ph, int pw,
                     unsigned total, int vec) {
  const int L = (STRIP - 1) * S + (K - 1) * D + 1;  // the window of one kernel row
  unsigned SX = (unsigned)(Wout + STRIP - 1) / STRIP, step = nbx() * THREADS;
  for (unsigned item = bx() * THREADS + tid(); item < total; item += step) {
    unsigned sx = item % SX, t = item / SX;
    int oy = (int)(t % (unsigned)Hout), nc = (int)(t / (unsigned)Hout), c = nc % C;
    int ox0 = (int)sx * STRIP;
    const u16* wc = w + c * K * K;
    const u16* plane = in + (long)nc * Hin * Win;
    int ix0 = ox0 * S - pw;
    float acc[STRIP];
#pragma unroll
    for (int j = 0; j < STRIP; j++) acc[j] = 0;
#pragma unroll
    for (int a = 0; a < K; a++) {
      int iy = oy * S + a * D - ph;
      if (iy < 0 || iy >= Hin) continue;
      const u16* row = plane + (long)iy * Win;
      float win[L];
      load_window<L>(row, ix0, Win, win);
#pragma unroll
      for (int b = 0; b < K; b++) {
        float kv = h2f(wc[FLIP ? K * K - 1 - (a * K + b) : a * K + b]);
#pragma unroll
        for (int j = 0; j < STRIP; j++) acc[j] += kv * win[j * S + b * D];
      }
    }
    int n = Wout - ox0 < STRIP ? Wout - ox0 : STRIP;
    store_strip(out + ((long)nc * Hout + oy) * Wout + ox0, acc, n, vec);
  }
}

// dw_dgrad_s2: the input gradient of a stride-2 convolution with padding P = (K−1)/2 and no
// dilation: dx[iy, ix] = Σ w[a,b] · dy[(iy + P − a)/2, (ix + P − b)/2] over the taps where both
// are whole. A strip starts at an even ix, so which taps reach each of its outputs, and where
// in the dy window, is fixed at compile time.
template <int K>
INLINE void dw_dgrad_s2(const u16* dy, const u16* w, u16* dx, int C, int H, int W, int Ho, int Wo, unsigned total, int vec) {
  const int P = (K - 1) / 2;
  const int B = -((K - 1 - P) / 2);           // the window's first dy column less ix0/2: the least whole (j + P − b)/2
  const int L = (STRIP - 1 + P) / 2 - B + 1;  // its length
  unsigned SX = (unsigned)(W + STRIP - 1) / STRIP, step = nbx() * THREADS;
  for (unsigned item = bx() * THREADS + tid(); item < total; item += step) {
    unsigned sx = item % SX, t = item / SX;
    int iy = (int)(t % (unsigned)H), nc = (int)(t / (unsigned)H), c = nc % C;
    int ix0 = (int)sx * STRIP;
    const u16* wc = w + c * K * K;
    const u16* plane = dy + (long)nc * Ho * Wo;
    int ox0 = ix0 / 2 + B;
    float acc[STRIP];
#pragma unroll
    for (int j = 0; j < STRIP; j++) acc[j] = 0;
#pragma unroll
    for (int a = 0; a < K; a++) {
      int ty = iy + P - a;
      if (ty < 0 || (ty & 1) || (ty >> 1) >= Ho) continue;
      const u16* row = plane + (long)(ty >> 1) * Wo;
      float win[L];
      load_window<L>(row, ox0, Wo, win);
#pragma unroll
      for (int b = 0; b < K; b++) {
        float kv = h2f(wc[a * K + b]);
#pragma unroll
        for (int j = 0; j < STRIP; j++)
          if (((j + P - b) & 1) == 0) acc[j] += kv * win[(j + P - b) / 2 - B];
      }
    }
    int n = W - ix0 < STRIP ? W - ix0 : STRIP;
    store_strip(dx + ((long)nc * H + iy) * W + ix0, acc, n, vec);
  }
}

#define STRIP_ARGS const u16 *in, const u16 *w, u16 *out, int C, int Hin, int Win, int Hout, int Wout, int ph, int pw, unsigned total, int vec
#define STRIP_PASS in, w, out, C, Hin, Win, Hout, Wout, ph, pw, total, vec
extern "C" __global__ void dws_k3s1d1(STRIP_ARGS) { dw_strip<3, 1, 1, 0>(STRIP_PASS); }
extern "C" __global__ void dws_k3s2d1(STRIP_ARGS) { dw_strip<3, 2, 1, 0>(STRIP_PASS); }
extern "C" __global__ void dws_k5s1d1(STRIP_ARGS) { dw_strip<5, 1, 1, 0>(STRIP_PASS); }
extern "C" __global__ void dws_k5s2d1(STRIP_ARGS) { dw_strip<5, 2, 1, 0>(STRIP_PASS); }
extern "C" __global__ void dws_k5s1d2(STRIP_ARGS) { dw_strip<5, 1, 2, 0>(STRIP_PASS); }
extern "C" __global__ void dwsf_k3s1d1(STRIP_ARGS) { dw_strip<3, 1, 1, 1>(STRIP_PASS); }
extern "C" __global__ void dwsf_k5s1d1(STRIP_ARGS) { dw_strip<5, 1, 1, 1>(STRIP_PASS); }
extern "C" __global__ void dwsf_k5s1d2(STRIP_ARGS) { dw_strip<5, 1, 2, 1>(STRIP_PASS); }
// (ph, pw are unused: P = (K−1)/2 is the kernel's.)
extern "C" __global__ void dwd2_k3(STRIP_ARGS) { dw_dgrad_s2<3>(in, w, out, C, Hout, Wout, Hin, Win, total, vec); }
extern "C" __global__ void dwd2_k5(STRIP_ARGS) { dw_dgrad_s2<5>(in, w, out, C, Hout, Wout, Hin, Win, total, vec); }

// dw_wgrad_strip: dw_partial on strips of 8 dy values of a row: per kernel row the x window
// the strip needs is loaded once and the k·8 products summed from registers. grid (S, C): block
// s of channel c sums over its slice of the channel's N·Ho·⌈Wo/8⌉ strips, into the same partial
// sums dw_finish adds.
template <int K, int S, int D>
INLINE void dw_wgrad_strip(const u16* x, const u16* dy, float* part, int N, int C, int H, int W, int Ho, int Wo, int ph, int pw) {
  const int L = (STRIP - 1) * S + (K - 1) * D + 1;
  int c = (int)by(), lo, hi;
  int SX = (Wo + STRIP - 1) / STRIP;
  slice(N * Ho * SX, &lo, &hi);
  float acc[K * K];
#pragma unroll
  for (int k = 0; k < K * K; k++) acc[k] = 0;
  for (int item = lo + (int)tid(); item < hi; item += THREADS) {
    int sx = item % SX, t = item / SX;
    int oy = t % Ho, n = t / Ho;
    int ox0 = sx * STRIP;
    const u16* xs = x + ((long)n * C + c) * H * W;
    const u16* gs = dy + (((long)n * C + c) * Ho + oy) * Wo + ox0;
    float g[STRIP];
#pragma unroll
    for (int j = 0; j < STRIP; j++) g[j] = ox0 + j < Wo ? h2f(gs[j]) : 0.0f;
    int ix0 = ox0 * S - pw;
#pragma unroll
    for (int a = 0; a < K; a++) {
      int iy = oy * S + a * D - ph;
      if (iy < 0 || iy >= H) continue;
      const u16* row = xs + (long)iy * W;
      float win[L];
      load_window<L>(row, ix0, W, win);
#pragma unroll
      for (int b = 0; b < K; b++) {
        float s = 0;
#pragma unroll
        for (int j = 0; j < STRIP; j++) s += g[j] * win[j * S + b * D];
        acc[a * K + b] += s;
      }
    }
  }
  __shared__ float red[25][THREADS / 32];
  unsigned lane = tid() & 31, warp = tid() >> 5;
#pragma unroll
  for (int k = 0; k < K * K; k++) {
    float v = warp_sum(acc[k]);
    if (lane == 0) red[k][warp] = v;
  }
  sync_block();
  if ((int)tid() < K * K) {
    float s = 0;
    for (int w = 0; w < THREADS / 32; w++) s += red[tid()][w];
    part[((long)c * nbx() + bx()) * K * K + tid()] = s;
  }
}

#define WGRAD_ARGS const u16 *x, const u16 *dy, float *part, int N, int C, int H, int W, int Ho, int Wo, int ph, int pw
#define WGRAD_PASS x, dy, part, N, C, H, W, Ho, Wo, ph, pw
extern "C" __global__ void dwg_k3s1d1(WGRAD_ARGS) { dw_wgrad_strip<3, 1, 1>(WGRAD_PASS); }
extern "C" __global__ void dwg_k3s2d1(WGRAD_ARGS) { dw_wgrad_strip<3, 2, 1>(WGRAD_PASS); }
extern "C" __global__ void dwg_k5s1d1(WGRAD_ARGS) { dw_wgrad_strip<5, 1, 1>(WGRAD_PASS); }
extern "C" __global__ void dwg_k5s2d1(WGRAD_ARGS) { dw_wgrad_strip<5, 2, 1>(WGRAD_PASS); }
extern "C" __global__ void dwg_k5s1d2(WGRAD_ARGS) { dw_wgrad_strip<5, 1, 2>(WGRAD_PASS); }

// ---- PackRows / UnpackRows: the optimizer's [rows, 8] float32 matrix and the tensors in it ----
//
// Grid (X, t.count): block row j moves tensor j, X blocks striding over its elements (a short
// tensor leaves most of its row idle: they return at once). The table stays in the parameter
// space: clang addresses it there (ld.param through a register), no local copy.

// pack_rows: out[start[j] + i] = tensor j's element i, as float32 (0 for a NULL tensor).
extern "C" __global__ void pack_rows(KPackTable t, float* out) {
  int j = (int)by();
  long long lo = t.start[j], n = t.start[j + 1] - lo;
  const void* p = t.ptr[j];
  int half = t.half[j];
  float* o = out + lo;
  long long step = (long long)nbx() * THREADS;
  for (long long i = (long long)bx() * THREADS + tid(); i < n; i += step) {
    float v = 0;
    if (p) v = half ? h2f(((const u16*)p)[i]) : ((const float*)p)[i];
    o[i] = v;
  }
}

// unpack_rows: tensor j's element i = in[start[j] + i], as float16 (rounded to nearest even)
// where t.half[j], else float32.
extern "C" __global__ void unpack_rows(KPackTable t, const float* in) {
  int j = (int)by();
  long long lo = t.start[j], n = t.start[j + 1] - lo;
  void* p = t.ptr[j];
  const float* s = in + lo;
  long long step = (long long)nbx() * THREADS;
  if (t.half[j]) {
    u16* o = (u16*)p;
    for (long long i = (long long)bx() * THREADS + tid(); i < n; i += step) o[i] = f2h(s[i]);
  } else {
    float* o = (float*)p;
    for (long long i = (long long)bx() * THREADS + tid(); i < n; i += step) o[i] = s[i];
  }
}

// ---- AdamW over the packed parameters ----
//
// adamw: torch.optim.AdamW's step on every element at once, one pass: p, g [total] (the packed
// matrix), m, v [P] (flat; elements P… of the matrix are its zero padding and have none),
// the step's scalars in device memory (decay 1 − lr·wd, step size lr/(1 − β1^t), 1/√(1 − β2^t),
// and gscale, which multiplies g: the loss scale's reciprocal, times the clipping factor), and
// skip (the step's gradients held Inf or NaN: everything is kept). The operations and their
// order are those of graphs/step's adamW.update, each rounded once.
extern "C" __global__ void adamw(const float* p, const float* g, const float* m, const float* v, float* p2, float* m2, float* v2,
                                 const float* decay, const float* step_size, const float* inv_sq_bc2, const float* gscale,
                                 const unsigned char* skip, int total, int P, float b1, float b2, float eps) {
  float dc = *decay, ss = *step_size, ib = *inv_sq_bc2, gs = *gscale;
  int keep = *skip != 0;
  float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
  int step = (int)(nbx() * THREADS);
  for (int i = (int)(bx() * THREADS + tid()); i < total; i += step) {
    float mi = i < P ? m[i] : 0.0f, vi = i < P ? v[i] : 0.0f;
    if (keep) {
      p2[i] = p[i];
      if (i < P) {
        m2[i] = mi;
        v2[i] = vi;
      }
      continue;
    }
    float gi = mul_rn(g[i], gs);
    float mn = add_rn(mul_rn(mi, b1), mul_rn(gi, omb1));
    float vn = add_rn(mul_rn(vi, b2), mul_rn(mul_rn(gi, gi), omb2));
    float den = add_rn(mul_rn(sqrt_rn(vn), ib), eps);
    p2[i] = add_rn(mul_rn(p[i], dc), -mul_rn(div_rn(mn, den), ss));
    if (i < P) {
      m2[i] = mn;
      v2[i] = vn;
    }
  }
}

// ---- the segmentation loss: cross-entropy and soft Dice, forward and backward ----
//
// On float16 logits z [N,K,HW] and int64 labels y [N,HW]: per image, the sums graphs/step's
// SegLoss builds the loss from (the cross-entropy −log softmax at the label, p·t, p and t for
// p = softmax of class 1 and t = [y = 1], and the pixels whose label is a class), and the
// gradient of the loss with respect to z given the gradients of those sums. Softmax in float32
// around the pixel's largest logit.

// seg_pixel: the log-sum-exp of pixel i's logits and its class-1 probability.
INLINE void seg_pixel(const u16* z, int K, int HW, int i, float* lse, float* p1) {
  float m = h2f(z[i]);
  for (int k = 1; k < K; k++) {
    float v = h2f(z[(long)k * HW + i]);
    m = v > m ? v : m;
  }
  float s = 0;
  for (int k = 0; k < K; k++) s += exp_f(h2f(z[(long)k * HW + i]) - m);
  *lse = m + log_f(s);
  *p1 = K > 1 ? exp_f(h2f(z[(long)HW + i]) - *lse) : 0.0f;
}

// seg_partial: grid (S, N). part[(n·S + s)·5 + j], j = cross-entropy, p·t, p, t, pixels, over
// block s's slice of image n.
extern "C" __global__ void seg_partial(const u16* z, const long long* y, float* part, int K, int HW) {
  int n = (int)by(), lo, hi;
  slice(HW, &lo, &hi);
  const u16* zn = z + (long)n * K * HW;
  const long long* yn = y + (long)n * HW;
  float ce = 0, inter = 0, ps = 0, ts = 0, pix = 0;
  for (int i = lo + (int)tid(); i < hi; i += THREADS) {
    long long lab = yn[i];
    float lse, p1;
    seg_pixel(zn, K, HW, i, &lse, &p1);
    if (lab >= 0 && lab < K) {
      ce += lse - h2f(zn[lab * HW + i]);
      pix += 1;
    }
    float t = lab == 1 ? 1.0f : 0.0f;
    inter += p1 * t;
    ps += p1;
    ts += t;
  }
  block_sum2(&ce, &inter);
  block_sum2(&ps, &ts);
  float unused = 0;
  block_sum2(&pix, &unused);
  if (tid() == 0) {
    float* o = part + ((long)n * nbx() + bx()) * 5;
    o[0] = ce;
    o[1] = inter;
    o[2] = ps;
    o[3] = ts;
    o[4] = pix;
  }
}

// seg_finish: one block; out_j[n] = Σ_s part[(n·S + s)·5 + j] in order.
extern "C" __global__ void seg_finish(const float* part, float* ce, float* inter, float* ps, float* ts, float* pix, int N, int S) {
  for (int q = (int)tid(); q < N * 5; q += THREADS) {
    int n = q / 5, j = q % 5;
    float sum = 0;
    for (int s = 0; s < S; s++) sum += part[((long)n * S + s) * 5 + j];
    float* out = j == 0 ? ce : j == 1 ? inter : j == 2 ? ps : j == 3 ? ts : pix;
    out[n] = sum;
  }
}

// seg_grad: dz[n,k,i] = dce[n]·(softmax_k − [y = k]) (0 where y is no class) +
// (dinter[n]·t + dp[n])·p·([k = 1] − softmax_k), over the N·HW pixels (grid-stride).
extern "C" __global__ void seg_grad(const u16* z, const long long* y, const float* dce, const float* dinter, const float* dp, u16* dz,
                                    int K, int HW, unsigned total) {
  unsigned step = nbx() * THREADS;
  for (unsigned item = bx() * THREADS + tid(); item < total; item += step) {
    int n = (int)(item / (unsigned)HW), i = (int)(item % (unsigned)HW);
    const u16* zn = z + (long)n * K * HW;
    u16* dn = dz + (long)n * K * HW;
    long long lab = y[item];
    float lse, p1;
    seg_pixel(zn, K, HW, i, &lse, &p1);
    float cce = lab >= 0 && lab < K ? dce[n] : 0.0f;
    float cp = (lab == 1 ? dinter[n] : 0.0f) + dp[n];
    for (int k = 0; k < K; k++) {
      float sk = exp_f(h2f(zn[(long)k * HW + i]) - lse);
      float g = cce * (sk - (lab == k ? 1.0f : 0.0f)) + cp * p1 * ((k == 1 ? 1.0f : 0.0f) - sk);
      dn[(long)k * HW + i] = f2h(g);
    }
  }
}

// ---- squeeze-and-excitation: a channel's scale and its gradient ----
//
// channel_scale: y = x·s + t for each plane p of N·C (s, t: one float16 per plane): the
// squeeze-and-excitation block's scaling (t = 0), and its input gradient dy·s plus the mean
// pool's gradient (t = dpool/HW), one pass instead of a product and a broadcast sum. Grid (X,
// P); 8-wide when vec. The product and the sum are rounded separately, as in ONNX Runtime's
// kernels and the CPU kernel (cpu_channel_scale).
extern "C" __global__ void channel_scale(const u16* x, const u16* s, const u16* t, u16* y, int HW, int vec) {
  long p = (long)by();
  float sc = h2f(s[p]), sh = h2f(t[p]);
  int step = (int)(nbx() * THREADS);
  if (vec) {
    const u32x4* xv = (const u32x4*)(x + p * HW);
    u32x4* yv = (u32x4*)(y + p * HW);
    for (int i = (int)(bx() * THREADS + tid()); i < (HW >> 3); i += step) {
      u32x4 v8 = xv[i], r;
#pragma unroll
      for (int j = 0; j < 4; j++) r[j] = pack_h(add_rn(mul_rn(lo_h(v8[j]), sc), sh), add_rn(mul_rn(hi_h(v8[j]), sc), sh));
      yv[i] = r;
    }
    return;
  }
  for (int i = (int)(bx() * THREADS + tid()); i < HW; i += step) y[p * HW + i] = f2h(add_rn(mul_rn(h2f(x[p * HW + i]), sc), sh));
}

// channel_dot: out[p] = Σ a·b over plane p (the gradient of the scale: dy against the block's
// input), one block per plane (grid (1, P)), float32 sums in a fixed order; 8-wide when vec.
extern "C" __global__ void channel_dot(const u16* a, const u16* b, u16* out, int HW, int vec) {
  long p = (long)by();
  float acc = 0;
  if (vec) {
    const u32x4* av = (const u32x4*)(a + p * HW);
    const u32x4* bv = (const u32x4*)(b + p * HW);
    for (int i = (int)tid(); i < (HW >> 3); i += THREADS) {
      u32x4 u = av[i], v = bv[i];
#pragma unroll
      for (int j = 0; j < 4; j++) acc += lo_h(u[j]) * lo_h(v[j]) + hi_h(u[j]) * hi_h(v[j]);
    }
  } else {
    for (int i = (int)tid(); i < HW; i += THREADS) acc += h2f(a[p * HW + i]) * h2f(b[p * HW + i]);
  }
  __shared__ float red[THREADS / 32];
  acc = warp_sum(acc);
  unsigned lane = tid() & 31, warp = tid() >> 5;
  if (lane == 0) red[warp] = acc;
  sync_block();
  if (tid() == 0) {
    float s = 0;
    for (int w = 0; w < THREADS / 32; w++) s += red[w];
    out[p] = f2h(s);
  }
}
