// The activation after batch norm and its derivative, for the CPU kernels (cpu.h) and the GPU
// kernels (bn.cu, which defines ACT_INLINE as a device function first): 0 none, 1 ReLU,
// 2 HardSwish (ONNX's: z·clamp(z/6 + 1/2, 0, 1)). The backward kernels take the derivative at
// z recomputed from x, so the pre-activation never needs storing.
#pragma once
#ifndef ACT_INLINE
#define ACT_INLINE static inline
#endif

ACT_INLINE float act_f(float z, int act) {
  if (act == 1) return z > 0 ? z : 0;
  if (act == 2) {
    float t = z * (1.0f / 6) + 0.5f;
    return z * (t < 0 ? 0 : (t > 1 ? 1 : t));
  }
  return z;
}

ACT_INLINE float act_d(float z, int act) {
  if (act == 1) return z > 0 ? 1 : 0;
  if (act == 2) return z < -3 ? 0 : (z > 3 ? 1 : z * (1.0f / 3) + 0.5f);
  return 1;
}
