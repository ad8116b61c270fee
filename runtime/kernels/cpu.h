// CPU kernels of the ai.cardseg operators: the reference the CUDA kernels (bn.cu) are tested
// against, on the GPU (graphs/model's *CUDA tests) and on the CPU through the kernels' emulation
// (emu.cc, this directory's Go package). runtime/customops.c runs them for the CPU provider. Sums in double,
// float16 rounding once at each output. Plain C that also compiles as C++; everything static.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "act.h"

// Every product and sum is rounded on its own, never fused into a multiply-add (GCC fuses
// them by default where the target has the instruction): cpu_adamw must compute what ONNX
// Runtime's separate element-wise operators compute, to the bit. This holds for the files that
// include this one, bn.cu's host build among them.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// ---- float16 conversions ----

static float half_to_float(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0) {
    if (m == 0) {
      bits = s;
    } else {  // subnormal: normalise
      e = 113;
      while (!(m & 0x400)) {
        m <<= 1;
        e--;
      }
      bits = s | (e << 23) | ((m & 0x3ff) << 13);
    }
  } else if (e == 31) {
    bits = s | 0x7f800000 | (m << 13);
  } else {
    bits = s | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// float_to_half rounds to nearest even, overflowing to infinity (as the GPU's cvt.rn.f16.f32).
static uint16_t float_to_half(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  uint16_t s = (uint16_t)((b >> 16) & 0x8000);
  uint32_t a = b & 0x7fffffff;
  if (a >= 0x7f800000) return (uint16_t)(s | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0));  // Inf, NaN
  if (a >= 0x477ff000) return (uint16_t)(s | 0x7c00);                                // rounds past 65504
  if (a < 0x38800000) {                                                              // subnormal or zero
    if (a < 0x33000001) return s;                                                    // below half the smallest
    uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // value = m·2^(e−150), in units of 2^−24: m >> (126−e)
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(s | r);
  }
  uint32_t r = ((a >> 13) - (112 << 10)), rem = a & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(s | r);
}

// cpu_bn_forward: y = act((x−μ)·γ/√(σ²+ε) + β) with the batch's mean μ and biased variance σ²
// per channel of x [N,C,HW].
static void cpu_bn_forward(const uint16_t* x, const float* gamma, const float* beta, uint16_t* y, float* mean, float* var, int N,
                           int C, int HW, float eps, int act) {
  double count = (double)N * HW;
  for (int c = 0; c < C; c++) {
    double s = 0;
    for (int n = 0; n < N; n++)
      for (int i = 0; i < HW; i++) s += half_to_float(x[((int64_t)n * C + c) * HW + i]);
    double m = s / count, q = 0;
    for (int n = 0; n < N; n++)
      for (int i = 0; i < HW; i++) {
        double t = half_to_float(x[((int64_t)n * C + c) * HW + i]) - m;
        q += t * t;
      }
    mean[c] = (float)m;
    var[c] = (float)(q / count);
    float scale = gamma[c] / sqrtf(var[c] + eps), shift = beta[c] - mean[c] * scale;
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) y[o + i] = float_to_half(act_f(half_to_float(x[o + i]) * scale + shift, act));
    }
  }
}

// cpu_bn_backward: dx, dγ, dβ for cpu_bn_forward given dy, x and the forward's statistics; the
// activation's derivative is taken at the pre-activation recomputed from x.
static void cpu_bn_backward(const uint16_t* dy, const uint16_t* x, const float* gamma, const float* beta, const float* mean,
                            const float* var, uint16_t* dx, float* dgamma, float* dbeta, int N, int C, int HW, float eps, int act) {
  float count = (float)((int64_t)N * HW);
  for (int c = 0; c < C; c++) {
    float sd = sqrtf(var[c] + eps), inv = 1 / sd;
    float scale = gamma[c] / sd, shift = beta[c] - mean[c] * scale;  // z = x·scale + shift, as forward
    double s1 = 0, s2 = 0;
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        float xv = half_to_float(x[o + i]);
        double t = half_to_float(dy[o + i]) * act_d(xv * scale + shift, act);
        s1 += t;
        s2 += t * (xv - mean[c]);
      }
    }
    dbeta[c] = (float)s1;
    dgamma[c] = (float)(s2 / sd);
    float a = gamma[c] * inv;
    float bb = -a * inv * inv * (float)s2 / count;
    float dd = -a * (float)s1 / count;
    for (int n = 0; n < N; n++) {
      int64_t o = ((int64_t)n * C + c) * HW;
      for (int i = 0; i < HW; i++) {
        float xv = half_to_float(x[o + i]);
        dx[o + i] = float_to_half(a * half_to_float(dy[o + i]) * act_d(xv * scale + shift, act) + bb * (xv - mean[c]) + dd);
      }
    }
  }
}

// Depthwise geometry: kernel kh×kw, strides, dilations, padding at the top and left; x's plane
// H×W, y's Ho×Wo. y[n,c,oy,ox] = Σ_{a,b} w[c,a,b]·x[n,c, oy·sh + a·dh − ph, ox·sw + b·dw − pw].
typedef struct {
  int kh, kw, sh, sw, dh, dw, ph, pw;
  int N, C, H, W, Ho, Wo;
} DWGeo;

// cpu_dw_grad: dW [C,1,kh,kw] of the depthwise convolution given x and dy.
static void cpu_dw_grad(const uint16_t* x, const uint16_t* dy, uint16_t* dW, DWGeo g) {
  for (int c = 0; c < g.C; c++)
    for (int a = 0; a < g.kh; a++)
      for (int b = 0; b < g.kw; b++) {
        double s = 0;
        for (int n = 0; n < g.N; n++) {
          const uint16_t* xp = x + ((int64_t)n * g.C + c) * g.H * g.W;
          const uint16_t* gp = dy + ((int64_t)n * g.C + c) * g.Ho * g.Wo;
          for (int oy = 0; oy < g.Ho; oy++) {
            int iy = oy * g.sh + a * g.dh - g.ph;
            if (iy < 0 || iy >= g.H) continue;
            for (int ox = 0; ox < g.Wo; ox++) {
              int ix = ox * g.sw + b * g.dw - g.pw;
              if (ix >= 0 && ix < g.W) s += (double)half_to_float(gp[oy * g.Wo + ox]) * half_to_float(xp[iy * g.W + ix]);
            }
          }
        }
        dW[(c * g.kh + a) * g.kw + b] = float_to_half((float)s);
      }
}

// cpu_dw_conv: y = conv(x, w) (grad 0: in is x, out is y) or the convolution's input gradient
// (grad 1: in is dy, out is dx), float32 sums.
static void cpu_dw_conv(const uint16_t* in, const uint16_t* w, uint16_t* out, DWGeo g, int grad) {
  for (int64_t nc = 0; nc < (int64_t)g.N * g.C; nc++) {
    int c = (int)(nc % g.C);
    if (!grad) {
      const uint16_t* xs = in + nc * g.H * g.W;
      for (int oy = 0; oy < g.Ho; oy++)
        for (int ox = 0; ox < g.Wo; ox++) {
          float s = 0;
          for (int a = 0; a < g.kh; a++)
            for (int b = 0; b < g.kw; b++) {
              int iy = oy * g.sh + a * g.dh - g.ph, ix = ox * g.sw + b * g.dw - g.pw;
              if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
                s += half_to_float(w[(c * g.kh + a) * g.kw + b]) * half_to_float(xs[iy * g.W + ix]);
            }
          out[nc * g.Ho * g.Wo + oy * g.Wo + ox] = float_to_half(s);
        }
    } else {
      const uint16_t* gs = in + nc * g.Ho * g.Wo;
      float* tmp = (float*)calloc((size_t)g.H * g.W, sizeof(float));
      for (int oy = 0; oy < g.Ho; oy++)
        for (int ox = 0; ox < g.Wo; ox++)
          for (int a = 0; a < g.kh; a++)
            for (int b = 0; b < g.kw; b++) {
              int iy = oy * g.sh + a * g.dh - g.ph, ix = ox * g.sw + b * g.dw - g.pw;
              if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
                tmp[iy * g.W + ix] += half_to_float(w[(c * g.kh + a) * g.kw + b]) * half_to_float(gs[oy * g.Wo + ox]);
            }
      for (int i = 0; i < g.H * g.W; i++) out[nc * g.H * g.W + i] = float_to_half(tmp[i]);
      free(tmp);
    }
  }
}

// ---- PackRows / UnpackRows ----

// cpu_pack: the n tensors ptrs[j] (sizes[j] elements, float16 where half[j]) laid end to end in
// the float32 m of total elements, zeros after them (unpack 0); or m's elements back into the
// tensors (unpack 1).
static void cpu_pack(int n, void* const* ptrs, const int64_t* sizes, const unsigned char* half, float* m, int64_t total, int unpack) {
  int64_t at = 0;
  for (int j = 0; j < n; j++) {
    for (int64_t i = 0; i < sizes[j]; i++) {
      if (unpack) {
        if (half[j]) {
          ((uint16_t*)ptrs[j])[i] = float_to_half(m[at + i]);
        } else {
          ((float*)ptrs[j])[i] = m[at + i];
        }
      } else {
        m[at + i] = half[j] ? half_to_float(((const uint16_t*)ptrs[j])[i]) : ((const float*)ptrs[j])[i];
      }
    }
    at += sizes[j];
  }
  if (!unpack && at < total) memset(m + at, 0, (size_t)(total - at) * sizeof(float));
}

// ---- AdamW ----

// cpu_adamw is bn.cu's adamw (see there) on the CPU: sc holds decay, step size, 1/√(1 − β2^t)
// and gscale.
static void cpu_adamw(const float* p, const float* g, const float* m, const float* v, float* p2, float* m2, float* v2, const float* sc,
                      int skip, int64_t total, int64_t P, float b1, float b2, float eps) {
  float omb1 = 1.0f - b1, omb2 = 1.0f - b2;  // float32, as the graph's constants
  for (int64_t i = 0; i < total; i++) {
    float mi = i < P ? m[i] : 0.0f, vi = i < P ? v[i] : 0.0f;
    if (skip) {
      p2[i] = p[i];
      if (i < P) {
        m2[i] = mi;
        v2[i] = vi;
      }
      continue;
    }
    float gi = g[i] * sc[3];
    float mn = mi * b1 + gi * omb1;
    float vn = vi * b2 + (gi * gi) * omb2;
    float den = sqrtf(vn) * sc[2] + eps;
    p2[i] = p[i] * sc[0] - (mn / den) * sc[1];
    if (i < P) {
      m2[i] = mn;
      v2[i] = vn;
    }
  }
}

// ---- the segmentation loss (bn.cu's seg_*, in double) ----

static void cpu_seg_pixel(const uint16_t* zn, int K, int64_t HW, int64_t i, double* lse, double* p1) {
  double m = half_to_float(zn[i]);
  for (int k = 1; k < K; k++) {
    double v = half_to_float(zn[k * HW + i]);
    m = v > m ? v : m;
  }
  double s = 0;
  for (int k = 0; k < K; k++) s += exp(half_to_float(zn[k * HW + i]) - m);
  *lse = m + log(s);
  *p1 = K > 1 ? exp(half_to_float(zn[HW + i]) - *lse) : 0.0;
}

// cpu_seg_parts: per image n, ce[n] = Σ −log softmax at the label, inter[n] = Σ p·t, ps[n] = Σ p,
// ts[n] = Σ t, pix[n] = pixels whose label is a class.
static void cpu_seg_parts(const uint16_t* z, const int64_t* y, float* ce, float* inter, float* ps, float* ts, float* pix, int N, int K,
                          int64_t HW) {
  for (int n = 0; n < N; n++) {
    const uint16_t* zn = z + (int64_t)n * K * HW;
    double a[5] = {0, 0, 0, 0, 0};
    for (int64_t i = 0; i < HW; i++) {
      int64_t lab = y[n * HW + i];
      double lse, p1;
      cpu_seg_pixel(zn, K, HW, i, &lse, &p1);
      if (lab >= 0 && lab < K) {
        a[0] += lse - half_to_float(zn[lab * HW + i]);
        a[4] += 1;
      }
      double t = lab == 1;
      a[1] += p1 * t;
      a[2] += p1;
      a[3] += t;
    }
    ce[n] = (float)a[0], inter[n] = (float)a[1], ps[n] = (float)a[2], ts[n] = (float)a[3], pix[n] = (float)a[4];
  }
}

// cpu_seg_grad: the loss's gradient with respect to z given those of ce, inter and ps.
static void cpu_seg_grad(const uint16_t* z, const int64_t* y, const float* dce, const float* dinter, const float* dp, uint16_t* dz, int N,
                         int K, int64_t HW) {
  for (int n = 0; n < N; n++) {
    const uint16_t* zn = z + (int64_t)n * K * HW;
    uint16_t* dn = dz + (int64_t)n * K * HW;
    for (int64_t i = 0; i < HW; i++) {
      int64_t lab = y[n * HW + i];
      double lse, p1;
      cpu_seg_pixel(zn, K, HW, i, &lse, &p1);
      double cce = lab >= 0 && lab < K ? dce[n] : 0.0, cp = (lab == 1 ? dinter[n] : 0.0) + dp[n];
      for (int k = 0; k < K; k++) {
        double sk = exp(half_to_float(zn[k * HW + i]) - lse);
        dn[k * HW + i] = float_to_half((float)(cce * (sk - (lab == k)) + cp * p1 * ((k == 1) - sk)));
      }
    }
  }
}

// ---- squeeze-and-excitation: ChannelScale16 and ChannelDot16 ----

// cpu_channel_scale: y[p,i] = x[p,i]·s[p] + t[p] over P planes of HW elements, in float32
// (each product and sum rounded once, never fused), rounded to float16 once.
static void cpu_channel_scale(const uint16_t* x, const uint16_t* s, const uint16_t* t, uint16_t* y, int64_t P, int64_t HW) {
  for (int64_t p = 0; p < P; p++) {
    volatile float sc = half_to_float(s[p]), sh = half_to_float(t[p]);
    for (int64_t i = 0; i < HW; i++) {
      volatile float m = half_to_float(x[p * HW + i]) * sc;
      y[p * HW + i] = float_to_half(m + sh);
    }
  }
}

// cpu_channel_dot: out[p] = Σ_i a[p,i]·b[p,i] over P planes of HW elements (double sums).
static void cpu_channel_dot(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t P, int64_t HW) {
  for (int64_t p = 0; p < P; p++) {
    double s = 0;
    for (int64_t i = 0; i < HW; i++) s += (double)half_to_float(a[p * HW + i]) * half_to_float(b[p * HW + i]);
    out[p] = float_to_half((float)s);
  }
}
