// Custom operators (domain ai.cardseg) for the FP16 train step: batch norm in training mode on
// float16 activations with float32 statistics, forward and backward, each one operator instead
// of a chain of about fifteen ONNX nodes (graphs/ops_fused.go builds them; kernels/bn.cu has
// the GPU kernels and their arithmetic). Each operator has a CPU kernel (reference and tests)
// and a CUDA kernel, which launches PTX through the CUDA driver on ONNX Runtime's compute
// stream, so a captured CUDA graph records it like any provider kernel.
//
//   BatchNormTrain16(x f16 [N,C,H,W], gamma f32 [C], beta f32 [C])
//       -> y = act(bn(x)) f16, mean f32 [C], var f32 [C] (biased), scratch f32 [2·C·splits]
//   BatchNormTrain16Grad(dy f16, x f16, gamma, beta, mean, var)
//       -> dx f16, dgamma f32 [C], dbeta f32 [C], scratch f32 [2·C·splits]
//   DepthwiseWeightGrad16(x f16 [N,C,H,W], dy f16 [N,C,Ho,Wo]) -> dW f16 [C,1,kh,kw],
//       scratch f32 [C·splits·kh·kw]   (3×3 and 5×5 kernels)
//   DepthwiseConv16(x f16, w f16 [C,1,kh,kw]) -> y f16 [N,C,out_h,out_w]   (no bias; strides 1, 2)
//   DepthwiseConvGrad16(dy f16, w f16) -> dx f16 [N,C,in_h,in_w]
//   PackRows(t0, t1, … f32 or f16) -> m f32 [rows, 8]: the tensors end to end, float32, zeros
//       after them (the optimizer's layout of all parameters; graphs/step)
//   UnpackRows(m f32 [rows, 8]) -> t0, t1, … f32;  UnpackRows16(m) -> t0, t1, … f16: the
//       tensors back out of m, in the shapes of their attributes (float16 rounds to nearest even)
//   AdamW(p f32 [rows, 8], g f32 [rows, 8], m f32 [P], v f32 [P], decay, step_size, inv_sq_bc2,
//       gscale f32 [], skip bool []) -> p f32 [rows, 8], m f32 [P], v f32 [P]: AdamW on the
//       packed parameters in one pass (kernels/bn.cu's adamw)
//   SegLoss16(z f16 [N,K,H,W], y i64 [N,H,W]) -> ce, inter, p, t, pixels f32 [N], scratch f32
//       [N·splits·5]: the per-image sums of the segmentation loss (graphs/step's SegLoss)
//   SegLoss16Grad(z, y, dce, dinter, dp f32 [N]) -> dz f16 [N,K,H,W]
//   ChannelScale16(x f16 [N,C,H,W], s f16 [N,C,1,1], t f16 [N,C,1,1]) -> y = x·s + t f16: the
//       squeeze-and-excitation scale, and its input gradient with the mean pool's added
//   ChannelDot16(a f16 [N,C,H,W], b f16 [N,C,H,W]) -> f16 [N,C,1,1]: Σ a·b over each plane
// Attributes: epsilon (float; batch norm), activation (int; batch norm: 0 none, 1 ReLU,
// 2 HardSwish, applied after it and differentiated at the recomputed pre-activation); kh, kw,
// stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left (ints; depthwise ops), out_h,
// out_w or in_h, in_w (the depthwise convolution and its gradient: the other plane's size);
// splits (int: blocks per channel for the GPU's partial sums; the graph fixes it so that the
// scratch output has a static shape); rows (int; PackRows), ranks and dims (ints; UnpackRows:
// each output's rank, and all their dimensions in order); beta1, beta2 (floats; AdamW, with
// epsilon).
#include "ortc.h"
#include "ortapi_index.h"
#include "bn_ptx.h"
#include "kernels/cpu.h"
#include "kernels/launch.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;

// OrtCustomOp as onnxruntime_c_api.h lays it out (API version 16: the fields up to
// KernelComputeV2 are read; the later ones exist so the struct has the header's size).
typedef struct OrtCustomOp OrtCustomOp;
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp*, const void*, const OrtKernelInfo*);
  const char* (*GetName)(const OrtCustomOp*);
  const char* (*GetExecutionProviderType)(const OrtCustomOp*);
  int (*GetInputType)(const OrtCustomOp*, size_t);
  size_t (*GetInputTypeCount)(const OrtCustomOp*);
  int (*GetOutputType)(const OrtCustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const OrtCustomOp*);
  void (*KernelCompute)(void*, OrtKernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetOutputCharacteristic)(const OrtCustomOp*, size_t);
  int (*GetInputMemoryType)(const OrtCustomOp*, size_t);
  int (*GetVariadicInputMinArity)(const OrtCustomOp*);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp*);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp*);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp*);
  OrtStatus* (*CreateKernelV2)(const OrtCustomOp*, const void*, const OrtKernelInfo*, void**);
  OrtStatus* (*KernelComputeV2)(void*, OrtKernelContext*);
  void* InferOutputShapeFn;
  void* GetStartVersion;
  void* GetEndVersion;
  void* GetMayInplace;
  void* ReleaseMayInplace;
  void* GetAliasMap;
  void* ReleaseAliasMap;
};

enum { T_UNDEFINED = 0, T_FLOAT = 1, T_INT64 = 7, T_BOOL = 9, T_FLOAT16 = 10, ORT_FAIL_CODE = 1 };
enum { IO_REQUIRED = 0, IO_VARIADIC = 2 };

static void* const* api;  // set by ortc_custom_ops from ortc.c's table
#define SLOT(name) (api[ORTC_SLOT_##name])

static OrtStatus* fail(const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  OrtStatus* (*f)(int, const char*) = SLOT(CreateStatus);
  return f(ORT_FAIL_CODE, msg);
}

// ---- kernel state and tensor access ----

typedef struct {
  int cuda;  // 1: the CUDA kernel
  float eps;
  float beta1, beta2;  // AdamW
  int64_t act;  // batch norm: the activation after it (0 none, 1 ReLU, 2 HardSwish)
  int64_t splits;
  int64_t geo[10];  // depthwise ops: kh, kw, stride h, w, dilation h, w, pad top, left; the
                    // convolutions also the other side's plane: out_h, out_w (forward), in_h, in_w (gradient)
  int64_t rows;     // PackRows: the matrix's rows
  int half;         // UnpackRows16: float16 outputs
  size_t nout;      // UnpackRows*: outputs, their ranks and their dimensions (all in a row)
  int64_t* ranks;
  int64_t* dims;
} Kernel;

typedef struct {
  void* data;
  int64_t dims[8];
  size_t rank;
  int type;  // ONNX element type
} Tensor;

static int64_t elements(const Tensor* t) {
  int64_t n = 1;
  for (size_t i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

static OrtStatus* shape_of(const OrtValue* v, Tensor* t) {
  OrtTensorTypeAndShapeInfo* info = NULL;
  OrtStatus* (*gt)(const OrtValue*, OrtTensorTypeAndShapeInfo**) = SLOT(GetTensorTypeAndShape);
  OrtStatus* st = gt(v, &info);
  if (st) return st;
  OrtStatus* (*gc)(const OrtTensorTypeAndShapeInfo*, size_t*) = SLOT(GetDimensionsCount);
  OrtStatus* (*gd)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t) = SLOT(GetDimensions);
  void (*rel)(OrtTensorTypeAndShapeInfo*) = SLOT(ReleaseTensorTypeAndShapeInfo);
  OrtStatus* (*ge)(const OrtTensorTypeAndShapeInfo*, int*) = SLOT(GetTensorElementType);
  if (!(st = ge(info, &t->type)) && !(st = gc(info, &t->rank))) {
    if (t->rank > 8) {
      st = fail("tensor of rank %zu", t->rank);
    } else {
      st = gd(info, t->dims, t->rank);
    }
  }
  rel(info);
  return st;
}

static OrtStatus* input(OrtKernelContext* ctx, size_t i, Tensor* t) {
  const OrtValue* v = NULL;
  OrtStatus* (*gi)(const OrtKernelContext*, size_t, const OrtValue**) = SLOT(KernelContext_GetInput);
  OrtStatus* st = gi(ctx, i, &v);
  if (st) return st;
  if ((st = shape_of(v, t))) return st;
  OrtStatus* (*md)(OrtValue*, void**) = SLOT(GetTensorMutableData);
  return md((OrtValue*)v, &t->data);
}

static OrtStatus* output(OrtKernelContext* ctx, size_t i, const int64_t* dims, size_t rank, void** data) {
  OrtValue* v = NULL;
  OrtStatus* (*go)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**) = SLOT(KernelContext_GetOutput);
  OrtStatus* st = go(ctx, i, dims, rank, &v);
  if (st) return st;
  OrtStatus* (*md)(OrtValue*, void**) = SLOT(GetTensorMutableData);
  return md(v, data);
}

// ---- CUDA driver: the PTX module and launches ----

static struct {
  int (*CtxGetCurrent)(void**);
  int (*ModuleLoadData)(void**, const void*);
  int (*ModuleGetFunction)(void**, void*, const char*);
  int (*LaunchKernel)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**);
  int (*GetErrorString)(int, const char**);
  int (*CudaGetDevice)(int*);
  int (*CudaSetDevice)(int);
} drv;

static pthread_mutex_t mod_mu = PTHREAD_MUTEX_INITIALIZER;
static void* mod_ctx;  // the context the module was loaded in
static void* fns[KF_COUNT];

static const char* drv_msg(int code) {
  const char* s = NULL;
  if (drv.GetErrorString) drv.GetErrorString(code, &s);
  return s ? s : "unknown error";
}

// module loads the PTX into the calling thread's CUDA context. One set of functions is kept:
// a process drives one GPU (the pipeline's sessions share cuda_device); switching contexts
// reloads the module.
static OrtStatus* module(void) {
  OrtStatus* st = NULL;
  pthread_mutex_lock(&mod_mu);
  if (drv.LaunchKernel == NULL) {
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    void* rt = dlopen("libcudart.so.13", RTLD_NOW | RTLD_GLOBAL);
    if (h == NULL || rt == NULL) {
      st = fail("cardseg custom ops: dlopen libcuda.so.1 / libcudart.so.13: %s", dlerror());
      goto out;
    }
#define SYM(lib, field, name)                                                   \
  if ((*(void**)&drv.field = dlsym(lib, name)) == NULL) {                      \
    st = fail("cardseg custom ops: dlsym %s: %s", name, dlerror());             \
    goto out;                                                                   \
  }
    SYM(h, CtxGetCurrent, "cuCtxGetCurrent");
    SYM(h, ModuleLoadData, "cuModuleLoadData");
    SYM(h, ModuleGetFunction, "cuModuleGetFunction");
    SYM(h, GetErrorString, "cuGetErrorString");
    SYM(rt, CudaGetDevice, "cudaGetDevice");
    SYM(rt, CudaSetDevice, "cudaSetDevice");
    SYM(h, LaunchKernel, "cuLaunchKernel");
#undef SYM
  }
  void* ctx = NULL;
  int rc = drv.CtxGetCurrent(&ctx);
  if (rc == 0 && ctx == NULL) {  // no context bound to this thread yet: the runtime's primary one
    int dev = 0;
    drv.CudaGetDevice(&dev);
    drv.CudaSetDevice(dev);
    rc = drv.CtxGetCurrent(&ctx);
  }
  if (rc != 0 || ctx == NULL) {
    st = fail("cardseg custom ops: no current CUDA context (%s)", rc ? drv_msg(rc) : "none");
    goto out;
  }
  if (ctx != mod_ctx) {
    const char* choice = getenv("CARDSEG_CUDA_KERNELS");
    if (choice && *choice && strcmp(choice, "auto") != 0 && strcmp(choice, "scalar") != 0) {
      st = fail("cardseg custom ops: CARDSEG_CUDA_KERNELS=%s (want auto or scalar)", choice);
      goto out;
    }
    k_scalar_only = choice && strcmp(choice, "scalar") == 0;
    void* m = NULL;
    if ((rc = drv.ModuleLoadData(&m, cardseg_bn_ptx)) != 0) {
      st = fail("cardseg custom ops: cuModuleLoadData (JIT of the batch-norm PTX): %s", drv_msg(rc));
      goto out;
    }
    for (int i = 0; i < KF_COUNT; i++) {
      if ((rc = drv.ModuleGetFunction(&fns[i], m, kf_names[i])) != 0) {
        st = fail("cardseg custom ops: cuModuleGetFunction %s: %s", kf_names[i], drv_msg(rc));
        goto out;
      }
    }
    mod_ctx = ctx;
  }
out:
  pthread_mutex_unlock(&mod_mu);
  return st;
}

// cuda_stream makes sure the PTX is loaded and returns ONNX Runtime's compute stream for ctx.
static OrtStatus* cuda_stream(OrtKernelContext* ctx, void** stream) {
  OrtStatus* st = module();
  if (st) return st;
  OrtStatus* (*gs)(const OrtKernelContext*, void**) = SLOT(KernelContext_GetGPUComputeStream);
  return gs(ctx, stream);
}

// The launcher kernels/launch.h's plans call: ctx is a Launch.
typedef struct {
  void* stream;
  int failed;  // the kernel whose launch failed
} Launch;

static int drv_launch(void* ctx, int f, unsigned gx, unsigned gy, void** args) {
  Launch* l = ctx;
  int rc = drv.LaunchKernel(fns[f], gx, gy, 1, K_THREADS, 1, 1, 0, l->stream, args, NULL);
  if (rc) l->failed = f;
  return rc;
}

static OrtStatus* launched(const Launch* l, int rc) {
  return rc ? fail("cardseg custom ops: launch %s: %s", kf_names[l->failed], drv_msg(rc)) : NULL;
}

// ---- shared shape checks ----

typedef struct {
  int N, C, HW;
} Dims;

static OrtStatus* nchw(const char* op, const Tensor* x, const Kernel* k, Dims* d) {
  if (x->rank != 4) return fail("%s: x has rank %zu, want 4 (NCHW)", op, x->rank);
  int64_t n = x->dims[0], c = x->dims[1], hw = x->dims[2] * x->dims[3];
  if (n < 1 || c < 1 || hw < 1 || n * c > 65535 || hw > 0x7fffffff / 2)
    return fail("%s: x of shape [%lld,%lld,%lld,%lld] is outside the kernels' range (N·C ≤ 65535)", op,
                (long long)n, (long long)c, (long long)x->dims[2], (long long)x->dims[3]);
  if (k->splits < 1 || k->splits > hw) return fail("%s: splits %lld for planes of %lld elements", op, (long long)k->splits, (long long)hw);
  d->N = (int)n;
  d->C = (int)c;
  d->HW = (int)hw;
  return NULL;
}

static OrtStatus* channels(const char* op, const char* name, const Tensor* t, int C) {
  if (t->rank != 1 || t->dims[0] != C) return fail("%s: %s must be [%d]", op, name, C);
  return NULL;
}

// ---- BatchNormTrain16 ----

static OrtStatus* bn_forward(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "BatchNormTrain16";
  Tensor x, g, b;
  OrtStatus* st;
  Dims d;
  if ((st = input(ctx, 0, &x)) || (st = input(ctx, 1, &g)) || (st = input(ctx, 2, &b))) return st;
  if ((st = nchw(op, &x, k, &d)) || (st = channels(op, "gamma", &g, d.C)) || (st = channels(op, "beta", &b, d.C))) return st;
  int64_t cdim = d.C, pdim = 2 * (int64_t)d.C * k->splits;
  void *y, *mean, *var, *part;
  if ((st = output(ctx, 0, x.dims, 4, &y)) || (st = output(ctx, 1, &cdim, 1, &mean)) || (st = output(ctx, 2, &cdim, 1, &var)) ||
      (st = output(ctx, 3, &pdim, 1, &part)))
    return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_bn_forward(drv_launch, &l, x.data, g.data, b.data, y, mean, var, part, d.N, d.C, d.HW, (int)k->splits,
                                     k->eps, (int)k->act));
  }
  memset(part, 0, (size_t)pdim * sizeof(float));
  cpu_bn_forward(x.data, g.data, b.data, y, mean, var, d.N, d.C, d.HW, k->eps, (int)k->act);
  return NULL;
}

// ---- BatchNormTrain16Grad ----

static OrtStatus* bn_backward(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "BatchNormTrain16Grad";
  Tensor dy, x, g, be, mean, var;
  OrtStatus* st;
  Dims d;
  if ((st = input(ctx, 0, &dy)) || (st = input(ctx, 1, &x)) || (st = input(ctx, 2, &g)) || (st = input(ctx, 3, &be)) ||
      (st = input(ctx, 4, &mean)) || (st = input(ctx, 5, &var)))
    return st;
  if ((st = nchw(op, &x, k, &d)) || (st = channels(op, "gamma", &g, d.C)) || (st = channels(op, "beta", &be, d.C)) ||
      (st = channels(op, "mean", &mean, d.C)) || (st = channels(op, "var", &var, d.C)))
    return st;
  if (dy.rank != 4 || memcmp(dy.dims, x.dims, sizeof(int64_t) * 4) != 0) return fail("%s: dy and x differ in shape", op);
  int64_t cdim = d.C, pdim = 2 * (int64_t)d.C * k->splits;
  void *dx, *dgamma, *dbeta, *part;
  if ((st = output(ctx, 0, x.dims, 4, &dx)) || (st = output(ctx, 1, &cdim, 1, &dgamma)) || (st = output(ctx, 2, &cdim, 1, &dbeta)) ||
      (st = output(ctx, 3, &pdim, 1, &part)))
    return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_bn_backward(drv_launch, &l, dy.data, x.data, g.data, be.data, mean.data, var.data, dx, dgamma, dbeta, part,
                                      d.N, d.C, d.HW, (int)k->splits, k->eps, (int)k->act));
  }
  memset(part, 0, (size_t)pdim * sizeof(float));
  cpu_bn_backward(dy.data, x.data, g.data, be.data, mean.data, var.data, dx, dgamma, dbeta, d.N, d.C, d.HW, k->eps, (int)k->act);
  return NULL;
}

// ---- DepthwiseWeightGrad16 ----

// geometry reads the depthwise attributes into g (the planes are filled in by the caller).
static DWGeo geometry(const Kernel* k) {
  DWGeo g = {(int)k->geo[0], (int)k->geo[1], (int)k->geo[2], (int)k->geo[3], (int)k->geo[4], (int)k->geo[5], (int)k->geo[6], (int)k->geo[7],
             0, 0, 0, 0, 0, 0};
  return g;
}

static OrtStatus* dw_grad(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "DepthwiseWeightGrad16";
  Tensor x, dy;
  OrtStatus* st;
  if ((st = input(ctx, 0, &x)) || (st = input(ctx, 1, &dy))) return st;
  if (x.rank != 4 || dy.rank != 4 || x.dims[0] != dy.dims[0] || x.dims[1] != dy.dims[1])
    return fail("%s: x and dy must be [N,C,H,W] and [N,C,Ho,Wo]", op);
  DWGeo g = geometry(k);
  g.N = (int)x.dims[0], g.C = (int)x.dims[1], g.H = (int)x.dims[2], g.W = (int)x.dims[3], g.Ho = (int)dy.dims[2], g.Wo = (int)dy.dims[3];
  if (!((g.kh == 3 && g.kw == 3) || (g.kh == 5 && g.kw == 5))) return fail("%s: kernel %dx%d (3x3 and 5x5 only)", op, g.kh, g.kw);
  if (g.C > 65535 || k->splits < 1 || k->splits > (int64_t)g.Ho * g.Wo)
    return fail("%s: %d channels, splits %lld", op, g.C, (long long)k->splits);
  int64_t wdims[4] = {g.C, 1, g.kh, g.kw}, pdim = (int64_t)g.C * k->splits * g.kh * g.kw;
  void *dW, *part;
  if ((st = output(ctx, 0, wdims, 4, &dW)) || (st = output(ctx, 1, &pdim, 1, &part))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_dw_grad(drv_launch, &l, x.data, dy.data, dW, part, g.N, g.C, g.H, g.W, g.Ho, g.Wo, g.kh, g.sh, g.sw, g.dh, g.dw,
                                  g.ph, g.pw, (int)k->splits));
  }
  memset(part, 0, (size_t)pdim * sizeof(float));
  cpu_dw_grad(x.data, dy.data, dW, g);
  return NULL;
}

// ---- DepthwiseConv16 and DepthwiseConvGrad16 ----

// dw_conv computes y = conv(x, w) (grad 0) or dx = conv's input gradient for dy (grad 1): input 0
// is x or dy, input 1 the filter w [C,1,k,k]; the output's plane is geo[8] × geo[9].
static OrtStatus* dw_conv(const Kernel* k, OrtKernelContext* ctx, int grad) {
  const char* op = grad ? "DepthwiseConvGrad16" : "DepthwiseConv16";
  Tensor in, w;
  OrtStatus* st;
  if ((st = input(ctx, 0, &in)) || (st = input(ctx, 1, &w))) return st;
  DWGeo g = geometry(k);
  if (in.rank != 4 || w.rank != 4 || w.dims[0] != in.dims[1] || w.dims[1] != 1 || w.dims[2] != g.kh || w.dims[3] != g.kw)
    return fail("%s: input [N,C,H,W] and filter [C,1,%d,%d] expected", op, g.kh, g.kw);
  g.N = (int)in.dims[0], g.C = (int)in.dims[1];
  int64_t odims[4] = {g.N, g.C, k->geo[8], k->geo[9]};
  // x's and y's planes, whichever side is the input here
  g.H = grad ? (int)odims[2] : (int)in.dims[2], g.W = grad ? (int)odims[3] : (int)in.dims[3];
  g.Ho = grad ? (int)in.dims[2] : (int)odims[2], g.Wo = grad ? (int)in.dims[3] : (int)odims[3];
  if ((int64_t)g.N * g.C > 65535) return fail("%s: N·C = %lld above 65535", op, (long long)g.N * g.C);
  void* out;
  if ((st = output(ctx, 0, odims, 4, &out))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_dw_conv(drv_launch, &l, in.data, w.data, out, g.N, g.C, g.H, g.W, g.Ho, g.Wo, g.kh, g.sh, g.sw, g.dh, g.dw, g.ph,
                                  g.pw, grad));
  }
  cpu_dw_conv(in.data, w.data, out, g, grad);
  return NULL;
}

static OrtStatus* dw_conv_fwd(void* k, OrtKernelContext* ctx) { return dw_conv(k, ctx, 0); }
static OrtStatus* dw_conv_dgrad(void* k, OrtKernelContext* ctx) { return dw_conv(k, ctx, 1); }

// ---- PackRows, UnpackRows and UnpackRows16 ----

// packing holds one call's tensors for k_pack / cpu_pack.
typedef struct {
  size_t n;
  void** ptrs;
  int64_t* sizes;
  unsigned char* half;
} Packing;

static OrtStatus* packing(Packing* p, size_t n) {
  p->n = n;
  p->ptrs = calloc(n ? n : 1, sizeof(void*));
  p->sizes = calloc(n ? n : 1, sizeof(int64_t));
  p->half = calloc(n ? n : 1, 1);
  return p->ptrs && p->sizes && p->half ? NULL : fail("PackRows: out of memory for %zu tensors", n);
}

static void packing_free(Packing* p) {
  free(p->ptrs);
  free(p->sizes);
  free(p->half);
}

static OrtStatus* run_packing(const Kernel* k, OrtKernelContext* ctx, Packing* p, float* m, int64_t total, int unpack) {
  if (k->cuda) {
    Launch l = {0};
    OrtStatus* st = cuda_stream(ctx, &l.stream);
    if (st) return st;
    return launched(&l, k_pack(drv_launch, &l, (int)p->n, p->ptrs, p->sizes, p->half, m, total, unpack));
  }
  cpu_pack((int)p->n, p->ptrs, p->sizes, p->half, m, total, unpack);
  return NULL;
}

static OrtStatus* pack_rows(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  size_t n = 0;
  OrtStatus* (*count)(const OrtKernelContext*, size_t*) = SLOT(KernelContext_GetInputCount);
  OrtStatus* st = count(ctx, &n);
  if (st) return st;
  Packing p;
  if ((st = packing(&p, n))) goto out;
  int64_t sum = 0;
  for (size_t j = 0; j < n; j++) {
    Tensor t;
    if ((st = input(ctx, j, &t))) goto out;
    if (t.type != T_FLOAT && t.type != T_FLOAT16) {
      st = fail("PackRows: input %zu has element type %d (float and float16 only)", j, t.type);
      goto out;
    }
    p.ptrs[j] = t.data;
    p.sizes[j] = elements(&t);
    p.half[j] = t.type == T_FLOAT16;
    sum += p.sizes[j];
  }
  if (sum > k->rows * 8) {
    st = fail("PackRows: %lld elements in %lld rows of 8", (long long)sum, (long long)k->rows);
    goto out;
  }
  int64_t dims[2] = {k->rows, 8};
  void* m;
  if ((st = output(ctx, 0, dims, 2, &m))) goto out;
  st = run_packing(k, ctx, &p, m, k->rows * 8, 0);
out:
  packing_free(&p);
  return st;
}

static OrtStatus* unpack_rows(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = k->half ? "UnpackRows16" : "UnpackRows";
  Tensor m;
  OrtStatus* st = input(ctx, 0, &m);
  if (st) return st;
  if (m.type != T_FLOAT || m.rank != 2 || m.dims[1] != 8) return fail("%s: the matrix must be float32 [rows, 8]", op);
  size_t nout = 0;
  OrtStatus* (*count)(const OrtKernelContext*, size_t*) = SLOT(KernelContext_GetOutputCount);
  if ((st = count(ctx, &nout))) return st;
  if (nout != k->nout) return fail("%s: %zu outputs, the attributes describe %zu", op, nout, k->nout);
  Packing p;
  if ((st = packing(&p, k->nout))) goto out;
  const int64_t* dims = k->dims;
  int64_t sum = 0;
  for (size_t j = 0; j < k->nout; j++) {
    p.sizes[j] = 1;
    for (int64_t i = 0; i < k->ranks[j]; i++) p.sizes[j] *= dims[i];
    p.half[j] = (unsigned char)k->half;
    sum += p.sizes[j];
    if (sum > elements(&m)) {
      st = fail("%s: the outputs need more than the matrix's %lld elements", op, (long long)elements(&m));
      goto out;
    }
    if ((st = output(ctx, j, dims, (size_t)k->ranks[j], &p.ptrs[j]))) goto out;
    dims += k->ranks[j];
  }
  st = run_packing(k, ctx, &p, m.data, elements(&m), 1);
out:
  packing_free(&p);
  return st;
}

// unpack_attributes reads UnpackRows's ranks and dims into k.
static OrtStatus* unpack_attributes(const OrtKernelInfo* info, Kernel* k, const char* name) {
  OrtStatus* (*ga)(const OrtKernelInfo*, const char*, int64_t*, size_t*) = SLOT(KernelInfoGetAttributeArray_int64);
  size_t nr = 0, nd = 0;
  OrtStatus* st;
  if ((st = ga(info, "ranks", NULL, &nr)) || (st = ga(info, "dims", NULL, &nd))) return st;
  k->ranks = calloc(nr ? nr : 1, sizeof(int64_t));
  k->dims = calloc(nd ? nd : 1, sizeof(int64_t));
  if (!k->ranks || !k->dims) return fail("%s: out of memory", name);
  if ((st = ga(info, "ranks", k->ranks, &nr)) || (st = ga(info, "dims", k->dims, &nd))) return st;
  size_t want = 0;
  for (size_t j = 0; j < nr; j++) {
    if (k->ranks[j] < 0 || k->ranks[j] > 8) return fail("%s: output %zu has rank %lld", name, j, (long long)k->ranks[j]);
    want += (size_t)k->ranks[j];
  }
  if (want != nd) return fail("%s: ranks add up to %zu dimensions, dims has %zu", name, want, nd);
  for (size_t i = 0; i < nd; i++)
    if (k->dims[i] < 0) return fail("%s: negative dimension", name);
  k->nout = nr;
  return NULL;
}

// ---- AdamW ----

static OrtStatus* adamw(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "AdamW";
  Tensor in[9];
  OrtStatus* st;
  for (size_t i = 0; i < 9; i++)
    if ((st = input(ctx, i, &in[i]))) return st;
  int64_t total = elements(&in[0]), P = elements(&in[2]);
  if (elements(&in[1]) != total || elements(&in[3]) != P || P > total || total > 0x7fffffff)
    return fail("%s: p and g must have the same size, m and v the same, at most p's (%lld, %lld, %lld, %lld)", op, (long long)total,
                (long long)elements(&in[1]), (long long)P, (long long)elements(&in[3]));
  for (int i = 4; i < 9; i++)
    if (elements(&in[i]) != 1) return fail("%s: input %d must be a scalar", op, i);
  void *p2, *m2, *v2;
  if ((st = output(ctx, 0, in[0].dims, in[0].rank, &p2)) || (st = output(ctx, 1, in[2].dims, in[2].rank, &m2)) ||
      (st = output(ctx, 2, in[3].dims, in[3].rank, &v2)))
    return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    const float* sc[4] = {in[4].data, in[5].data, in[6].data, in[7].data};
    return launched(&l, k_adamw(drv_launch, &l, in[0].data, in[1].data, in[2].data, in[3].data, p2, m2, v2, sc, in[8].data, (int)total, (int)P,
                                k->beta1, k->beta2, k->eps));
  }
  float sc[4];
  for (int i = 0; i < 4; i++) sc[i] = *(const float*)in[4 + i].data;
  cpu_adamw(in[0].data, in[1].data, in[2].data, in[3].data, p2, m2, v2, sc, *(const unsigned char*)in[8].data != 0, total, P, k->beta1,
            k->beta2, k->eps);
  return NULL;
}

// ---- SegLoss16 and SegLoss16Grad ----

// seg_dims checks logits z [N,K,H,W] and labels y [N,H,W].
static OrtStatus* seg_dims(const char* op, const Tensor* z, const Tensor* y, int* N, int* K, int* HW) {
  if (z->rank != 4 || y->rank != 3 || y->dims[0] != z->dims[0] || y->dims[1] != z->dims[2] || y->dims[2] != z->dims[3] || y->type != T_INT64)
    return fail("%s: want logits [N,K,H,W] and int64 labels [N,H,W]", op);
  int64_t hw = z->dims[2] * z->dims[3];
  if (z->dims[1] < 2 || z->dims[0] < 1 || z->dims[0] > 65535 || hw < 1 || z->dims[0] * hw > 0x7fffffff)
    return fail("%s: logits [%lld,%lld,%lld,%lld] outside the kernels' range (2 classes or more)", op, (long long)z->dims[0],
                (long long)z->dims[1], (long long)z->dims[2], (long long)z->dims[3]);
  *N = (int)z->dims[0], *K = (int)z->dims[1], *HW = (int)hw;
  return NULL;
}

static OrtStatus* seg_loss(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "SegLoss16";
  Tensor z, y;
  OrtStatus* st;
  int N, K, HW;
  if ((st = input(ctx, 0, &z)) || (st = input(ctx, 1, &y)) || (st = seg_dims(op, &z, &y, &N, &K, &HW))) return st;
  if (k->splits < 1 || k->splits > HW) return fail("%s: splits %lld for images of %d pixels", op, (long long)k->splits, HW);
  int64_t n = N, pdim = (int64_t)N * k->splits * 5;
  void* out[6];
  for (int i = 0; i < 5; i++)
    if ((st = output(ctx, (size_t)i, &n, 1, &out[i]))) return st;
  if ((st = output(ctx, 5, &pdim, 1, &out[5]))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_seg_loss(drv_launch, &l, z.data, y.data, out[0], out[1], out[2], out[3], out[4], out[5], N, K, HW, (int)k->splits));
  }
  memset(out[5], 0, (size_t)pdim * sizeof(float));
  cpu_seg_parts(z.data, y.data, out[0], out[1], out[2], out[3], out[4], N, K, HW);
  return NULL;
}

static OrtStatus* seg_loss_grad(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "SegLoss16Grad";
  Tensor z, y, d[3];
  OrtStatus* st;
  int N, K, HW;
  if ((st = input(ctx, 0, &z)) || (st = input(ctx, 1, &y)) || (st = seg_dims(op, &z, &y, &N, &K, &HW))) return st;
  for (int i = 0; i < 3; i++) {
    if ((st = input(ctx, (size_t)(2 + i), &d[i]))) return st;
    if ((st = channels(op, "a sum's gradient", &d[i], N))) return st;
  }
  void* dz;
  if ((st = output(ctx, 0, z.dims, 4, &dz))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_seg_grad(drv_launch, &l, z.data, y.data, d[0].data, d[1].data, d[2].data, dz, N, K, HW));
  }
  cpu_seg_grad(z.data, y.data, d[0].data, d[1].data, d[2].data, dz, N, K, HW);
  return NULL;
}

// ---- ChannelScale16 and ChannelDot16 ----

// planes checks x [N,C,H,W] for the channel kernels: P = N·C planes (one grid row each) of HW.
static OrtStatus* planes(const char* op, const Tensor* x, int* P, int* HW) {
  if (x->rank != 4) return fail("%s: input has rank %zu, want 4 (NCHW)", op, x->rank);
  int64_t p = x->dims[0] * x->dims[1], hw = x->dims[2] * x->dims[3];
  if (p < 1 || p > 65535 || hw < 1 || hw > 0x7fffffff / 2)
    return fail("%s: input [%lld,%lld,%lld,%lld] is outside the kernels' range (N·C ≤ 65535)", op, (long long)x->dims[0],
                (long long)x->dims[1], (long long)x->dims[2], (long long)x->dims[3]);
  *P = (int)p;
  *HW = (int)hw;
  return NULL;
}

static OrtStatus* per_plane(const char* op, const char* name, const Tensor* t, const Tensor* x) {
  if (t->rank != 4 || t->dims[0] != x->dims[0] || t->dims[1] != x->dims[1] || t->dims[2] != 1 || t->dims[3] != 1)
    return fail("%s: %s must be [%lld,%lld,1,1]", op, name, (long long)x->dims[0], (long long)x->dims[1]);
  return NULL;
}

static OrtStatus* channel_scale(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "ChannelScale16";
  Tensor x, sc, sh;
  OrtStatus* st;
  int P, HW;
  if ((st = input(ctx, 0, &x)) || (st = input(ctx, 1, &sc)) || (st = input(ctx, 2, &sh)) || (st = planes(op, &x, &P, &HW)) ||
      (st = per_plane(op, "s", &sc, &x)) || (st = per_plane(op, "t", &sh, &x)))
    return st;
  void* y;
  if ((st = output(ctx, 0, x.dims, 4, &y))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_channel_scale(drv_launch, &l, x.data, sc.data, sh.data, y, P, HW));
  }
  cpu_channel_scale(x.data, sc.data, sh.data, y, P, HW);
  return NULL;
}

static OrtStatus* channel_dot(void* kp, OrtKernelContext* ctx) {
  const Kernel* k = kp;
  const char* op = "ChannelDot16";
  Tensor a, b;
  OrtStatus* st;
  int P, HW;
  if ((st = input(ctx, 0, &a)) || (st = input(ctx, 1, &b)) || (st = planes(op, &a, &P, &HW))) return st;
  if (b.rank != 4 || memcmp(a.dims, b.dims, 4 * sizeof a.dims[0]) != 0) return fail("%s: the two inputs differ in shape", op);
  int64_t dims[4] = {a.dims[0], a.dims[1], 1, 1};
  void* out;
  if ((st = output(ctx, 0, dims, 4, &out))) return st;
  if (k->cuda) {
    Launch l = {0};
    if ((st = cuda_stream(ctx, &l.stream))) return st;
    return launched(&l, k_channel_dot(drv_launch, &l, a.data, b.data, out, P, HW));
  }
  cpu_channel_dot(a.data, b.data, out, P, HW);
  return NULL;
}

// ---- OrtCustomOp plumbing ----

static void destroy(void* kp) {
  Kernel* k = kp;
  if (k) {
    free(k->ranks);
    free(k->dims);
  }
  free(k);
}

static OrtStatus* create_kernel(const OrtCustomOp* op, const void* api_unused, const OrtKernelInfo* info, void** out, int cuda) {
  (void)api_unused;
  const char* name = op->GetName(op);
  int dw = strcmp(name, "DepthwiseWeightGrad16") == 0, fwd = strcmp(name, "DepthwiseConv16") == 0,
      dgrad = strcmp(name, "DepthwiseConvGrad16") == 0, pack = strcmp(name, "PackRows") == 0, unpack = strncmp(name, "UnpackRows", 10) == 0,
      adam = strcmp(name, "AdamW") == 0, seg = strcmp(name, "SegLoss16") == 0, seggrad = strcmp(name, "SegLoss16Grad") == 0,
      chan = strncmp(name, "Channel", 7) == 0;
  Kernel* k = calloc(1, sizeof(Kernel));
  if (k == NULL) return fail("%s: out of memory", name);
  k->cuda = cuda;
  OrtStatus* (*gf)(const OrtKernelInfo*, const char*, float*) = SLOT(KernelInfoGetAttribute_float);
  OrtStatus* (*gi)(const OrtKernelInfo*, const char*, int64_t*) = SLOT(KernelInfoGetAttribute_int64);
  OrtStatus* st = NULL;
  if (chan) {
    // ChannelScale16 and ChannelDot16 have no attributes
  } else if (seg || seggrad) {
    // (SegLoss16's splits is read below)
  } else if (adam) {
    st = gf(info, "beta1", &k->beta1);
    if (!st) st = gf(info, "beta2", &k->beta2);
    if (!st) st = gf(info, "epsilon", &k->eps);
  } else if (pack) {
    st = gi(info, "rows", &k->rows);
    if (!st && k->rows < 0) st = fail("PackRows: rows %lld", (long long)k->rows);
  } else if (unpack) {
    k->half = strcmp(name, "UnpackRows16") == 0;
    st = unpack_attributes(info, k, name);
  } else if (dw || fwd || dgrad) {
    const char* names[10] = {"kh", "kw", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
                             fwd ? "out_h" : "in_h", fwd ? "out_w" : "in_w"};
    for (int i = 0; i < (dw ? 8 : 10) && !st; i++) st = gi(info, names[i], &k->geo[i]);
    if (!st && !dw) {
      if (!((k->geo[0] == 3 && k->geo[1] == 3) || (k->geo[0] == 5 && k->geo[1] == 5)) || k->geo[2] < 1 || k->geo[2] > 2 ||
          k->geo[3] < 1 || k->geo[3] > 2)
        st = fail("%s: kernel %lldx%lld, strides %lldx%lld (3x3 or 5x5, strides 1 or 2 only)", name, (long long)k->geo[0],
                  (long long)k->geo[1], (long long)k->geo[2], (long long)k->geo[3]);
    }
  } else {
    st = gf(info, "epsilon", &k->eps);
    if (!st) st = gi(info, "activation", &k->act);
    if (!st && (k->act < 0 || k->act > 2)) st = fail("%s: activation %lld (0 none, 1 ReLU, 2 HardSwish)", op->GetName(op), (long long)k->act);
  }
  if (!st && !fwd && !dgrad && !pack && !unpack && !adam && !seggrad && !chan) st = gi(info, "splits", &k->splits);
  if (st) {
    destroy(k);
    return st;
  }
  *out = k;
  return NULL;
}
static OrtStatus* create_cpu(const OrtCustomOp* op, const void* a, const OrtKernelInfo* i, void** out) { return create_kernel(op, a, i, out, 0); }
// The CUDA kernel loads the PTX when the session is created: a first load during a run could
// fall inside a CUDA graph capture, where module loading is not allowed.
static OrtStatus* create_cuda(const OrtCustomOp* op, const void* a, const OrtKernelInfo* i, void** out) {
  OrtStatus* st = module();
  return st ? st : create_kernel(op, a, i, out, 1);
}
static void* create_v1(const OrtCustomOp* op, const void* a, const OrtKernelInfo* i) { (void)op; (void)a; (void)i; return NULL; }
static void compute_v1(void* k, OrtKernelContext* c) { (void)k; (void)c; }

static const char* name_fwd(const OrtCustomOp* op) { (void)op; return "BatchNormTrain16"; }
static const char* name_bwd(const OrtCustomOp* op) { (void)op; return "BatchNormTrain16Grad"; }
static const char* ep_cpu(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static const char* ep_cuda(const OrtCustomOp* op) { (void)op; return "CUDAExecutionProvider"; }
// Forward: x f16, gamma f32, beta f32 -> y f16, mean, var, scratch f32.
static int in_fwd(const OrtCustomOp* op, size_t i) { (void)op; return i == 0 ? T_FLOAT16 : T_FLOAT; }
static size_t nin_fwd(const OrtCustomOp* op) { (void)op; return 3; }
// Backward: dy f16, x f16, gamma, beta, mean, var f32 -> dx f16, dgamma, dbeta, scratch f32.
static int in_bwd(const OrtCustomOp* op, size_t i) { (void)op; return i < 2 ? T_FLOAT16 : T_FLOAT; }
static size_t nin_bwd(const OrtCustomOp* op) { (void)op; return 6; }
static int out_both(const OrtCustomOp* op, size_t i) { (void)op; return i == 0 ? T_FLOAT16 : T_FLOAT; }
static size_t nout_both(const OrtCustomOp* op) { (void)op; return 4; }
// Depthwise weight gradient: x f16, dy f16 -> dW f16, scratch f32.
static const char* name_dw(const OrtCustomOp* op) { (void)op; return "DepthwiseWeightGrad16"; }
static int in_dw(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return T_FLOAT16; }
static size_t two(const OrtCustomOp* op) { (void)op; return 2; }
// Depthwise convolution and its input gradient: x (dy) f16, w f16 -> y (dx) f16.
static const char* name_conv(const OrtCustomOp* op) { (void)op; return "DepthwiseConv16"; }
static const char* name_dgrad(const OrtCustomOp* op) { (void)op; return "DepthwiseConvGrad16"; }
static int all_f16(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return T_FLOAT16; }
static size_t one(const OrtCustomOp* op) { (void)op; return 1; }
static int required(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return 0; }
static int mem_default(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return 0; }
static int arity(const OrtCustomOp* op) { (void)op; return 1; }
// PackRows: any number of float32 and float16 tensors -> the float32 matrix.
static const char* name_pack(const OrtCustomOp* op) { (void)op; return "PackRows"; }
static int any_type(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return T_UNDEFINED; }
static int all_f32(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return T_FLOAT; }
static int variadic(const OrtCustomOp* op, size_t i) { (void)op; (void)i; return IO_VARIADIC; }
static int mixed(const OrtCustomOp* op) { (void)op; return 0; }
// UnpackRows (float32 outputs) and UnpackRows16 (float16 outputs): the matrix -> any number of tensors.
static const char* name_unpack(const OrtCustomOp* op) { (void)op; return "UnpackRows"; }
static const char* name_unpack16(const OrtCustomOp* op) { (void)op; return "UnpackRows16"; }
// AdamW: p, g, m, v and four scalars f32, skip bool -> p, m, v f32.
static const char* name_adamw(const OrtCustomOp* op) { (void)op; return "AdamW"; }
static int in_adamw(const OrtCustomOp* op, size_t i) { (void)op; return i == 8 ? T_BOOL : T_FLOAT; }
static size_t nin_adamw(const OrtCustomOp* op) { (void)op; return 9; }
static size_t three(const OrtCustomOp* op) { (void)op; return 3; }
// SegLoss16: z f16, y i64 -> five sums and scratch f32; SegLoss16Grad: z, y, three f32 -> dz f16.
static const char* name_seg(const OrtCustomOp* op) { (void)op; return "SegLoss16"; }
static const char* name_seggrad(const OrtCustomOp* op) { (void)op; return "SegLoss16Grad"; }
static int in_seg(const OrtCustomOp* op, size_t i) { (void)op; return i == 0 ? T_FLOAT16 : i == 1 ? T_INT64 : T_FLOAT; }
static size_t five(const OrtCustomOp* op) { (void)op; return 5; }
static size_t six(const OrtCustomOp* op) { (void)op; return 6; }

static const char* name_chscale(const OrtCustomOp* op) { (void)op; return "ChannelScale16"; }
static const char* name_chdot(const OrtCustomOp* op) { (void)op; return "ChannelDot16"; }

#define OP(ep, create, name, in, nin, out, nout, compute)                                                  \
  {                                                                                                       \
    .version = 16, .CreateKernel = create_v1, .GetName = name, .GetExecutionProviderType = ep,          \
    .GetInputType = in, .GetInputTypeCount = nin, .GetOutputType = out, .GetOutputTypeCount = nout,       \
    .KernelCompute = compute_v1, .KernelDestroy = destroy, .GetInputCharacteristic = required,           \
    .GetOutputCharacteristic = required, .GetInputMemoryType = mem_default,                               \
    .GetVariadicInputMinArity = arity, .GetVariadicInputHomogeneity = arity,                              \
    .GetVariadicOutputMinArity = arity, .GetVariadicOutputHomogeneity = arity,                            \
    .CreateKernelV2 = create, .KernelComputeV2 = compute,                                                 \
  }

// VAROP is OP for the packing operators: PackRows's input and UnpackRows's outputs are
// variadic (the input of mixed types, the outputs of one).
#define VAROP(ep, create, name, in, out, incar, outcar, compute)                                        \
  {                                                                                                       \
    .version = 16, .CreateKernel = create_v1, .GetName = name, .GetExecutionProviderType = ep,          \
    .GetInputType = in, .GetInputTypeCount = one, .GetOutputType = out, .GetOutputTypeCount = one,       \
    .KernelCompute = compute_v1, .KernelDestroy = destroy, .GetInputCharacteristic = incar,              \
    .GetOutputCharacteristic = outcar, .GetInputMemoryType = mem_default,                                 \
    .GetVariadicInputMinArity = arity, .GetVariadicInputHomogeneity = mixed,                              \
    .GetVariadicOutputMinArity = arity, .GetVariadicOutputHomogeneity = arity,                            \
    .CreateKernelV2 = create, .KernelComputeV2 = compute,                                                 \
  }

static OrtCustomOp ops[] = {
    OP(ep_cpu, create_cpu, name_fwd, in_fwd, nin_fwd, out_both, nout_both, bn_forward),
    OP(ep_cuda, create_cuda, name_fwd, in_fwd, nin_fwd, out_both, nout_both, bn_forward),
    OP(ep_cpu, create_cpu, name_bwd, in_bwd, nin_bwd, out_both, nout_both, bn_backward),
    OP(ep_cuda, create_cuda, name_bwd, in_bwd, nin_bwd, out_both, nout_both, bn_backward),
    OP(ep_cpu, create_cpu, name_dw, in_dw, two, out_both, two, dw_grad),
    OP(ep_cuda, create_cuda, name_dw, in_dw, two, out_both, two, dw_grad),
    OP(ep_cpu, create_cpu, name_conv, all_f16, two, all_f16, one, dw_conv_fwd),
    OP(ep_cuda, create_cuda, name_conv, all_f16, two, all_f16, one, dw_conv_fwd),
    OP(ep_cpu, create_cpu, name_dgrad, all_f16, two, all_f16, one, dw_conv_dgrad),
    OP(ep_cuda, create_cuda, name_dgrad, all_f16, two, all_f16, one, dw_conv_dgrad),
    VAROP(ep_cpu, create_cpu, name_pack, any_type, all_f32, variadic, required, pack_rows),
    VAROP(ep_cuda, create_cuda, name_pack, any_type, all_f32, variadic, required, pack_rows),
    VAROP(ep_cpu, create_cpu, name_unpack, all_f32, all_f32, required, variadic, unpack_rows),
    VAROP(ep_cuda, create_cuda, name_unpack, all_f32, all_f32, required, variadic, unpack_rows),
    VAROP(ep_cpu, create_cpu, name_unpack16, all_f32, all_f16, required, variadic, unpack_rows),
    VAROP(ep_cuda, create_cuda, name_unpack16, all_f32, all_f16, required, variadic, unpack_rows),
    OP(ep_cpu, create_cpu, name_adamw, in_adamw, nin_adamw, all_f32, three, adamw),
    OP(ep_cuda, create_cuda, name_adamw, in_adamw, nin_adamw, all_f32, three, adamw),
    OP(ep_cpu, create_cpu, name_seg, in_seg, two, all_f32, six, seg_loss),
    OP(ep_cuda, create_cuda, name_seg, in_seg, two, all_f32, six, seg_loss),
    OP(ep_cpu, create_cpu, name_seggrad, in_seg, five, all_f16, one, seg_loss_grad),
    OP(ep_cuda, create_cuda, name_seggrad, in_seg, five, all_f16, one, seg_loss_grad),
    OP(ep_cpu, create_cpu, name_chscale, all_f16, three, all_f16, one, channel_scale),
    OP(ep_cuda, create_cuda, name_chscale, all_f16, three, all_f16, one, channel_scale),
    OP(ep_cpu, create_cpu, name_chdot, all_f16, two, all_f16, one, channel_dot),
    OP(ep_cuda, create_cuda, name_chdot, all_f16, two, all_f16, one, channel_dot),
};

static OrtCustomOpDomain* domain;  // one for the process: sessions keep pointers into it

char* ortc_custom_ops(void* const* table, OrtSessionOptions* so, char* (*status)(const char*, OrtStatus*)) {
  api = table;
  char* e;
  if (domain == NULL) {
    OrtStatus* (*cd)(const char*, OrtCustomOpDomain**) = SLOT(CreateCustomOpDomain);
    if ((e = status("CreateCustomOpDomain", cd("ai.cardseg", &domain)))) return e;
    OrtStatus* (*add)(OrtCustomOpDomain*, const OrtCustomOp*) = SLOT(CustomOpDomain_Add);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
      if ((e = status("CustomOpDomain_Add", add(domain, &ops[i])))) return e;
    }
  }
  OrtStatus* (*ad)(OrtSessionOptions*, OrtCustomOpDomain*) = SLOT(AddCustomOpDomain);
  return status("AddCustomOpDomain", ad(so, domain));
}

// ortc_f16 and ortc_f32 expose the CPU kernels' conversions to the tests.
uint16_t ortc_f16(float f) { return float_to_half(f); }
float ortc_f32(uint16_t h) { return half_to_float(h); }
