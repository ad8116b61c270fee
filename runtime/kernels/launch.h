// Launch plans for the CUDA kernels in bn.cu: which kernels each ai.cardseg operator runs, in
// what order, on what grid and with what arguments. runtime/customops.c launches them through
// the CUDA driver; emu.cc (this directory's Go package) runs the same plans on the CPU with bn.cu compiled for
// the host, so the grids and argument lists are tested without a GPU. Plain C that also
// compiles as C++; everything static.
#pragma once
#include <stddef.h>
#include <stdint.h>

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
  KF_COUNT
};

static const char* const kf_names[KF_COUNT] = {
    "bn_fwd_partial", "bn_fwd_finish", "bn_fwd_apply",  "bn_bwd_partial", "bn_bwd_finish",   "bn_bwd_apply",    "dw_partial_k3",
    "dw_partial_k5",  "dw_finish",     "dwconv_fwd_k3", "dwconv_fwd_k5",  "dwconv_dgrad_k3", "dwconv_dgrad_k5",
};

enum { K_THREADS = 256 };  // threads per block: bn.cu's THREADS

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

// k_bn_forward: BatchNormTrain16 on x [N,C,HW] with S partial sums per channel (part holds 2·C·S floats).
static int k_bn_forward(k_launch L, void* ctx, const void* x, const float* gamma, const float* beta, void* y, float* mean, float* var,
                        float* part, int N, int C, int HW, int S, float eps, int act) {
  float count = (float)((int64_t)N * HW);
  int rc;
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
  void* a1[] = {&x, &dy, &part, &N, &C, &H, &W, &Ho, &Wo, &sh, &sw, &dh, &dw, &ph, &pw, NULL};
  if ((rc = L(ctx, k == 3 ? KF_DW_K3 : KF_DW_K5, (unsigned)S, (unsigned)C, a1))) return rc;
  void* a2[] = {&part, &dW, &C, &K, &S, NULL};
  return L(ctx, KF_DW_FINISH, k_per_thread((int64_t)C * K), 1, a2);
}

// k_dw_conv: DepthwiseConv16 (grad 0: in x [N,C,H,W], out y [N,C,Ho,Wo]) or DepthwiseConvGrad16
// (grad 1: in dy, out dx).
static int k_dw_conv(k_launch L, void* ctx, const void* in, const void* w, void* out, int N, int C, int H, int W, int Ho, int Wo, int k,
                     int sh, int sw, int dh, int dw, int ph, int pw, int grad) {
  void* args[] = {&in, &w, &out, &C, &H, &W, &Ho, &Wo, &sh, &sw, &dh, &dw, &ph, &pw, NULL};
  int f = grad ? (k == 3 ? KF_DGRAD_K3 : KF_DGRAD_K5) : (k == 3 ? KF_CONV_K3 : KF_CONV_K5);
  return L(ctx, f, k_apply_blocks(grad ? (int64_t)H * W : (int64_t)Ho * Wo), (unsigned)(N * C), args);
}
