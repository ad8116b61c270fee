// Batch norm (with the activation after it) for the FP16 train step on the GPU: float16
// activations in NCHW, float32 statistics and parameters. ONNX Runtime's inference build has no training-mode batch norm, so
// the decomposed form costs about fifteen full-tensor passes per layer (forward and backward,
// float32 casts included); these kernels do it in five: statistics and normalisation forward
// (two reads, one write), reductions and input gradient backward (four reads, one write).
//
// Compiled to PTX by clang (no CUDA toolkit needed), without CUDA's headers:
//   go run ./tools/gen/ptx      (writes runtime/bn_ptx.h; see there for the command)
// The driver JIT-compiles the PTX for the GPU it runs on (sm_80 and newer).
//
// Reductions are two-stage and deterministic: bn_*_partial writes per-block partial sums for
// each channel (grid: splits × channels), bn_*_finish adds them in a fixed order. Sums are taken
// around a per-channel pivot (the channel's first element) so that the variance's one-pass
// formula does not cancel when the mean is large against the spread.

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
INLINE void sync_block() { emu_sync(); }
INLINE float shfl_down(float v, int off) { return emu_shfl_down(v, off); }
#endif

// Activations fused after batch norm (the `act` argument): 0 none, 1 ReLU, 2 HardSwish
// (ONNX's: z·clamp(z/6 + 1/2, 0, 1)), and their derivatives, which the backward kernels take
// at z recomputed from x, so the pre-activation never needs storing.
INLINE float act_f(float z, int act) {
  if (act == 1) return z > 0 ? z : 0;
  if (act == 2) {
    float t = z * (1.0f / 6) + 0.5f;
    return z * (t < 0 ? 0 : (t > 1 ? 1 : t));
  }
  return z;
}

INLINE float act_d(float z, int act) {
  if (act == 1) return z > 0 ? 1 : 0;
  if (act == 2) return z < -3 ? 0 : (z > 3 ? 1 : z * (1.0f / 3) + 0.5f);
  return 1;
}

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
