// C interface of the CUDA kernels' CPU emulation (emu.cc) for the Go package. Each call runs
// one ai.cardseg operator either as the GPU would (gpu 1: kernels/launch.h's plan, bn.cu's
// kernels on emulated blocks) or with the CPU reference kernels (gpu 0: kernels/cpu.h). The
// buffers are the caller's; scratch is allocated inside. Returns 0, or 1 with a message in err.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int k, sh, sw, dh, dw, ph, pw;
  int N, C, H, W, Ho, Wo;
} EmuGeo;

int emu_bn_forward(int gpu, const uint16_t* x, const float* gamma, const float* beta, uint16_t* y, float* mean, float* var, int N,
                   int C, int HW, int S, float eps, int act, char* err, int errlen);
int emu_bn_backward(int gpu, const uint16_t* dy, const uint16_t* x, const float* gamma, const float* beta, const float* mean,
                    const float* var, uint16_t* dx, float* dgamma, float* dbeta, int N, int C, int HW, int S, float eps, int act,
                    char* err, int errlen);
int emu_dw_grad(int gpu, const uint16_t* x, const uint16_t* dy, uint16_t* dW, EmuGeo g, int S, char* err, int errlen);
int emu_dw_conv(int gpu, const uint16_t* in, const uint16_t* w, uint16_t* out, EmuGeo g, int grad, char* err, int errlen);
// emu_pack runs PackRows (unpack 0: the n tensors into the float32 matrix m of total elements)
// or UnpackRows (unpack 1: m back into the tensors); half[j] marks float16 tensors.
int emu_pack(int gpu, int n, void* const* ptrs, const int64_t* sizes, const unsigned char* half, float* m, int64_t total, int unpack,
             char* err, int errlen);

// emu_adamw runs the fused AdamW over total packed elements, P of them with moments; sc holds
// decay, step size, 1/√(1 − β2^t) and gscale.
int emu_adamw(int gpu, const float* p, const float* g, const float* m, const float* v, float* p2, float* m2, float* v2, const float* sc,
              int skip, int total, int P, float b1, float b2, float eps, char* err, int errlen);

// emu_seg_loss runs SegLoss16 on z [N,K,HW] float16 and labels y [N,HW] with S partial sums per
// image; parts receives ce, inter, p, t and pixels, N each. emu_seg_grad runs SegLoss16Grad
// with d holding dce, dinter and dp (N each).
int emu_seg_loss(int gpu, const uint16_t* z, const int64_t* y, float* parts, int N, int K, int HW, int S, char* err, int errlen);
int emu_seg_grad(int gpu, const uint16_t* z, const int64_t* y, const float* d, uint16_t* dz, int N, int K, int HW, char* err, int errlen);
// emu_channel_scale runs ChannelScale16 (y = x·s + t over P planes of HW, s and t one value per
// plane); emu_channel_dot runs ChannelDot16 (out[p] = Σ a·b over plane p).
int emu_channel_scale(int gpu, const uint16_t* x, const uint16_t* sc, const uint16_t* sh, uint16_t* y, int P, int HW, char* err, int errlen);
int emu_channel_dot(int gpu, const uint16_t* a, const uint16_t* b, uint16_t* out, int P, int HW, char* err, int errlen);

// emu_selftest runs deliberately faulty kernels (which 1…6) through the emulation, which must
// report each, and a correct one (which 0), which must pass.
int emu_selftest(int which, char* err, int errlen);

// emu_scalar_only sets launch.h's k_scalar_only: 1 keeps every operator on its first
// (one value per load) kernels.
void emu_scalar_only(int on);

// emu_launches: how many times kernel f (launch.h's KF_*) has been launched; emu_kernel_name
// and emu_kernel_count name them.
long long emu_launches(int f);
const char* emu_kernel_name(int f);
int emu_kernel_count(void);

// emu_blocks_run: blocks the emulation has run since the process started (tests check that
// a plan launched what it should).
long long emu_blocks_run(void);

#ifdef __cplusplus
}
#endif
