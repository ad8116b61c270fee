#include "ortc.h"
#include "ortapi_index.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The API table (const OrtApi*) seen as what it is: an array of function pointers.
static void* const* api;
static OrtEnv* env;

typedef struct {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)(void);
} ApiBase;

static char* dup_msg(const char* prefix, const char* msg) {
  size_t n = strlen(prefix) + strlen(msg) + 3;
  char* s = malloc(n);
  snprintf(s, n, "%s: %s", prefix, msg);
  return s;
}

#define SLOT(name) (api[ORTC_SLOT_##name])

// status turns an OrtStatus into an error string and releases it.
static char* status(const char* what, OrtStatus* st) {
  if (st == NULL) return NULL;
  const char* (*msg)(const OrtStatus*) = SLOT(GetErrorMessage);
  void (*rel)(OrtStatus*) = SLOT(ReleaseStatus);
  char* e = dup_msg(what, msg(st));
  rel(st);
  return e;
}

char* ortc_load(const char* path) {
  if (api != NULL) return NULL;
  void* h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (h == NULL) return dup_msg("dlopen", dlerror());
  const ApiBase* (*base)(void) = (const ApiBase* (*)(void))dlsym(h, "OrtGetApiBase");
  if (base == NULL) return dup_msg("dlsym OrtGetApiBase", dlerror());
  const void* a = base()->GetApi(ORTC_API_VERSION);
  if (a == NULL) return dup_msg("GetApi", "the library does not offer the API version this build needs");
  api = (void* const*)a;
  return NULL;
}

char* ortc_env(void) {
  if (env != NULL) return NULL;
  // ORT keeps one environment per process; this returns the one onnxruntime_go created.
  OrtStatus* (*f)(int, const char*, OrtEnv**) = SLOT(CreateEnv);
  return status("CreateEnv", f(3, "cardseg-ort", &env));
}

char* ortc_session(const void* model, size_t len, int provider, int threads, int mem_pattern, int opt_level,
                   int log_severity, const char* profile_prefix, const char** cuda_keys, const char** cuda_values,
                   int n_cuda, const char** cfg_keys, const char** cfg_values, int n_cfg, int custom_ops,
                   OrtSession** out) {
  OrtSessionOptions* so = NULL;
  OrtStatus* (*create)(OrtSessionOptions**) = SLOT(CreateSessionOptions);
  char* e = status("CreateSessionOptions", create(&so));
  if (e) return e;
  void (*release)(OrtSessionOptions*) = SLOT(ReleaseSessionOptions);
  if (threads > 0) {
    OrtStatus* (*f)(OrtSessionOptions*, int) = SLOT(SetIntraOpNumThreads);
    if ((e = status("SetIntraOpNumThreads", f(so, threads)))) goto done;
  }
  if (!mem_pattern) {
    OrtStatus* (*f)(OrtSessionOptions*) = SLOT(DisableMemPattern);
    if ((e = status("DisableMemPattern", f(so)))) goto done;
  }
  {
    OrtStatus* (*f)(OrtSessionOptions*, int) = SLOT(SetSessionGraphOptimizationLevel);
    if ((e = status("SetSessionGraphOptimizationLevel", f(so, opt_level)))) goto done;
  }
  if (log_severity >= 0) {
    OrtStatus* (*f)(OrtSessionOptions*, int) = SLOT(SetSessionLogSeverityLevel);
    if ((e = status("SetSessionLogSeverityLevel", f(so, log_severity)))) goto done;
  }
  for (int i = 0; i < n_cfg; i++) {
    OrtStatus* (*f)(OrtSessionOptions*, const char*, const char*) = SLOT(AddSessionConfigEntry);
    if ((e = status("AddSessionConfigEntry", f(so, cfg_keys[i], cfg_values[i])))) goto done;
  }
  if (profile_prefix != NULL && profile_prefix[0] != 0) {
    OrtStatus* (*f)(OrtSessionOptions*, const char*) = SLOT(EnableProfiling);
    if ((e = status("EnableProfiling", f(so, profile_prefix)))) goto done;
  }
  if (custom_ops && (e = ortc_custom_ops(api, so, status))) goto done;
  if (provider == 1) {
    OrtCUDAProviderOptionsV2* co = NULL;
    OrtStatus* (*cc)(OrtCUDAProviderOptionsV2**) = SLOT(CreateCUDAProviderOptions);
    if ((e = status("CreateCUDAProviderOptions", cc(&co)))) goto done;
    void (*cr)(OrtCUDAProviderOptionsV2*) = SLOT(ReleaseCUDAProviderOptions);
    OrtStatus* (*cu)(OrtCUDAProviderOptionsV2*, const char* const*, const char* const*, size_t) = SLOT(UpdateCUDAProviderOptions);
    e = status("UpdateCUDAProviderOptions", cu(co, cuda_keys, cuda_values, (size_t)n_cuda));
    if (!e) {
      OrtStatus* (*ap)(OrtSessionOptions*, const OrtCUDAProviderOptionsV2*) = SLOT(SessionOptionsAppendExecutionProvider_CUDA_V2);
      e = status("append the CUDA execution provider", ap(so, co));
    }
    cr(co);
    if (e) goto done;
  }
  {
    OrtStatus* (*f)(const OrtEnv*, const void*, size_t, const OrtSessionOptions*, OrtSession**) = SLOT(CreateSessionFromArray);
    e = status("CreateSession", f(env, model, len, so, out));
  }
done:
  release(so);
  return e;
}

void ortc_release_session(OrtSession* s) {
  void (*f)(OrtSession*) = SLOT(ReleaseSession);
  if (s) f(s);
}

char* ortc_end_profiling(OrtSession* s, char** path) {
  OrtAllocator* a = NULL;
  OrtStatus* (*def)(OrtAllocator**) = SLOT(GetAllocatorWithDefaultOptions);
  char* e = status("GetAllocatorWithDefaultOptions", def(&a));
  if (e) return e;
  char* p = NULL;
  OrtStatus* (*f)(OrtSession*, OrtAllocator*, char**) = SLOT(SessionEndProfiling);
  if ((e = status("SessionEndProfiling", f(s, a, &p)))) return e;
  *path = strdup(p);
  OrtStatus* (*fr)(OrtAllocator*, void*) = SLOT(AllocatorFree);
  return status("AllocatorFree", fr(a, p));
}

char* ortc_allocator(OrtSession* s, int cuda, int device, OrtAllocator** out, OrtMemoryInfo** info) {
  char* e;
  if (cuda) {
    // OrtDeviceAllocator (0), OrtMemTypeDefault (0): the device memory the CUDA kernels use.
    OrtStatus* (*f)(const char*, int, int, int, OrtMemoryInfo**) = SLOT(CreateMemoryInfo);
    e = status("CreateMemoryInfo(Cuda)", f("Cuda", 0, device, 0, info));
  } else {
    OrtStatus* (*f)(int, int, OrtMemoryInfo**) = SLOT(CreateCpuMemoryInfo);
    e = status("CreateCpuMemoryInfo", f(0, 0, info));
  }
  if (e) return e;
  OrtStatus* (*f)(const OrtSession*, const OrtMemoryInfo*, OrtAllocator**) = SLOT(CreateAllocator);
  if ((e = status("CreateAllocator", f(s, *info, out)))) {
    void (*rel)(OrtMemoryInfo*) = SLOT(ReleaseMemoryInfo);
    rel(*info);
    *info = NULL;
  }
  return e;
}

void ortc_release_allocator(OrtAllocator* a, OrtMemoryInfo* info) {
  void (*ra)(OrtAllocator*) = SLOT(ReleaseAllocator);
  void (*ri)(OrtMemoryInfo*) = SLOT(ReleaseMemoryInfo);
  if (a) ra(a);
  if (info) ri(info);
}

char* ortc_tensor(OrtAllocator* a, const int64_t* shape, size_t rank, int dtype, OrtValue** out, void** data) {
  OrtStatus* (*f)(OrtAllocator*, const int64_t*, size_t, int, OrtValue**) = SLOT(CreateTensorAsOrtValue);
  char* e = status("CreateTensorAsOrtValue", f(a, shape, rank, dtype, out));
  if (e) return e;
  OrtStatus* (*g)(OrtValue*, void**) = SLOT(GetTensorMutableData);
  return status("GetTensorMutableData", g(*out, data));
}

char* ortc_tensor_over(OrtMemoryInfo* info, void* data, size_t bytes, const int64_t* shape, size_t rank, int dtype, OrtValue** out) {
  OrtStatus* (*f)(const OrtMemoryInfo*, void*, size_t, const int64_t*, size_t, int, OrtValue**) = SLOT(CreateTensorWithDataAsOrtValue);
  return status("CreateTensorWithDataAsOrtValue", f(info, data, bytes, shape, rank, dtype, out));
}

void ortc_release_value(OrtValue* v) {
  void (*f)(OrtValue*) = SLOT(ReleaseValue);
  if (v) f(v);
}

char* ortc_binding(OrtSession* s, OrtIoBinding** out) {
  OrtStatus* (*f)(OrtSession*, OrtIoBinding**) = SLOT(CreateIoBinding);
  return status("CreateIoBinding", f(s, out));
}

void ortc_release_binding(OrtIoBinding* b) {
  void (*f)(OrtIoBinding*) = SLOT(ReleaseIoBinding);
  if (b) f(b);
}

char* ortc_bind(OrtIoBinding* b, int output, const char* name, OrtValue* v) {
  OrtStatus* (*f)(OrtIoBinding*, const char*, const OrtValue*) = output ? SLOT(BindOutput) : SLOT(BindInput);
  return status(output ? "BindOutput" : "BindInput", f(b, name, v));
}

char* ortc_run_options(int graph_id, int no_sync, OrtRunOptions** out) {
  OrtStatus* (*f)(OrtRunOptions**) = SLOT(CreateRunOptions);
  char* e = status("CreateRunOptions", f(out));
  if (e) return e;
  OrtStatus* (*add)(OrtRunOptions*, const char*, const char*) = SLOT(AddRunConfigEntry);
  if (graph_id >= 0) {
    char id[16];
    snprintf(id, sizeof id, "%d", graph_id);
    if ((e = status("AddRunConfigEntry(gpu_graph_id)", add(*out, "gpu_graph_id", id)))) return e;
  }
  if (no_sync) {
    e = status("AddRunConfigEntry(disable_synchronize_execution_providers)",
               add(*out, "disable_synchronize_execution_providers", "1"));
  }
  return e;
}

void ortc_release_run_options(OrtRunOptions* r) {
  void (*f)(OrtRunOptions*) = SLOT(ReleaseRunOptions);
  if (r) f(r);
}

char* ortc_run(OrtSession* s, OrtRunOptions* r, OrtIoBinding* b) {
  OrtStatus* (*f)(OrtSession*, const OrtRunOptions*, const OrtIoBinding*) = SLOT(RunWithBinding);
  return status("Run", f(s, r, b));
}

// ---- CUDA runtime ----

static struct {
  int (*GetDeviceCount)(int*);
  int (*SetDevice)(int);
  int (*StreamCreateWithFlags)(void**, unsigned);
  int (*StreamDestroy)(void*);
  int (*StreamSynchronize)(void*);
  int (*MemcpyAsync)(void*, const void*, size_t, int, void*);
  int (*Memcpy)(void*, const void*, size_t, int);
  int (*MallocHost)(void**, size_t);
  int (*FreeHost)(void*);
  int (*MemGetInfo)(size_t*, size_t*);
  const char* (*GetErrorString)(int);
  int (*ProfilerStart)(void);
  int (*ProfilerStop)(void);
} cu;

static char* cuda_err(const char* what, int code) {
  if (code == 0) return NULL;
  char buf[64];
  snprintf(buf, sizeof buf, "error %d", code);
  return dup_msg(what, cu.GetErrorString ? cu.GetErrorString(code) : buf);
}

char* cudac_load(void) {
  if (cu.MemcpyAsync != NULL) return NULL;
  void* h = dlopen("libcudart.so.13", RTLD_NOW | RTLD_GLOBAL);
  if (h == NULL) return dup_msg("dlopen libcudart.so.13", dlerror());
#define SYM(field, name)                                         \
  if ((*(void**)&cu.field = dlsym(h, name)) == NULL) {           \
    return dup_msg("dlsym " name, dlerror());                    \
  }
  SYM(GetDeviceCount, "cudaGetDeviceCount");
  SYM(SetDevice, "cudaSetDevice");
  SYM(StreamCreateWithFlags, "cudaStreamCreateWithFlags");
  SYM(StreamDestroy, "cudaStreamDestroy");
  SYM(StreamSynchronize, "cudaStreamSynchronize");
  SYM(Memcpy, "cudaMemcpy");
  SYM(MallocHost, "cudaMallocHost");
  SYM(FreeHost, "cudaFreeHost");
  SYM(MemGetInfo, "cudaMemGetInfo");
  SYM(GetErrorString, "cudaGetErrorString");
  SYM(MemcpyAsync, "cudaMemcpyAsync");
  SYM(ProfilerStart, "cudaProfilerStart");
  SYM(ProfilerStop, "cudaProfilerStop");
#undef SYM
  return NULL;
}

char* cudac_device_count(int* n) { return cuda_err("cudaGetDeviceCount", cu.GetDeviceCount(n)); }
char* cudac_set_device(int d) { return cuda_err("cudaSetDevice", cu.SetDevice(d)); }
char* cudac_stream(void** s) { return cuda_err("cudaStreamCreate", cu.StreamCreateWithFlags(s, 1)); }
void cudac_stream_destroy(void* s) { if (s) cu.StreamDestroy(s); }
char* cudac_sync(void* s) { return cuda_err("cudaStreamSynchronize", cu.StreamSynchronize(s)); }

char* cudac_copy(void* dst, const void* src, size_t n, int kind, void* stream) {
  if (stream != NULL) return cuda_err("cudaMemcpyAsync", cu.MemcpyAsync(dst, src, n, kind, stream));
  return cuda_err("cudaMemcpy", cu.Memcpy(dst, src, n, kind));
}

char* cudac_host_alloc(size_t n, void** p) { return cuda_err("cudaMallocHost", cu.MallocHost(p, n)); }
void cudac_host_free(void* p) { if (p) cu.FreeHost(p); }
char* cudac_mem_info(size_t* f, size_t* t) { return cuda_err("cudaMemGetInfo", cu.MemGetInfo(f, t)); }
char* cudac_profiler(int on) {
  return on ? cuda_err("cudaProfilerStart", cu.ProfilerStart()) : cuda_err("cudaProfilerStop", cu.ProfilerStop());
}
