// CPU emulation of the CUDA kernels in bn.cu, for tests on machines without a GPU: bn.cu is
// compiled here for the host (its #else branch), each block's 256 threads run as coroutines
// that meet at __syncthreads and warp shuffles, and launch.h's plans are run
// with a launcher that calls the host kernels, so the grids, argument lists and kernel
// arithmetic are all exercised. One block runs at a time (shared memory is a static per
// kernel); calls are serialised.
//
// It checks what a GPU would only show as wrong numbers or hangs: argument counts against the
// kernel's parameters, grid limits, threads that return while others wait at a barrier,
// __syncthreads and shuffles met out of step, kernels that write outside their outputs or into
// their inputs (guard zones around every buffer), reads past an input (its guard zones are NaN),
// and outputs left unwritten (outputs start as NaN). It does not model memory ordering or timing.
#include <stdint.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "launch.h"
#include "emu.h"

// ---- coroutines ----
//
// On x86-64 a coroutine switch saves the callee-saved registers and swaps stack pointers
// (emu_switch below): ucontext's swapcontext also saves the signal mask, a system call per
// switch, which made the emulation spend half its time in the kernel. Elsewhere, ucontext.

namespace {

#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* sp);
asm(R"(
  .text
  .p2align 4
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

struct Coro {
  void* sp = nullptr;
};

// coro_init makes c start entry (which must never return) on the stack [stack, stack+size).
void coro_init(Coro* c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
  void** p = (void**)top;
  *--p = nullptr;           // entry's return address: it never returns
  *--p = (void*)entry;      // where emu_switch's ret goes
  for (int i = 0; i < 6; i++) *--p = nullptr;  // rbp, rbx, r12–r15
  c->sp = p;
}

void coro_switch(Coro* from, Coro* to) { emu_switch(&from->sp, to->sp); }
#else
struct Coro {
  ucontext_t uc;
};

void coro_init(Coro* c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}

void coro_switch(Coro* from, Coro* to) { swapcontext(&from->uc, &to->uc); }
#endif

constexpr int kThreads = K_THREADS;
constexpr size_t kStack = 64 << 10;

enum { kReady, kWaiting, kDone };
enum { kBarSync = 1, kBarShuffle = 2 };

struct Emu {
  unsigned tid = 0, bx = 0, by = 0, nbx = 0;
  bool fibers = false;  // false: the kernel has no barriers and its threads run one after another
  Coro sched;
  Coro fib[kThreads];
  int status[kThreads];
  int kind[kThreads];
  float xchg[kThreads];
  std::vector<char> stacks;
  const std::function<void()>* body = nullptr;
  std::string fault;  // set by a thread that failed inside its coroutine
  long long blocks = 0;
  long long launches[KF_COUNT] = {};
};

Emu E;
std::mutex mu;

struct Fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void wait_at(int kind) {
  if (!E.fibers) throw Fault("a barrier in a kernel the emulation runs without coroutines (mark it in barrier_kernels)");
  unsigned t = E.tid;
  E.status[t] = kWaiting;
  E.kind[t] = kind;
  coro_switch(&E.fib[t], &E.sched);
}

}  // namespace

static inline unsigned emu_tid() { return E.tid; }
static inline unsigned emu_ntid() { return kThreads; }
static inline unsigned emu_bx() { return E.bx; }
static inline unsigned emu_by() { return E.by; }
static inline unsigned emu_nbx() { return E.nbx; }
static inline void emu_sync() { wait_at(kBarSync); }

// A warp shuffle: every thread of the block publishes v, meets the others, reads lane+off's
// value, and meets them again before the slots are reused.
static inline float emu_shfl_down(float v, int off) {
  unsigned t = E.tid;
  E.xchg[t] = v;
  wait_at(kBarShuffle);
  float r = (t & 31) + off < 32 ? E.xchg[t + off] : v;
  wait_at(kBarShuffle);
  return r;
}

#include "bn.cu"

namespace {

// trampoline is each coroutine's entry: the thread's body, then back to the scheduler for good.
void trampoline() {
  try {
    (*E.body)();
  } catch (const Fault& f) {
    if (E.fault.empty()) E.fault = f.what();
  }
  unsigned t = E.tid;
  E.status[t] = kDone;
  coro_switch(&E.fib[t], &E.sched);
  abort();  // a finished coroutine is never resumed
}

void run_block() {
  if (!E.fibers) {
    for (unsigned t = 0; t < kThreads; t++) {
      E.tid = t;
      (*E.body)();
    }
    return;
  }
  if (E.stacks.empty()) E.stacks.resize(kStack * kThreads);
  for (int t = 0; t < kThreads; t++) {
    coro_init(&E.fib[t], E.stacks.data() + (size_t)t * kStack, kStack, trampoline);
    E.status[t] = kReady;
  }
  for (;;) {
    for (int t = 0; t < kThreads; t++) {
      if (E.status[t] != kReady) continue;
      E.tid = (unsigned)t;
      coro_switch(&E.sched, &E.fib[t]);
    }
    if (!E.fault.empty()) throw Fault(E.fault);
    int done = 0, kinds = 0;
    for (int t = 0; t < kThreads; t++) {
      if (E.status[t] == kDone) {
        done++;
      } else {
        kinds |= E.kind[t];
      }
    }
    if (done == kThreads) return;
    if (done > 0) throw Fault(std::to_string(done) + " threads returned while " + std::to_string(kThreads - done) + " wait at a barrier");
    if (kinds == (kBarSync | kBarShuffle)) throw Fault("threads wait at different barriers (__syncthreads and a warp shuffle)");
    for (int t = 0; t < kThreads; t++) E.status[t] = kReady;
  }
}

// The kernels' parameter counts, and which meet at barriers (they need coroutines).
const int nparams[KF_COUNT] = {5,  8,  10, 12, 7,  14, 15, 15, 5,  14, 14, 14, 14, 5,  14, 12, 17, 12,
                               12, 12, 12, 12, 12, 12, 12, 12, 12, 11, 11, 11, 11, 11, 12, 15, 2,  2,  17, 5,  8,  9,  6,  5};
const bool barrier_kernels[KF_COUNT] = {true,  false, false, true,  false, false, true,  true,  false, false, false, false,
                                        false, true,  true,  true,  true,  false, false, false, false, false, false, false,
                                        false, false, false, true,  true,  true,  true,  true,  true,  true,
                                        false, false, false, true,  false, false, false, true};

struct Ctx {
  std::string err;
};

template <typename T>
T arg(void** a, int i) {
  T v;
  memcpy(&v, a[i], sizeof v);
  return v;
}

// run_grid runs body as every thread of a gx × gy grid, with coroutines when fibers (the
// kernel meets at barriers).
int run_grid(Ctx* ctx, const std::string& name, bool fibers, unsigned gx, unsigned gy, const std::function<void()>& body) {
  E.body = &body;
  E.fibers = fibers;
  E.fault.clear();
  E.nbx = gx;
  try {
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        E.bx = x;
        E.by = y;
        run_block();
        E.blocks++;
      }
  } catch (const Fault& e) {
    E.body = nullptr;
    ctx->err = "launch " + name + " (grid " + std::to_string(gx) + "×" + std::to_string(gy) + ", block " + std::to_string(E.bx) + "," +
               std::to_string(E.by) + "): " + e.what();
    return 1;
  }
  E.body = nullptr;
  return 0;
}

int launch(void* ctxp, int f, unsigned gx, unsigned gy, void** a) {
  Ctx* ctx = static_cast<Ctx*>(ctxp);
  std::string name = f >= 0 && f < KF_COUNT ? kf_names[f] : "kernel " + std::to_string(f);
  try {
    if (f < 0 || f >= KF_COUNT) throw Fault("no such kernel");
    if (gx < 1 || gy < 1 || gx > 0x7fffffffu || gy > 65535) throw Fault("grid " + std::to_string(gx) + "×" + std::to_string(gy) + " outside CUDA's limits");
    for (int i = 0; i < nparams[f]; i++)
      if (a[i] == nullptr) throw Fault(std::to_string(i) + " arguments, the kernel takes " + std::to_string(nparams[f]));
    if (a[nparams[f]] != nullptr) throw Fault("more than the kernel's " + std::to_string(nparams[f]) + " arguments");
    typedef const u16* CH;
    typedef u16* H;
    typedef const float* CF;
    typedef float* F;
    std::function<void()> body;
    switch (f) {
      case KF_FWD_PARTIAL:
        body = [=] { bn_fwd_partial(arg<CH>(a, 0), arg<F>(a, 1), arg<int>(a, 2), arg<int>(a, 3), arg<int>(a, 4)); };
        break;
      case KF_FWD_FINISH:
        body = [=] {
          bn_fwd_finish(arg<CH>(a, 0), arg<CF>(a, 1), arg<F>(a, 2), arg<F>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6),
                        arg<float>(a, 7));
        };
        break;
      case KF_FWD_APPLY:
        body = [=] {
          bn_fwd_apply(arg<CH>(a, 0), arg<CF>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<H>(a, 5), arg<int>(a, 6),
                       arg<int>(a, 7), arg<float>(a, 8), arg<int>(a, 9));
        };
        break;
      case KF_BWD_PARTIAL:
        body = [=] {
          bn_bwd_partial(arg<CH>(a, 0), arg<CH>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<CF>(a, 5), arg<F>(a, 6),
                         arg<int>(a, 7), arg<int>(a, 8), arg<int>(a, 9), arg<float>(a, 10), arg<int>(a, 11));
        };
        break;
      case KF_BWD_FINISH:
        body = [=] {
          bn_bwd_finish(arg<CF>(a, 0), arg<CF>(a, 1), arg<F>(a, 2), arg<F>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<float>(a, 6));
        };
        break;
      case KF_BWD_APPLY:
        body = [=] {
          bn_bwd_apply(arg<CH>(a, 0), arg<CH>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<CF>(a, 5), arg<CF>(a, 6),
                       arg<CF>(a, 7), arg<H>(a, 8), arg<int>(a, 9), arg<int>(a, 10), arg<float>(a, 11), arg<float>(a, 12),
                       arg<int>(a, 13));
        };
        break;
      case KF_FWD_PARTIAL8:
        body = [=] { bn_fwd_partial8(arg<CH>(a, 0), arg<F>(a, 1), arg<int>(a, 2), arg<int>(a, 3), arg<int>(a, 4)); };
        break;
      case KF_FWD_APPLY8:
        body = [=] {
          bn_fwd_apply8(arg<CH>(a, 0), arg<CF>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<F>(a, 4), arg<F>(a, 5), arg<H>(a, 6), arg<int>(a, 7),
                        arg<int>(a, 8), arg<int>(a, 9), arg<int>(a, 10), arg<float>(a, 11), arg<float>(a, 12), arg<int>(a, 13));
        };
        break;
      case KF_BWD_PARTIAL8:
        body = [=] {
          bn_bwd_partial8(arg<CH>(a, 0), arg<CH>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<CF>(a, 5), arg<F>(a, 6),
                          arg<int>(a, 7), arg<int>(a, 8), arg<int>(a, 9), arg<float>(a, 10), arg<int>(a, 11));
        };
        break;
      case KF_BWD_APPLY8:
        body = [=] {
          bn_bwd_apply8(arg<CH>(a, 0), arg<CH>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<CF>(a, 5), arg<CF>(a, 6),
                        arg<F>(a, 7), arg<F>(a, 8), arg<H>(a, 9), arg<int>(a, 10), arg<int>(a, 11), arg<int>(a, 12), arg<int>(a, 13),
                        arg<float>(a, 14), arg<float>(a, 15), arg<int>(a, 16));
        };
        break;
      case KF_DW_K3:
      case KF_DW_K5: {
        auto fn = f == KF_DW_K3 ? dw_partial_k3 : dw_partial_k5;
        body = [=] {
          fn(arg<CH>(a, 0), arg<CH>(a, 1), arg<F>(a, 2), arg<int>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
             arg<int>(a, 8), arg<int>(a, 9), arg<int>(a, 10), arg<int>(a, 11), arg<int>(a, 12), arg<int>(a, 13), arg<int>(a, 14));
        };
        break;
      }
      case KF_DW_FINISH:
        body = [=] { dw_finish(arg<CF>(a, 0), arg<H>(a, 1), arg<int>(a, 2), arg<int>(a, 3), arg<int>(a, 4)); };
        break;
      case KF_FWD_SMALL8:
        body = [=] {
          bn_fwd_small8(arg<CH>(a, 0), arg<CF>(a, 1), arg<CF>(a, 2), arg<F>(a, 3), arg<F>(a, 4), arg<H>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
                        arg<int>(a, 8), arg<float>(a, 9), arg<float>(a, 10), arg<int>(a, 11));
        };
        break;
      case KF_BWD_SMALL8:
        body = [=] {
          bn_bwd_small8(arg<CH>(a, 0), arg<CH>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<CF>(a, 5), arg<F>(a, 6), arg<F>(a, 7),
                        arg<H>(a, 8), arg<int>(a, 9), arg<int>(a, 10), arg<int>(a, 11), arg<float>(a, 12), arg<float>(a, 13),
                        arg<int>(a, 14));
        };
        break;
      case KF_DWS_K3S1D1:
      case KF_DWS_K3S2D1:
      case KF_DWS_K5S1D1:
      case KF_DWS_K5S2D1:
      case KF_DWS_K5S1D2:
      case KF_DWSF_K3S1D1:
      case KF_DWSF_K5S1D1:
      case KF_DWSF_K5S1D2:
      case KF_DWD2_K3:
      case KF_DWD2_K5: {
        static void (*const strip[])(const u16*, const u16*, u16*, int, int, int, int, int, int, int, unsigned, int) = {
            dws_k3s1d1, dws_k3s2d1, dws_k5s1d1, dws_k5s2d1, dws_k5s1d2, dwsf_k3s1d1, dwsf_k5s1d1, dwsf_k5s1d2, dwd2_k3, dwd2_k5};
        auto fn = strip[f - KF_DWS_K3S1D1];
        body = [=] {
          fn(arg<CH>(a, 0), arg<CH>(a, 1), arg<H>(a, 2), arg<int>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
             arg<int>(a, 8), arg<int>(a, 9), arg<unsigned>(a, 10), arg<int>(a, 11));
        };
        break;
      }
      case KF_DWG_K3S1D1:
      case KF_DWG_K3S2D1:
      case KF_DWG_K5S1D1:
      case KF_DWG_K5S2D1:
      case KF_DWG_K5S1D2: {
        static void (*const wgrad[])(const u16*, const u16*, float*, int, int, int, int, int, int, int, int) = {
            dwg_k3s1d1, dwg_k3s2d1, dwg_k5s1d1, dwg_k5s2d1, dwg_k5s1d2};
        auto fn = wgrad[f - KF_DWG_K3S1D1];
        body = [=] {
          fn(arg<CH>(a, 0), arg<CH>(a, 1), arg<F>(a, 2), arg<int>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
             arg<int>(a, 8), arg<int>(a, 9), arg<int>(a, 10));
        };
        break;
      }
      case KF_CONV_K3:
      case KF_CONV_K5:
      case KF_DGRAD_K3:
      case KF_DGRAD_K5: {
        auto fn = f == KF_CONV_K3 ? dwconv_fwd_k3 : f == KF_CONV_K5 ? dwconv_fwd_k5 : f == KF_DGRAD_K3 ? dwconv_dgrad_k3 : dwconv_dgrad_k5;
        body = [=] {
          fn(arg<CH>(a, 0), arg<CH>(a, 1), arg<H>(a, 2), arg<int>(a, 3), arg<int>(a, 4), arg<int>(a, 5), arg<int>(a, 6), arg<int>(a, 7),
             arg<int>(a, 8), arg<int>(a, 9), arg<int>(a, 10), arg<int>(a, 11), arg<int>(a, 12), arg<int>(a, 13));
        };
        break;
      }
      case KF_PACK: {
        KPackTable t = arg<KPackTable>(a, 0);
        F m = arg<F>(a, 1);
        body = [=] { pack_rows(t, m); };
        break;
      }
      case KF_UNPACK: {
        KPackTable t = arg<KPackTable>(a, 0);
        CF m = arg<CF>(a, 1);
        body = [=] { unpack_rows(t, m); };
        break;
      }
      case KF_ADAMW:
        body = [=] {
          adamw(arg<CF>(a, 0), arg<CF>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<F>(a, 4), arg<F>(a, 5), arg<F>(a, 6), arg<CF>(a, 7), arg<CF>(a, 8),
                arg<CF>(a, 9), arg<CF>(a, 10), arg<const unsigned char*>(a, 11), arg<int>(a, 12), arg<int>(a, 13), arg<float>(a, 14),
                arg<float>(a, 15), arg<float>(a, 16));
        };
        break;
      case KF_SEG_PARTIAL:
        body = [=] { seg_partial(arg<CH>(a, 0), arg<const long long*>(a, 1), arg<F>(a, 2), arg<int>(a, 3), arg<int>(a, 4)); };
        break;
      case KF_SEG_FINISH:
        body = [=] { seg_finish(arg<CF>(a, 0), arg<F>(a, 1), arg<F>(a, 2), arg<F>(a, 3), arg<F>(a, 4), arg<F>(a, 5), arg<int>(a, 6), arg<int>(a, 7)); };
        break;
      case KF_SEG_GRAD:
        body = [=] {
          seg_grad(arg<CH>(a, 0), arg<const long long*>(a, 1), arg<CF>(a, 2), arg<CF>(a, 3), arg<CF>(a, 4), arg<H>(a, 5), arg<int>(a, 6),
                   arg<int>(a, 7), arg<unsigned>(a, 8));
        };
        break;
      case KF_CH_SCALE:
        body = [=] { channel_scale(arg<CH>(a, 0), arg<CH>(a, 1), arg<CH>(a, 2), arg<H>(a, 3), arg<int>(a, 4), arg<int>(a, 5)); };
        break;
      case KF_CH_DOT:
        body = [=] { channel_dot(arg<CH>(a, 0), arg<CH>(a, 1), arg<H>(a, 2), arg<int>(a, 3), arg<int>(a, 4)); };
        break;
      default:
        throw Fault("the emulation has no case for this kernel");
    }
    E.launches[f]++;
    return run_grid(ctx, name, barrier_kernels[f], gx, gy, body);
  } catch (const Fault& e) {
    ctx->err = "launch " + name + ": " + e.what();
    return 1;
  }
}

// Buf is a copy of a caller's buffer between guard zones; outputs start as all-ones bytes
// (NaN in float16 and float32). An input's guard zones are all-ones too, so a kernel that reads
// past an input gets NaN, which the comparison with the CPU kernels reports; an output's hold
// another pattern, so a write past it shows.
struct Buf {
  static constexpr size_t kGuard = 256;
  const char* name;
  size_t n;
  const void* src;  // the input it copies, or nullptr for an output
  unsigned char pattern;
  std::vector<unsigned char> mem;

  Buf(const char* name, size_t n, const void* src)
      : name(name), n(n), src(src), pattern(src ? 0xff : 0xa5), mem(n + 2 * kGuard, pattern) {
    if (src) {
      memcpy(p(), src, n);
    } else {
      std::fill(mem.begin() + kGuard, mem.end() - kGuard, (unsigned char)0xff);
    }
  }
  void* p() { return mem.data() + kGuard; }

  // check returns what is wrong with the buffer after the kernels ran, or "".
  std::string check() {
    for (size_t i = 0; i < kGuard; i++)
      if (mem[i] != pattern || mem[kGuard + n + i] != pattern) return std::string("a kernel wrote outside ") + name;
    if (src && memcmp(p(), src, n) != 0) return std::string("a kernel wrote into its input ") + name;
    return "";
  }
};

int finish(Ctx& ctx, int rc, std::vector<Buf*> bufs, char* err, int errlen) {
  std::string msg = rc ? ctx.err : "";
  for (Buf* b : bufs) {
    if (!msg.empty()) break;
    msg = b->check();
  }
  if (msg.empty()) return 0;
  snprintf(err, (size_t)errlen, "%s", msg.c_str());
  return 1;
}

}  // namespace

extern "C" {

int emu_bn_forward(int gpu, const uint16_t* x, const float* gamma, const float* beta, uint16_t* y, float* mean, float* var, int N,
                   int C, int HW, int S, float eps, int act, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)N * C * HW * 2, nc = (size_t)C * 4;
  Buf bx("x", nx, x), bg("gamma", nc, gamma), bb("beta", nc, beta), by("y", nx, nullptr), bm("mean", nc, nullptr),
      bv("var", nc, nullptr), bp("scratch", (size_t)C * S * 2 * 4, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_bn_forward(launch, &ctx, bx.p(), (const float*)bg.p(), (const float*)bb.p(), by.p(), (float*)bm.p(), (float*)bv.p(),
                      (float*)bp.p(), N, C, HW, S, eps, act);
  } else {
    cpu_bn_forward((const uint16_t*)bx.p(), (const float*)bg.p(), (const float*)bb.p(), (uint16_t*)by.p(), (float*)bm.p(),
                   (float*)bv.p(), N, C, HW, eps, act);
  }
  if (finish(ctx, rc, {&bx, &bg, &bb, &by, &bm, &bv, &bp}, err, errlen)) return 1;
  memcpy(y, by.p(), nx);
  memcpy(mean, bm.p(), nc);
  memcpy(var, bv.p(), nc);
  return 0;
}

int emu_bn_backward(int gpu, const uint16_t* dy, const uint16_t* x, const float* gamma, const float* beta, const float* mean,
                    const float* var, uint16_t* dx, float* dgamma, float* dbeta, int N, int C, int HW, int S, float eps, int act,
                    char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)N * C * HW * 2, nc = (size_t)C * 4;
  Buf bdy("dy", nx, dy), bx("x", nx, x), bg("gamma", nc, gamma), bb("beta", nc, beta), bm("mean", nc, mean), bv("var", nc, var),
      bdx("dx", nx, nullptr), bdg("dgamma", nc, nullptr), bdb("dbeta", nc, nullptr), bp("scratch", (size_t)C * S * 2 * 4, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_bn_backward(launch, &ctx, bdy.p(), bx.p(), (const float*)bg.p(), (const float*)bb.p(), (const float*)bm.p(),
                       (const float*)bv.p(), bdx.p(), (float*)bdg.p(), (float*)bdb.p(), (float*)bp.p(), N, C, HW, S, eps, act);
  } else {
    cpu_bn_backward((const uint16_t*)bdy.p(), (const uint16_t*)bx.p(), (const float*)bg.p(), (const float*)bb.p(), (const float*)bm.p(),
                    (const float*)bv.p(), (uint16_t*)bdx.p(), (float*)bdg.p(), (float*)bdb.p(), N, C, HW, eps, act);
  }
  if (finish(ctx, rc, {&bdy, &bx, &bg, &bb, &bm, &bv, &bdx, &bdg, &bdb, &bp}, err, errlen)) return 1;
  memcpy(dx, bdx.p(), nx);
  memcpy(dgamma, bdg.p(), nc);
  memcpy(dbeta, bdb.p(), nc);
  return 0;
}

static DWGeo cpu_geo(EmuGeo g) { return DWGeo{g.k, g.k, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw, g.N, g.C, g.H, g.W, g.Ho, g.Wo}; }

int emu_dw_grad(int gpu, const uint16_t* x, const uint16_t* dy, uint16_t* dW, EmuGeo g, int S, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)g.N * g.C * g.H * g.W * 2, ny = (size_t)g.N * g.C * g.Ho * g.Wo * 2, nw = (size_t)g.C * g.k * g.k * 2;
  Buf bx("x", nx, x), bdy("dy", ny, dy), bw("dW", nw, nullptr), bp("scratch", (size_t)g.C * S * g.k * g.k * 4, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_dw_grad(launch, &ctx, bx.p(), bdy.p(), bw.p(), (float*)bp.p(), g.N, g.C, g.H, g.W, g.Ho, g.Wo, g.k, g.sh, g.sw, g.dh, g.dw,
                   g.ph, g.pw, S);
  } else {
    cpu_dw_grad((const uint16_t*)bx.p(), (const uint16_t*)bdy.p(), (uint16_t*)bw.p(), cpu_geo(g));
  }
  if (finish(ctx, rc, {&bx, &bdy, &bw, &bp}, err, errlen)) return 1;
  memcpy(dW, bw.p(), nw);
  return 0;
}

int emu_dw_conv(int gpu, const uint16_t* in, const uint16_t* w, uint16_t* out, EmuGeo g, int grad, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)g.N * g.C * g.H * g.W * 2, ny = (size_t)g.N * g.C * g.Ho * g.Wo * 2, nw = (size_t)g.C * g.k * g.k * 2;
  Buf bin(grad ? "dy" : "x", grad ? ny : nx, in), bw("w", nw, w), bout(grad ? "dx" : "y", grad ? nx : ny, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_dw_conv(launch, &ctx, bin.p(), bw.p(), bout.p(), g.N, g.C, g.H, g.W, g.Ho, g.Wo, g.k, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw, grad);
  } else {
    cpu_dw_conv((const uint16_t*)bin.p(), (const uint16_t*)bw.p(), (uint16_t*)bout.p(), cpu_geo(g), grad);
  }
  if (finish(ctx, rc, {&bin, &bw, &bout}, err, errlen)) return 1;
  memcpy(out, bout.p(), grad ? nx : ny);
  return 0;
}

int emu_pack(int gpu, int n, void* const* ptrs, const int64_t* sizes, const unsigned char* half, float* m, int64_t total, int unpack,
             char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  std::vector<std::unique_ptr<Buf>> ts;
  std::vector<void*> tp;
  std::vector<Buf*> bufs;
  for (int j = 0; j < n; j++) {
    ts.push_back(std::make_unique<Buf>("a tensor", (size_t)sizes[j] * (half[j] ? 2 : 4), unpack ? nullptr : ptrs[j]));
    tp.push_back(ts.back()->p());
    bufs.push_back(ts.back().get());
  }
  Buf bm("the matrix", (size_t)total * 4, unpack ? m : nullptr);
  bufs.push_back(&bm);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_pack(launch, &ctx, n, tp.data(), sizes, half, (float*)bm.p(), total, unpack);
  } else {
    cpu_pack(n, tp.data(), sizes, half, (float*)bm.p(), total, unpack);
  }
  if (finish(ctx, rc, bufs, err, errlen)) return 1;
  if (unpack) {
    for (int j = 0; j < n; j++) memcpy(ptrs[j], tp[(size_t)j], (size_t)sizes[j] * (half[j] ? 2 : 4));
  } else {
    memcpy(m, bm.p(), (size_t)total * 4);
  }
  return 0;
}

int emu_adamw(int gpu, const float* p, const float* g, const float* m, const float* v, float* p2, float* m2, float* v2, const float* sc,
              int skip, int total, int P, float b1, float b2, float eps, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nt = (size_t)total * 4, np = (size_t)P * 4;
  Buf bp("p", nt, p), bg("g", nt, g), bm("m", np, m), bv("v", np, v), bp2("p2", nt, nullptr), bm2("m2", np, nullptr), bv2("v2", np, nullptr);
  std::vector<std::unique_ptr<Buf>> scalars;
  const float* sp[4];
  for (int i = 0; i < 4; i++) {
    scalars.push_back(std::make_unique<Buf>("a scalar", 4, sc + i));
    sp[i] = (const float*)scalars.back()->p();
  }
  unsigned char flag = (unsigned char)(skip != 0);
  Buf bs("skip", 1, &flag);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_adamw(launch, &ctx, (const float*)bp.p(), (const float*)bg.p(), (const float*)bm.p(), (const float*)bv.p(), (float*)bp2.p(),
                 (float*)bm2.p(), (float*)bv2.p(), sp, bs.p(), total, P, b1, b2, eps);
  } else {
    cpu_adamw((const float*)bp.p(), (const float*)bg.p(), (const float*)bm.p(), (const float*)bv.p(), (float*)bp2.p(), (float*)bm2.p(),
              (float*)bv2.p(), sc, skip, total, P, b1, b2, eps);
  }
  std::vector<Buf*> bufs = {&bp, &bg, &bm, &bv, &bp2, &bm2, &bv2, &bs};
  for (auto& b : scalars) bufs.push_back(b.get());
  if (finish(ctx, rc, bufs, err, errlen)) return 1;
  memcpy(p2, bp2.p(), nt);
  memcpy(m2, bm2.p(), np);
  memcpy(v2, bv2.p(), np);
  return 0;
}

int emu_seg_loss(int gpu, const uint16_t* z, const int64_t* y, float* parts, int N, int K, int HW, int S, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nz = (size_t)N * K * HW * 2, ny = (size_t)N * HW * 8, nn = (size_t)N * 4;
  Buf bz("z", nz, z), by("y", ny, y), bce("ce", nn, nullptr), bi("inter", nn, nullptr), bp("p", nn, nullptr), bt("t", nn, nullptr),
      bx("pixels", nn, nullptr), bpart("scratch", (size_t)N * S * 5 * 4, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_seg_loss(launch, &ctx, bz.p(), by.p(), (float*)bce.p(), (float*)bi.p(), (float*)bp.p(), (float*)bt.p(), (float*)bx.p(),
                    (float*)bpart.p(), N, K, HW, S);
  } else {
    memset(bpart.p(), 0, (size_t)N * S * 5 * 4);
    cpu_seg_parts((const uint16_t*)bz.p(), (const int64_t*)by.p(), (float*)bce.p(), (float*)bi.p(), (float*)bp.p(), (float*)bt.p(),
                  (float*)bx.p(), N, K, HW);
  }
  if (finish(ctx, rc, {&bz, &by, &bce, &bi, &bp, &bt, &bx, &bpart}, err, errlen)) return 1;
  Buf* outs[5] = {&bce, &bi, &bp, &bt, &bx};
  for (int j = 0; j < 5; j++) memcpy(parts + (size_t)j * N, outs[j]->p(), nn);
  return 0;
}

int emu_seg_grad(int gpu, const uint16_t* z, const int64_t* y, const float* d, uint16_t* dz, int N, int K, int HW, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nz = (size_t)N * K * HW * 2, ny = (size_t)N * HW * 8, nn = (size_t)N * 4;
  Buf bz("z", nz, z), by("y", ny, y), bce("dce", nn, d), bi("dinter", nn, d + N), bp("dp", nn, d + 2 * N), bdz("dz", nz, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_seg_grad(launch, &ctx, bz.p(), by.p(), (const float*)bce.p(), (const float*)bi.p(), (const float*)bp.p(), bdz.p(), N, K, HW);
  } else {
    cpu_seg_grad((const uint16_t*)bz.p(), (const int64_t*)by.p(), (const float*)bce.p(), (const float*)bi.p(), (const float*)bp.p(),
                 (uint16_t*)bdz.p(), N, K, HW);
  }
  if (finish(ctx, rc, {&bz, &by, &bce, &bi, &bp, &bdz}, err, errlen)) return 1;
  memcpy(dz, bdz.p(), nz);
  return 0;
}

int emu_channel_scale(int gpu, const uint16_t* x, const uint16_t* sc, const uint16_t* sh, uint16_t* y, int P, int HW, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)P * HW * 2, np = (size_t)P * 2;
  Buf bx("x", nx, x), bs("s", np, sc), bt("t", np, sh), by("y", nx, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_channel_scale(launch, &ctx, bx.p(), bs.p(), bt.p(), by.p(), P, HW);
  } else {
    cpu_channel_scale((const uint16_t*)bx.p(), (const uint16_t*)bs.p(), (const uint16_t*)bt.p(), (uint16_t*)by.p(), P, HW);
  }
  if (finish(ctx, rc, {&bx, &bs, &bt, &by}, err, errlen)) return 1;
  memcpy(y, by.p(), nx);
  return 0;
}

int emu_channel_dot(int gpu, const uint16_t* a, const uint16_t* b, uint16_t* out, int P, int HW, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  size_t nx = (size_t)P * HW * 2, np = (size_t)P * 2;
  Buf ba("a", nx, a), bb("b", nx, b), bo("out", np, nullptr);
  Ctx ctx;
  int rc = 0;
  if (gpu) {
    rc = k_channel_dot(launch, &ctx, ba.p(), bb.p(), bo.p(), P, HW);
  } else {
    cpu_channel_dot((const uint16_t*)ba.p(), (const uint16_t*)bb.p(), (uint16_t*)bo.p(), P, HW);
  }
  if (finish(ctx, rc, {&ba, &bb, &bo}, err, errlen)) return 1;
  memcpy(out, bo.p(), np);
  return 0;
}

int emu_selftest(int which, char* err, int errlen) {
  std::lock_guard<std::mutex> lock(mu);
  Ctx ctx;
  int rc = 0;
  std::vector<float> out(kThreads);
  Buf b("out", out.size() * sizeof(float), nullptr);
  float* o = (float*)b.p();
  switch (which) {
    case 0:  // a correct kernel: a block-wide exchange through a barrier and shuffles
      rc = run_grid(&ctx, "selftest", true, 2, 1, [&] {
        unsigned t = tid();
        E.xchg[t] = (float)t;
        sync_block();
        float v = shfl_down((float)t, 1);
        if (bx() == 1) o[t] = v;
      });
      break;
    case 1:  // half the threads return before the barrier the others wait at
      rc = run_grid(&ctx, "selftest", true, 1, 1, [&] {
        if (tid() >= kThreads / 2) return;
        sync_block();
      });
      break;
    case 2:  // __syncthreads and a shuffle met out of step
      rc = run_grid(&ctx, "selftest", true, 1, 1, [&] {
        if (tid() & 1) {
          sync_block();
        } else {
          shfl_down(1, 1);
        }
      });
      break;
    case 3:  // a write one past the output
      rc = run_grid(&ctx, "selftest", false, 1, 1, [&] { o[tid() + 1] = 0; });
      break;
    case 4: {  // a launch with one argument too few
      int n = 1;
      void* args[] = {&o, &n, &n, &n, NULL};
      rc = launch(&ctx, KF_FWD_PARTIAL, 1, 1, args);
      break;
    }
    case 5:  // a grid taller than CUDA allows
      rc = launch(&ctx, KF_DW_FINISH, 1, 70000, nullptr);
      break;
    case 6:  // a barrier in a kernel run without coroutines
      rc = run_grid(&ctx, "selftest", false, 1, 1, [&] { sync_block(); });
      break;
  }
  if (finish(ctx, rc, {&b}, err, errlen)) return 1;
  memcpy(out.data(), b.p(), out.size() * sizeof(float));
  for (int t = 0; t < kThreads; t++) {
    float want = (t & 31) + 1 < 32 ? (float)(t + 1) : (float)t;
    if (out[(size_t)t] != want) {
      snprintf(err, (size_t)errlen, "selftest: thread %d got %g, want %g", t, out[(size_t)t], want);
      return 1;
    }
  }
  return 0;
}

void emu_scalar_only(int on) {
  std::lock_guard<std::mutex> lock(mu);
  k_scalar_only = on;
}

long long emu_launches(int f) {
  std::lock_guard<std::mutex> lock(mu);
  return f >= 0 && f < KF_COUNT ? E.launches[f] : -1;
}

const char* emu_kernel_name(int f) { return f >= 0 && f < KF_COUNT ? kf_names[f] : ""; }

int emu_kernel_count(void) { return KF_COUNT; }

long long emu_blocks_run(void) {
  std::lock_guard<std::mutex> lock(mu);
  return E.blocks;
}

}  // extern "C"
