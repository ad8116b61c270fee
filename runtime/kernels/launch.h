// Launch plans for the CUDA kernels in bn.cu: which kernels each ai.cardseg operator runs, in
// what order, on what grid and with what arguments. runtime/customops.c launches them through
// the CUDA driver; emu.cc (this directory's Go package) runs the same plans on the CPU with bn.cu compiled for
// the host, so the grids and argument lists are tested without a GPU. Plain C that also
// compiles as C++; everything static.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pack.h"

// The kernels, in the order of kf_names (the PTX's entry points).
enum {
  KF_FWD_PARTIAL,
  KF_FWD_FINISH,
  KF_FWD_APPLY,
  KF_BWD_PARTIAL,
  KF_BWD_FINISH,
  KF_BWD_APPLY,
  KF_DW_K3,
  KF_DW_K5,
  KF_DW_FINISH,
  KF_CONV_K3,
  KF_CONV_K5,
  KF_DGRAD_K3,
  KF_DGRAD_K5,
  KF_FWD_PARTIAL8,
  KF_FWD_APPLY8,
  KF_BWD_PARTIAL8,
  KF_BWD_APPLY8,
  KF_DWS_K3S1D1,  // the strip kernels, forward: geometry (kernel, stride, dilation)
  KF_DWS_K3S2D1,
  KF_DWS_K5S1D1,
  KF_DWS_K5S2D1,
  KF_DWS_K5S1D2,
  KF_DWSF_K3S1D1,  // flipped: input gradients of stride-1 convolutions
  KF_DWSF_K5S1D1,
  KF_DWSF_K5S1D2,
  KF_DWD2_K3,  // input gradients of stride-2 convolutions
  KF_DWD2_K5,
  KF_DWG_K3S1D1,  // weight gradients on strips
  KF_DWG_K3S2D1,
  KF_DWG_K5S1D1,
  KF_DWG_K5S2D1,
  KF_DWG_K5S1D2,
  KF_FWD_SMALL8,  // batch norm of a small channel in one pass
  KF_BWD_SMALL8,
  KF_PACK,  // PackRows and UnpackRows
  KF_UNPACK,
  KF_ADAMW,
  KF_SEG_PARTIAL,  // the segmentation loss
  KF_SEG_FINISH,
  KF_SEG_GRAD,
  KF_CH_SCALE,  // squeeze-and-excitation: the channel scale and its gradient
  KF_CH_DOT,
  KF_COUNT
};

static const char* const kf_names[KF_COUNT] = {
    "bn_fwd_partial", "bn_fwd_finish", "bn_fwd_apply",  "bn_bwd_partial", "bn_bwd_finish",   "bn_bwd_apply",    "dw_partial_k3",
    "dw_partial_k5",  "dw_finish",     "dwconv_fwd_k3", "dwconv_fwd_k5",  "dwconv_dgrad_k3", "dwconv_dgrad_k5",
    "bn_fwd_partial8", "bn_fwd_apply8", "bn_bwd_partial8", "bn_bwd_apply8",   "dws_k3s1d1",     "dws_k3s2d1",      "dws_k5s1d1",
    "dws_k5s2d1",     "dws_k5s1d2",    "dwsf_k3s1d1",    "dwsf_k5s1d1",     "dwsf_k5s1d2",    "dwd2_k3",         "dwd2_k5",
    "dwg_k3s1d1",     "dwg_k3s2d1",    "dwg_k5s1d1",     "dwg_k5s2d1",      "dwg_k5s1d2",
    "bn_fwd_small8",  "bn_bwd_small8",  "pack_rows",      "unpack_rows",     "adamw",
    "seg_partial",    "seg_finish",      "seg_grad",        "channel_scale",  "channel_dot",
};

enum {
  K_THREADS = 256,       // threads per block: bn.cu's THREADS
  K_SMALL_VECTORS = 6,   // bn.cu's SMALL_R: bn_*_small8 take channels of up to K_THREADS·8·6 elements
};

// k_launch runs kernel f on a gx × gy grid of K_THREADS-thread blocks; args point at the
// kernel's arguments in order, then NULL (the driver reads as many as the kernel takes; the
// emulation checks the count). It returns 0 or an error code (the caller keeps the message).
typedef int (*k_launch)(void* ctx, int f, unsigned gx, unsigned gy, void** args);

// k_apply_blocks is the x-dimension of the element-wise kernels' grid: about 1024 elements per
// block and plane.
static unsigned k_apply_blocks(int64_t hw) {
  int64_t b = (hw + 4 * K_THREADS - 1) / (4 * K_THREADS);
  return (unsigned)(b < 1 ? 1 : b);
}

static unsigned k_per_thread(int64_t n) { return (unsigned)((n + K_THREADS - 1) / K_THREADS); }

// k_scalar_only, when set, keeps every operator on its first kernels (one float16 value per
// load, one thread per element), for comparing them with the faster ones on a GPU
// (CARDSEG_CUDA_KERNELS=scalar) and for testing both.
static int k_scalar_only;

// k_vectors: whether tensors of N planes of hw elements per channel at these addresses can take
// the 8-wide kernels: planes of a multiple of 8 elements, 16-byte aligned, fewer than 2^31
// vectors per channel.
static int k_vectors(int64_t n, int64_t hw, const void* a, const void* b, const void* d, const void* e) {
  uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)d | (uintptr_t)e;
  return !k_scalar_only && hw % 8 == 0 && (bits & 15) == 0 && n * hw / 8 < ((int64_t)1 << 31);
}

// k_small: whether a channel of N planes of hw elements fits the one-pass kernels (bn_*_small8).
static int k_small(int64_t n, int64_t hw) { return n * hw <= K_THREADS * 8 * K_SMALL_VECTORS; }

// k_stride_blocks is the grid of a grid-stride kernel over total items: about two per thread.
static unsigned k_stride_blocks(int64_t total) {
  int64_t b = (total + 2 * K_THREADS - 1) / (2 * K_THREADS);
  return (unsigned)(b < 1 ? 1 : b);
}

// k_strip_kernel is the strip kernel for a depthwise geometry (forward, or the input gradient:
// grad), or −1 where there is none and the one-thread-per-element kernels run.
static int k_strip_kernel(int k, int sh, int sw, int dh, int dw, int ph, int pw, int grad) {
  if (k_scalar_only || sh != sw || dh != dw) return -1;
  int s = sh, d = dh;
  if (!grad) {
    if (d == 1) return k == 3 ? (s == 1 ? KF_DWS_K3S1D1 : KF_DWS_K3S2D1) : (s == 1 ? KF_DWS_K5S1D1 : KF_DWS_K5S2D1);
    return k == 5 && s == 1 && d == 2 ? KF_DWS_K5S1D2 : -1;
  }
  if (s == 1) return d == 1 ? (k == 3 ? KF_DWSF_K3S1D1 : KF_DWSF_K5S1D1) : (k == 5 && d == 2 ? KF_DWSF_K5S1D2 : -1);
  if (d == 1 && ph == (k - 1) / 2 && pw == (k - 1) / 2) return k == 3 ? KF_DWD2_K3 : KF_DWD2_K5;
  return -1;
}

// k_bn_forward: BatchNormTrain16 on x [N,C,HW] with S partial sums per channel (part holds 2·C·S floats).
static int k_bn_forward(k_launch L, void* ctx, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* var,
                        float* part, int N, int C, int HW, int S, float eps, int act) {
  float count = (float)((int64_t)N * HW);
  int rc;
  int vec = k_vectors(N, HW, x, y, x, y);
  if (vec && k_small(N, HW)) {
    void* s1[] = {&x, &gamma, &beta, &mean, &var, &y, &N, &C, &HW, &count, &eps, &act, NULL};
    return L(ctx, KF_FWD_SMALL8, 1, (unsigned)C, s1);  // (part is left unused)
  }
  if (vec) {
    void* v1[] = {&x, &part, &N, &C, &HW, NULL};
    if ((rc = L(ctx, KF_FWD_PARTIAL8, (unsigned)S, (unsigned)C, v1))) return rc;
    void* v2[] = {&x, &part, &gamma, &beta, &mean, &var, &y, &N, &C, &HW, &S, &count, &eps, &act, NULL};
    return L(ctx, KF_FWD_APPLY8, k_stride_blocks((int64_t)N * HW / 8), (unsigned)C, v2);
  }
  void* a1[] = {&x, &part, &N, &C, &HW, NULL};
  if ((rc = L(ctx, KF_FWD_PARTIAL, (unsigned)S, (unsigned)C, a1))) return rc;
  void* a2[] = {&x, &part, &mean, &var, &C, &HW, &S, &count, NULL};
  if ((rc = L(ctx, KF_FWD_FINISH, k_per_thread(C), 1, a2))) return rc;
  void* a3[] = {&x, &gamma, &beta, &mean, &var, &y, &C, &HW, &eps, &act, NULL};
  return L(ctx, KF_FWD_APPLY, k_apply_blocks(HW), (unsigned)(N * C), a3);
}

// k_bn_backward: BatchNormTrain16Grad.
static int k_bn_backward(k_launch L, void* ctx, const void* dy, const void* x, const float* gamma, const float* beta, const float* mean,
                         const float* var, void* dx, float* dgamma, float* dbeta, float* part, int N, int C, int HW, int S, float eps,
                         int act) {
  float count = (float)((int64_t)N * HW);
  int rc;
  int vec = k_vectors(N, HW, dy, x, dx, x);
  if (vec && k_small(N, HW)) {
    void* s1[] = {&dy, &x, &gamma, &beta, &mean, &var, &dgamma, &dbeta, &dx, &N, &C, &HW, &count, &eps, &act, NULL};
    return L(ctx, KF_BWD_SMALL8, 1, (unsigned)C, s1);
  }
  if (vec) {
    void* v1[] = {&dy, &x, &gamma, &beta, &mean, &var, &part, &N, &C, &HW, &eps, &act, NULL};
    if ((rc = L(ctx, KF_BWD_PARTIAL8, (unsigned)S, (unsigned)C, v1))) return rc;
    void* v2[] = {&dy, &x, &part, &gamma, &beta, &mean, &var, &dgamma, &dbeta, &dx, &N, &C, &HW, &S, &count, &eps, &act, NULL};
    return L(ctx, KF_BWD_APPLY8, k_stride_blocks((int64_t)N * HW / 8), (unsigned)C, v2);
  }
  void* a1[] = {&dy, &x, &gamma, &beta, &mean, &var, &part, &N, &C, &HW, &eps, &act, NULL};
  if ((rc = L(ctx, KF_BWD_PARTIAL, (unsigned)S, (unsigned)C, a1))) return rc;
  void* a2[] = {&part, &var, &dgamma, &dbeta, &C, &S, &eps, NULL};
  if ((rc = L(ctx, KF_BWD_FINISH, k_per_thread(C), 1, a2))) return rc;
  void* a3[] = {&dy, &x, &gamma, &beta, &mean, &var, &dgamma, &dbeta, &dx, &C, &HW, &eps, &count, &act, NULL};
  return L(ctx, KF_BWD_APPLY, k_apply_blocks(HW), (unsigned)(N * C), a3);
}

// k_dw_grad: DepthwiseWeightGrad16 (k×k, k 3 or 5) with S partial sums per channel (part holds
// C·S·k² floats).
static int k_dw_grad(k_launch L, void* ctx, const void* x, const void* dy, void* dW, float* part, int N, int C, int H, int W, int Ho,
                     int Wo, int k, int sh, int sw, int dh, int dw, int ph, int pw, int S) {
  int K = k * k, rc;
  int f = k_strip_kernel(k, sh, sw, dh, dw, ph, pw, 0);  // the forward's geometry: the same five
  if (f >= 0 && (int64_t)N * Ho * ((Wo + 7) / 8) < ((int64_t)1 << 31)) {
    void* g1[] = {&x, &dy, &part, &N, &C, &H, &W, &Ho, &Wo, &ph, &pw, NULL};
    if ((rc = L(ctx, KF_DWG_K3S1D1 + (f - KF_DWS_K3S1D1), (unsigned)S, (unsigned)C, g1))) return rc;
  } else {
    void* a1[] = {&x, &dy, &part, &N, &C, &H, &W, &Ho, &Wo, &sh, &sw, &dh, &dw, &ph, &pw, NULL};
    if ((rc = L(ctx, k == 3 ? KF_DW_K3 : KF_DW_K5, (unsigned)S, (unsigned)C, a1))) return rc;
  }
  void* a2[] = {&part, &dW, &C, &K, &S, NULL};
  return L(ctx, KF_DW_FINISH, k_per_thread((int64_t)C * K), 1, a2);
}

// k_dw_conv: DepthwiseConv16 (grad 0: in x [N,C,H,W], out y [N,C,Ho,Wo]) or DepthwiseConvGrad16
// (grad 1: in dy, out dx).
static int k_dw_conv(k_launch L, void* ctx, const void* in, const void* w, void* out, int N, int C, int H, int W, int Ho, int Wo, int k,
                     int sh, int sw, int dh, int dw, int ph, int pw, int grad) {
  int f = k_strip_kernel(k, sh, sw, dh, dw, ph, pw, grad);
  int Hout = grad ? H : Ho, Wout = grad ? W : Wo;  // the plane the kernel writes, in strips of 8
  int64_t strips = (int64_t)N * C * Hout * ((Wout + 7) / 8);
  if (f >= 0 && strips < ((int64_t)1 << 31)) {
    unsigned total = (unsigned)strips;
    int vec = Wout % 8 == 0 && ((uintptr_t)out & 15) == 0;
    int Hin = grad ? Ho : H, Win = grad ? Wo : W;
    // a stride-1 input gradient is the convolution of dy with the turned filter, padded (k−1)·d − p
    int qh = grad && sh == 1 ? (k - 1) * dh - ph : ph, qw = grad && sw == 1 ? (k - 1) * dw - pw : pw;
    void* sargs[] = {&in, &w, &out, &C, &Hin, &Win, &Hout, &Wout, &qh, &qw, &total, &vec, NULL};
    return L(ctx, f, k_stride_blocks(strips), 1, sargs);
  }
  void* args[] = {&in, &w, &out, &C, &H, &W, &Ho, &Wo, &sh, &sw, &dh, &dw, &ph, &pw, NULL};
  f = grad ? (k == 3 ? KF_DGRAD_K3 : KF_DGRAD_K5) : (k == 3 ? KF_CONV_K3 : KF_CONV_K5);
  return L(ctx, f, k_apply_blocks(grad ? (int64_t)H * W : (int64_t)Ho * Wo), (unsigned)(N * C), args);
}

// k_pack_flush launches the packing kernel f on table t (if it holds any tensor) and empties it.
static int k_pack_flush(k_launch L, void* ctx, int f, KPackTable* t, float** m, int64_t longest) {
  if (t->count == 0) return 0;
  int64_t b = (longest + 4 * K_THREADS - 1) / (4 * K_THREADS);  // about 4 elements per thread
  unsigned gx = (unsigned)(b < 1 ? 1 : b > 1024 ? 1024 : b);
  void* args[] = {t, m, NULL};
  int rc = L(ctx, f, gx, (unsigned)t->count, args);
  memset(t, 0, sizeof *t);
  return rc;
}

// k_pack: PackRows (unpack 0: the n tensors ptrs[j] of sizes[j] elements, float16 where half[j],
// into the float32 matrix m of total elements, zeros after them) or UnpackRows (unpack 1: m's
// elements back into the tensors). Tables of up to K_PACK_MAX tensors, one launch each.
static int k_pack(k_launch L, void* ctx, int n, void* const* ptrs, const int64_t* sizes, const unsigned char* half, float* m,
                  int64_t total, int unpack) {
  int f = unpack ? KF_UNPACK : KF_PACK, rc;
  KPackTable t;
  memset(&t, 0, sizeof t);
  int64_t at = 0, longest = 0;
  for (int j = 0; j <= n; j++) {
    int64_t size = j < n ? sizes[j] : total - at;  // j == n: the padding (pack only)
    if (size <= 0 || (j == n && unpack)) continue;
    if (t.count == K_PACK_MAX) {
      if ((rc = k_pack_flush(L, ctx, f, &t, &m, longest))) return rc;
      longest = 0;
    }
    if (t.count == 0) t.start[0] = at;
    t.ptr[t.count] = j < n ? ptrs[j] : NULL;
    t.half[t.count] = j < n ? half[j] : 0;
    at += size;
    t.start[++t.count] = at;
    if (size > longest) longest = size;
  }
  return k_pack_flush(L, ctx, f, &t, &m, longest);
}

// k_adamw: the fused AdamW over total elements of the packed p and g, P of them with moments
// (sc: device pointers to decay, step size, 1/√(1 − β2^t) and gscale; skip: a device bool).
static int k_adamw(k_launch L, void* ctx, const float* p, const float* g, const float* m, const float* v, float* p2, float* m2, float* v2,
                   const float* const* sc, const void* skip, int total, int P, float b1, float b2, float eps) {
  const float *dc = sc[0], *ss = sc[1], *ib = sc[2], *gs = sc[3];
  void* args[] = {&p, &g, &m, &v, &p2, &m2, &v2, &dc, &ss, &ib, &gs, &skip, &total, &P, &b1, &b2, &eps, NULL};
  return L(ctx, KF_ADAMW, k_stride_blocks(total), 1, args);
}

// k_seg_loss: SegLoss16's sums for z [N,K,HW] float16 and y [N,HW] int64, with S partial sums
// per image (part holds N·S·5 floats).
static int k_seg_loss(k_launch L, void* ctx, const void* z, const void* y, float* ce, float* inter, float* ps, float* ts, float* pix,
                      float* part, int N, int K, int HW, int S) {
  void* a1[] = {&z, &y, &part, &K, &HW, NULL};
  int rc = L(ctx, KF_SEG_PARTIAL, (unsigned)S, (unsigned)N, a1);
  if (rc) return rc;
  void* a2[] = {&part, &ce, &inter, &ps, &ts, &pix, &N, &S, NULL};
  return L(ctx, KF_SEG_FINISH, 1, 1, a2);
}

// k_seg_grad: SegLoss16Grad over the N·HW pixels.
static int k_seg_grad(k_launch L, void* ctx, const void* z, const void* y, const float* dce, const float* dinter, const float* dp, void* dz,
                      int N, int K, int HW) {
  unsigned total = (unsigned)((int64_t)N * HW);
  void* args[] = {&z, &y, &dce, &dinter, &dp, &dz, &K, &HW, &total, NULL};
  return L(ctx, KF_SEG_GRAD, k_stride_blocks((int64_t)N * HW), 1, args);
}

// k_channel_scale: ChannelScale16, y = x·s + t over P planes of HW elements.
static int k_channel_scale(k_launch L, void* ctx, const void* x, const void* s, const void* t, void* y, int P, int HW) {
  int vec = k_vectors(1, HW, x, y, x, y);
  unsigned gx = k_apply_blocks(vec ? HW / 2 : HW);  // about 1024 elements per block either way (8 per thread when vec)
  void* args[] = {&x, &s, &t, &y, &HW, &vec, NULL};
  return L(ctx, KF_CH_SCALE, gx, (unsigned)P, args);
}

// k_channel_dot: ChannelDot16, out[p] = Σ a·b over P planes of HW elements, a block each.
static int k_channel_dot(k_launch L, void* ctx, const void* a, const void* b, void* out, int P, int HW) {
  int vec = k_vectors(1, HW, a, b, a, b);
  void* args[] = {&a, &b, &out, &HW, &vec, NULL};
  return L(ctx, KF_CH_DOT, 1, (unsigned)P, args);
}
