// The CUDA runtime of the CPU emulation (emu.h says what it models): device memory with guard
// zones, streams as queues run when the host must see their work, thread blocks as fibers.
// One host thread drives it (the tests do).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tests/emu/emu.h"

// spw_emu_swap(save, next): saves the callee-saved registers and the stack pointer of the
// running context into *save, switches to the stack `next` and pops its registers (System V
// x86-64). A new fiber's stack holds six zero registers and the address of Trampoline.
asm(R"(
  .text
  .globl spw_emu_swap
  .type spw_emu_swap,@function
spw_emu_swap:
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
  .size spw_emu_swap, .-spw_emu_swap
)");
extern "C" void spw_emu_swap(void** save_sp, void* next_sp);

// AddressSanitizer follows stack switches only when told (its fiber interface); without it
// these are no-ops. A sanitizer build runs the tier with -DSPW_CUDA_EMU=ON (docs/gpu.md).
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SPW_EMU_ASAN 1
#else
#define SPW_EMU_ASAN 0
#endif

using EmuOp = std::pair<std::string, std::function<void()>>;

struct CUstream_st {
  bool non_blocking = false;
  bool legacy = false;
  std::deque<EmuOp> queue;
  // Stream capture (cudaStreamBeginCapture): work goes into `captured` instead of `queue`.
  bool capturing = false;
  bool capture_invalid = false;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;  // the thread that began the capture
  std::vector<EmuOp> captured;
};

// An event: the serial of its latest record and of the latest record that has run. Never
// freed (cudaEventDestroy marks it), as queued work may still name it.
struct CUevent_st {
  uint64_t recorded = 0, completed = 0;
  std::chrono::steady_clock::time_point ran;  // when the latest completed record ran
  CUstream_st* stream = nullptr;
  bool destroyed = false;
};

// A captured graph and its instantiation: the captured work, replayed in capture order.
struct CUgraph_st {
  std::vector<EmuOp> ops;
};
struct CUgraphExec_st {
  std::vector<EmuOp> ops;
};

namespace spw_emu {
namespace {

// Guard zones before and after each allocation, checked after every operation. Their 4-byte
// words are 0x7fa5a5a5, an f32 NaN (and a wild int32), so a read past either end shows too.
constexpr size_t kGuard = 256;
unsigned char GuardByte(uintptr_t addr) { return addr % 4 == 3 ? 0x7f : 0xa5; }
// What the emulated device reports and lends: 16 GiB, or SPW_EMU_DEVICE_MIB (a served model's
// KV pool is sized from it by --gpu-memory-utilization, and is host memory here).
const size_t kTotalBytes = [] {
  const char* e = std::getenv("SPW_EMU_DEVICE_MIB");
  const long long mib = e != nullptr ? std::atoll(e) : 0;
  return mib > 0 ? static_cast<size_t>(mib) << 20 : size_t{16} << 30;
}();

struct Allocation {
  size_t bytes;
  char* base;   // what cudaMalloc returned
  char* block;  // the host allocation: kGuard bytes, the allocation, the back guard
  size_t block_bytes;
};

struct Runtime {
  std::map<uintptr_t, Allocation> allocations;  // by base address
  size_t allocated = 0;
  CUstream_st legacy = [] {
    CUstream_st l;
    l.legacy = true;
    return l;
  }();
  std::vector<CUstream_st*> streams;  // live created streams, in creation order
  cudaError_t last_error = cudaSuccess;
  std::string running;                 // the operation in progress (for reports)
  std::map<uintptr_t, size_t> pinned;  // cudaHostAlloc'd: base -> bytes
  std::unordered_map<const void*, size_t> dynamic_shared;  // cudaFuncSetAttribute limits
  uint64_t event_serial = 0;
  std::vector<CUevent_st*> destroyed_events;  // never freed (cudaEventDestroy)
};

Runtime& R() {
  static Runtime* r = new Runtime();  // never destroyed: static destructors may still free
  return *r;
}

const Allocation* Find(const void* p) {
  auto& a = R().allocations;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = a.upper_bound(addr);
  if (it == a.begin()) return nullptr;
  --it;
  return addr < it->first + it->second.bytes + (it->second.bytes == 0 ? 1 : 0) ? &it->second
                                                                               : nullptr;
}

void FillGuard(char* from, char* to) {
  for (char* c = from; c < to; ++c)
    *c = static_cast<char>(GuardByte(reinterpret_cast<uintptr_t>(c)));
}

void CheckGuards(const std::string& after) {
  for (const auto& [addr, a] : R().allocations) {
    const char* end = a.block + a.block_bytes;
    for (const char* c = a.block; c < end; c = c + 1 == a.base ? a.base + a.bytes : c + 1) {
      if (static_cast<unsigned char>(*c) != GuardByte(reinterpret_cast<uintptr_t>(c))) {
        Fail("a write outside a " + std::to_string(a.bytes) + "-byte device allocation (at byte " +
             std::to_string(c - a.base) + "), by " + after);
      }
    }
  }
}

CUstream_st* Resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy) return &R().legacy;
  if (std::find(R().streams.begin(), R().streams.end(), s) == R().streams.end()) {
    Fail("use of a stream that was never created or is destroyed");
  }
  return s;
}

// Runs the oldest queued operation of `s`.
void RunOne(CUstream_st* s) {
  auto [what, op] = std::move(s->queue.front());
  s->queue.pop_front();
  const std::string outer = R().running;  // an event wait runs other streams' work inside
  R().running = what;
  op();
  R().running = outer;
  CheckGuards(what);
}

void Drain(CUstream_st* s) {
  while (!s->queue.empty()) RunOne(s);
}

// Runs `s`'s work up to the latest record of `e`.
void DrainUntil(CUstream_st* s, const CUevent_st* e, uint64_t serial) {
  while (e->completed < serial) {
    if (s->queue.empty()) Fail("an event record that never runs (recorded in a capture?)");
    RunOne(s);
  }
}

// The stream being captured (one capture at a time), or null.
CUstream_st* Capturing() {
  for (CUstream_st* s : R().streams) {
    if (s->capturing) return s;
  }
  return nullptr;
}

// A call that CUDA refuses while a capture is under way (in the global and thread-local modes
// for `unsafe` calls such as cudaMalloc and synchronising ones, in every mode for a
// synchronisation of the capturing stream): it invalidates the capture, as CUDA's does, and
// returns the error the call gives. cudaSuccess when the call may go on.
cudaError_t RefuseInCapture(bool unsafe, const CUstream_st* syncs = nullptr) {
  CUstream_st* c = Capturing();
  if (c == nullptr) return cudaSuccess;
  // Thread-local mode refuses the unsafe calls of the capturing thread only; other host
  // threads (a server's fine-tune preparer) may allocate meanwhile.
  const bool unsafe_here =
      unsafe && (c->capture_mode == cudaStreamCaptureModeGlobal ||
                 (c->capture_mode == cudaStreamCaptureModeThreadLocal &&
                  c->capture_thread == std::this_thread::get_id()));
  const bool refused = unsafe_here ||
                       (syncs != nullptr && (syncs == c || (syncs->legacy && !c->non_blocking)));
  if (!refused) return cudaSuccess;
  c->capture_invalid = true;
  return cudaErrorStreamCaptureUnsupported;
}

void DrainBlocking() {
  for (CUstream_st* s : R().streams) {
    if (!s->non_blocking) Drain(s);
  }
}

// Every stream, the created ones first (in creation order) and the legacy stream last: any
// order is one CUDA may choose for independent streams.
void DrainAll() {
  for (CUstream_st* s : R().streams) Drain(s);
  Drain(&R().legacy);
}

// ---- fibers ----

constexpr size_t kStackBytes = SPW_EMU_ASAN ? 256 << 10 : 64 << 10;
constexpr uint64_t kStackCanary = 0x5057454d55535441ull;

struct Stacks {
  std::vector<std::unique_ptr<char[]>> stacks;
  void* scheduler_sp = nullptr;
  const std::function<void()>* body = nullptr;
  // ASan's view of the scheduler's stack (learnt at the first switch into a fiber) and its
  // fake stack while a fiber runs.
  const void* scheduler_bottom = nullptr;
  size_t scheduler_size = 0;
  void* scheduler_fake = nullptr;
  uint64_t block_serial = 0;                      // blocks run so far
  std::unordered_map<void*, uint64_t> shared_at;  // a __shared__ variable: its last fill
};
Stacks& S() {
  static Stacks* s = new Stacks();
  return *s;
}

// Tells ASan that the stack in use is now the one switched to (after spw_emu_swap returns).
void FinishSwitch(void* fake) {
#if SPW_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &S().scheduler_bottom, &S().scheduler_size);
#endif
}

[[noreturn]] void Trampoline() {
  if (SPW_EMU_ASAN) FinishSwitch(nullptr);
  (*S().body)();
  Yield(State::kDone);
  Fail("a finished thread was resumed");
}

enum class Order { kForward, kReverse, kShuffle };
Order ThreadOrder() {
  static const Order o = [] {
    const char* e = std::getenv("SPW_EMU_ORDER");
    const std::string v = e != nullptr ? e : "";
    if (v == "reverse") return Order::kReverse;
    if (v == "shuffle") return Order::kShuffle;
    if (!v.empty() && v != "forward") Fail("SPW_EMU_ORDER must be forward, reverse or shuffle");
    return Order::kForward;
  }();
  return o;
}

// Dynamic shared memory is followed by this many NaN guard words, checked after each block.
constexpr size_t kSharedGuardWords = 32;
constexpr uint64_t kSharedGuard = 0x7fa5a5a57fa5a5a5ull;

void RunBlock() {
  Block& b = g_block;
  const size_t shared_words = (b.dynamic_shared_bytes + 7) / 8;
  b.dynamic_shared.assign(shared_words + kSharedGuardWords, kSharedGuard);
  std::memset(b.dynamic_shared.data(), 0xff, b.dynamic_shared_bytes);
  const unsigned n = b.block_dim.x;
  Stacks& st = S();
  while (st.stacks.size() < n) {
    st.stacks.emplace_back(new char[kStackBytes]);
    std::memcpy(st.stacks.back().get(), &kStackCanary, sizeof(kStackCanary));
  }
  ++st.block_serial;
  b.fibers.assign(n, Fiber{});
  b.shuffle.assign(n, 0);
  for (unsigned t = 0; t < n; ++t) {
#if SPW_EMU_ASAN
    // A reused stack may keep the poisoned redzones of frames that never returned.
    ASAN_UNPOISON_MEMORY_REGION(st.stacks[t].get() + sizeof(kStackCanary),
                                kStackBytes - sizeof(kStackCanary));
#endif
    const auto top = reinterpret_cast<uintptr_t>(st.stacks[t].get() + kStackBytes) & ~uintptr_t{15};
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                               // alignment of Trampoline's frame
    *--sp = reinterpret_cast<void*>(&Trampoline);  // spw_emu_swap's ret goes here
    for (int r = 0; r < 6; ++r) *--sp = nullptr;   // rbp rbx r12-r15
    b.fibers[t].sp = sp;
    b.fibers[t].tid = t;
  }
  // Runs the runnable threads among `order` until each blocks.
  auto run = [&](const std::vector<unsigned>& order) {
    for (unsigned t : order) {
      Fiber& f = b.fibers[t];
      if (f.state != State::kRun) continue;
      b.cur = &f;
#if SPW_EMU_ASAN
      __sanitizer_start_switch_fiber(&st.scheduler_fake, st.stacks[t].get(), kStackBytes);
#endif
      spw_emu_swap(&st.scheduler_sp, f.sp);
#if SPW_EMU_ASAN
      __sanitizer_finish_switch_fiber(st.scheduler_fake, nullptr, nullptr);
#endif
    }
    b.cur = nullptr;
  };
  // Warp w goes on when its live lanes all wait at a shuffle; lanes split between a shuffle
  // and anything else is a divergent shuffle. Returns whether it went on.
  auto release_warp = [&](unsigned w) {
    bool any = false, all = true;
    for (unsigned t = w * 32; t < w * 32 + 32; ++t) {
      const State s = b.fibers[t].state;
      if (s == State::kDone) continue;
      any |= s == State::kWarpBar;
      all &= s == State::kWarpBar;
    }
    if (any && !all) {
      Fail("kernel " + b.kernel + " block " + std::to_string(b.block_idx.x) + ": warp " +
           std::to_string(w) + " diverges at a shuffle or __syncwarp");
    }
    if (!any) return false;
    for (unsigned t = w * 32; t < w * 32 + 32; ++t) {
      if (b.fibers[t].state == State::kWarpBar) b.fibers[t].state = State::kRun;
    }
    return true;
  };
  const unsigned warps = n / 32;
  std::vector<unsigned> order(n);
  std::vector<std::vector<unsigned>> warp_lanes(warps);
  static std::mt19937 rng(20261128);
  for (;;) {
    if (ThreadOrder() == Order::kReverse) {
      // Warps from the last, each as far as it gets (through its shuffles) before the next
      // starts: the most skew between warps, where a missing __syncthreads between two
      // warps' uses of shared memory shows.
      for (unsigned w = warps; w-- > 0;) {
        std::vector<unsigned>& lanes = warp_lanes[w];
        lanes.resize(32);
        for (unsigned l = 0; l < 32; ++l) lanes[l] = w * 32 + 31 - l;
        do {
          run(lanes);
        } while (release_warp(w));
      }
    } else {
      // Every thread once per round, so warps go in lockstep from shuffle to shuffle.
      for (unsigned t = 0; t < n; ++t) order[t] = t;
      if (ThreadOrder() == Order::kShuffle) std::shuffle(order.begin(), order.end(), rng);
      run(order);
      bool released = false;
      for (unsigned w = 0; w < warps; ++w) released |= release_warp(w);
      if (released) continue;
    }
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done &= f.state == State::kDone;
    if (all_done) break;
    for (Fiber& f : b.fibers) {
      if (f.state == State::kBlockBar) f.state = State::kRun;
    }
  }
  for (size_t w = shared_words; w < b.dynamic_shared.size(); ++w) {
    if (b.dynamic_shared[w] != kSharedGuard) {
      Fail("kernel " + b.kernel + ": a write past the end of its " +
           std::to_string(b.dynamic_shared_bytes) + " bytes of dynamic shared memory");
    }
  }
  for (unsigned t = 0; t < n; ++t) {
    if (std::memcmp(st.stacks[t].get(), &kStackCanary, sizeof(kStackCanary)) != 0) {
      Fail("kernel " + b.kernel + ": a thread overflowed its " + std::to_string(kStackBytes >> 10) +
           " KiB emulation stack");
    }
  }
}

}  // namespace

std::unique_lock<std::recursive_mutex> ApiLock() {
  static std::recursive_mutex* m = new std::recursive_mutex();  // never destroyed, as R()
  return std::unique_lock<std::recursive_mutex>(*m);
}

void Fail(const std::string& message) {
  std::fprintf(stderr, "EMU: %s\n", message.c_str());
  if (!R().running.empty()) std::fprintf(stderr, "EMU: while running %s\n", R().running.c_str());
  std::fflush(stderr);
  std::abort();
}

bool IsDeviceRange(const void* p, size_t bytes) {
  const Allocation* a = Find(p);
  if (a == nullptr) return false;
  return static_cast<const char*>(p) + bytes <= a->base + a->bytes;
}

void RequireDeviceRange(const void* p, size_t bytes, const std::string& what) {
  if (bytes == 0 || IsDeviceRange(p, bytes)) return;
  const Allocation* a = Find(p);
  if (a == nullptr) Fail(what + ": not device memory");
  Fail(what + ": " + std::to_string(bytes) + " bytes at offset " +
       std::to_string(static_cast<const char*>(p) - a->base) + " run past the end of a " +
       std::to_string(a->bytes) + "-byte device allocation");
}

void SetLastError(cudaError_t e) { R().last_error = e; }

void Enqueue(cudaStream_t stream, std::string what, std::function<void()> op) {
  CUstream_st* s = Resolve(stream);
  if (s->capturing) {
    s->captured.emplace_back(std::move(what), std::move(op));
    return;
  }
  if (CUstream_st* c = Capturing(); c != nullptr && s->legacy && !c->non_blocking) {
    // The legacy stream would wait for the capturing (blocking) stream: CUDA refuses that
    // implicit dependency and invalidates the capture.
    c->capture_invalid = true;
    SetLastError(cudaErrorStreamCaptureImplicit);
    return;
  }
  // The legacy stream waits for the blocking streams' earlier work and they wait for its.
  if (s->legacy) {
    DrainBlocking();
  } else if (!s->non_blocking) {
    Drain(&R().legacy);
  }
  s->queue.emplace_back(std::move(what), std::move(op));
}

void Yield(State s) {
  Fiber* f = g_block.cur;
  f->state = s;
#if SPW_EMU_ASAN
  // A finished thread's fake stack goes (null); the others keep theirs.
  __sanitizer_start_switch_fiber(s == State::kDone ? nullptr : &f->asan_fake, S().scheduler_bottom,
                                 S().scheduler_size);
#endif
  spw_emu_swap(&f->sp, S().scheduler_sp);
  FinishSwitch(f->asan_fake);
}

void FreshShared(void* p, size_t bytes) {
  uint64_t& at = S().shared_at[p];
  if (at == S().block_serial) return;
  at = S().block_serial;
  std::memset(p, 0xff, bytes);
}

void RunGrid(dim3 grid, dim3 block, size_t shared_bytes, const std::string& name,
             const std::function<void()>& body) {
  g_block.grid_dim = grid;
  g_block.block_dim = block;
  g_block.kernel = name;
  g_block.dynamic_shared_bytes = shared_bytes;
  S().body = &body;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        g_block.block_idx = dim3(x, y, z);
        RunBlock();
      }
    }
  }
  S().body = nullptr;
}

size_t MaxDynamicShared(const void* kernel) {
  auto it = R().dynamic_shared.find(kernel);
  return it != R().dynamic_shared.end() ? it->second : size_t{48} << 10;
}

void RequireBlockSize(int threads, const char* what) {
  if (g_block.block_dim.x != static_cast<unsigned>(threads)) {
    Fail("kernel " + g_block.kernel + ": " + what + " for " + std::to_string(threads) +
         " threads in a block of " + std::to_string(g_block.block_dim.x));
  }
}

bool Launcher::Valid(const void* kernel) const {
  const uint64_t threads = uint64_t{block_.x} * block_.y * block_.z;
  if (threads == 0 || threads > 1024 || block_.z > 64 || grid_.x == 0 || grid_.x > 0x7fffffffu ||
      grid_.y == 0 || grid_.y > 65535 || grid_.z == 0 || grid_.z > 65535) {
    SetLastError(cudaErrorInvalidConfiguration);
    return false;
  }
  if (threads > max_threads_) {
    SetLastError(cudaErrorLaunchOutOfResources);
    return false;
  }
  // More dynamic shared memory than the kernel's attribute allows (48 KiB unless raised).
  if (shared_bytes_ > MaxDynamicShared(kernel)) {
    SetLastError(cudaErrorInvalidValue);
    return false;
  }
  if (block_.y != 1 || block_.z != 1 || block_.x % 32 != 0) {
    Fail("EMU limitation: kernel " + name_ + " needs a 2-D/3-D block or a partial warp");
  }
  return true;
}

}  // namespace spw_emu

using spw_emu::Fail;
using spw_emu::R;

cudaError_t cudaGetDeviceCount(int* count) {
  const auto lock = spw_emu::ApiLock();
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  const auto lock = spw_emu::ApiLock();
  if (device != 0) return cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CPU emulation (tests/emu)");
  prop->totalGlobalMem = spw_emu::kTotalBytes;
  prop->multiProcessorCount = 4;
  prop->major = 9;
  prop->minor = 0;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDevice(int* device) {
  const auto lock = spw_emu::ApiLock();
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const auto lock = spw_emu::ApiLock();
  *total_bytes = spw_emu::kTotalBytes;
  *free_bytes = spw_emu::kTotalBytes - std::min(R().allocated, spw_emu::kTotalBytes);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  const auto lock = spw_emu::ApiLock();
  if (cudaError_t e = spw_emu::RefuseInCapture(true); e != cudaSuccess) return e;
  spw_emu::DrainAll();
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  const auto lock = spw_emu::ApiLock();
  *ptr = nullptr;
  if (cudaError_t e = spw_emu::RefuseInCapture(true); e != cudaSuccess) return e;
  if (bytes > spw_emu::kTotalBytes - std::min(R().allocated, spw_emu::kTotalBytes)) {
    return cudaErrorMemoryAllocation;
  }
  // 256-byte aligned as cudaMalloc's; the back guard is kGuard bytes and the rounding.
  const size_t total = spw_emu::kGuard + (bytes + spw_emu::kGuard + 255) / 256 * 256;
  char* block = static_cast<char*>(std::aligned_alloc(256, total));
  if (block == nullptr) return cudaErrorMemoryAllocation;
  char* base = block + spw_emu::kGuard;
  spw_emu::FillGuard(block, base);
  std::memset(base, 0xff, bytes);  // f32 NaN: reads of what was never written show
  spw_emu::FillGuard(base + bytes, block + total);
  R().allocations[reinterpret_cast<uintptr_t>(base)] = {
      .bytes = bytes, .base = base, .block = block, .block_bytes = total};
  R().allocated += bytes;
  *ptr = base;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  const auto lock = spw_emu::ApiLock();
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = spw_emu::RefuseInCapture(true); e != cudaSuccess) return e;
  spw_emu::DrainAll();  // cudaFree waits for the device
  auto it = R().allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == R().allocations.end()) Fail("cudaFree of a pointer cudaMalloc did not return");
  spw_emu::CheckGuards("the work before cudaFree");
  R().allocated -= it->second.bytes;
  std::free(it->second.block);
  R().allocations.erase(it);
  return cudaSuccess;
}

namespace {

// Whether [p, p + bytes) lies in one cudaHostAlloc allocation (pinned: copies read and write
// it when they run, not when they are queued).
bool IsPinned(const void* p, size_t bytes) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = R().pinned.upper_bound(addr);
  if (it == R().pinned.begin()) return false;
  --it;
  return addr + bytes <= it->first + it->second;
}

// A 2-D copy of `height` rows of `width` bytes (a plain copy is one row): checks its pointers
// against its kind and queues it. A pageable host source is staged now; pinned memory is read
// and written when the copy runs; pageable memory in a capture is refused. Returns whether the host
// must wait for it (a copy into pageable host memory), or an error.
cudaError_t QueueCopy(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                      size_t height, cudaMemcpyKind kind, cudaStream_t stream, const char* api,
                      bool* wait) {
  *wait = false;
  if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
  const bool dst_dev = spw_emu::IsDeviceRange(dst, 1), src_dev = spw_emu::IsDeviceRange(src, 1);
  if (kind == cudaMemcpyDefault) {
    kind = src_dev ? (dst_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                   : (dst_dev ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
  }
  const size_t dst_extent = height == 0 ? 0 : dpitch * (height - 1) + width;
  const size_t src_extent = height == 0 ? 0 : spitch * (height - 1) + width;
  const std::string what = std::string(api) + " of " + std::to_string(width * height) + " bytes";
  const bool to_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool from_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (to_dev) {
    spw_emu::RequireDeviceRange(dst, dst_extent, what + ", destination");
  } else if (dst_dev) {
    Fail(what + ": the destination is device memory but the kind says host");
  }
  if (from_dev) {
    spw_emu::RequireDeviceRange(src, src_extent, what + ", source");
  } else if (src_dev) {
    Fail(what + ": the source is device memory but the kind says host");
  }
  if (width * height == 0) return cudaSuccess;
  CUstream_st* s = spw_emu::Resolve(stream);
  const bool src_pinned = !from_dev && IsPinned(src, src_extent);
  const bool dst_pinned = !to_dev && IsPinned(dst, dst_extent);
  auto rows = [=](char* d, const char* from, size_t from_pitch) {
    for (size_t r = 0; r < height; ++r) std::memcpy(d + r * dpitch, from + r * from_pitch, width);
  };
  const bool pageable = (!from_dev && !src_pinned) || (!to_dev && !dst_pinned);
  if (pageable && s->capturing) {
    // NOTE(emu): refused, so as to be no more permissive than CUDA: a graph cannot stage a
    // pageable source at capture, and a copy into pageable memory would make the host wait
    // for the capturing stream.
    s->capture_invalid = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  if (!from_dev && !src_pinned) {
    auto staged = std::make_shared<std::vector<char>>(width * height);
    for (size_t r = 0; r < height; ++r) {
      std::memcpy(staged->data() + r * width, static_cast<const char*>(src) + r * spitch, width);
    }
    spw_emu::Enqueue(stream, what, [=] { rows(static_cast<char*>(dst), staged->data(), width); });
  } else {
    spw_emu::Enqueue(stream, what,
                     [=] { rows(static_cast<char*>(dst), static_cast<const char*>(src), spitch); });
  }
  *wait = !to_dev && !dst_pinned;
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const auto lock = spw_emu::ApiLock();
  // Synchronous on the legacy stream: refused while a capture is under way.
  if (cudaError_t e = spw_emu::RefuseInCapture(true, &R().legacy); e != cudaSuccess) return e;
  bool wait = false;
  const cudaError_t e =
      QueueCopy(dst, bytes, src, bytes, bytes, 1, kind, nullptr, "cudaMemcpy", &wait);
  if (e != cudaSuccess) return e;
  // A copy into host memory returns once done; one into device memory once its pageable
  // source is staged (it may still be in flight, unordered with non-blocking streams).
  if (wait) spw_emu::Drain(&R().legacy);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  return cudaMemcpy2DAsync(dst, bytes, src, bytes, bytes, 1, kind, stream);
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  bool wait = false;
  const cudaError_t e =
      QueueCopy(dst, dpitch, src, spitch, width, height, kind, stream,
                height == 1 && dpitch == width ? "cudaMemcpyAsync" : "cudaMemcpy2DAsync", &wait);
  if (e != cudaSuccess) return e;
  // A copy into pageable host memory returns once done.
  if (wait) spw_emu::Drain(spw_emu::Resolve(stream));
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int /*flags*/) {
  const auto lock = spw_emu::ApiLock();
  *ptr = nullptr;
  if (cudaError_t e = spw_emu::RefuseInCapture(true); e != cudaSuccess) return e;
  void* p = std::aligned_alloc(4096, (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096);
  if (p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(p, 0xff, bytes);
  R().pinned[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  const auto lock = spw_emu::ApiLock();
  if (ptr == nullptr) return cudaSuccess;
  if (cudaError_t e = spw_emu::RefuseInCapture(true); e != cudaSuccess) return e;
  auto it = R().pinned.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == R().pinned.end()) Fail("cudaFreeHost of a pointer cudaHostAlloc did not return");
  spw_emu::DrainAll();  // as cudaFree, it waits for the device
  R().pinned.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  spw_emu::RequireDeviceRange(dst, bytes, "cudaMemset of " + std::to_string(bytes) + " bytes");
  spw_emu::Enqueue(stream, "cudaMemset", [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  const auto lock = spw_emu::ApiLock();
  return cudaMemsetAsync(dst, value, bytes, nullptr);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  const auto lock = spw_emu::ApiLock();
  auto* s = new CUstream_st();
  s->non_blocking = (flags & cudaStreamNonBlocking) != 0;
  R().streams.push_back(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  const auto lock = spw_emu::ApiLock();
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  CUstream_st* s = spw_emu::Resolve(stream);
  if (s->legacy) return cudaErrorInvalidValue;
  spw_emu::Drain(s);  // its work still completes
  std::erase(R().streams, s);
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  CUstream_st* s = spw_emu::Resolve(stream);
  if (cudaError_t e = spw_emu::RefuseInCapture(s->legacy, s); e != cudaSuccess) return e;
  spw_emu::Drain(s);
  return cudaSuccess;
}

// ---- events ----

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int /*flags*/) {
  const auto lock = spw_emu::ApiLock();
  *event = new CUevent_st();
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  const auto lock = spw_emu::ApiLock();
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

namespace {

CUevent_st* Live(cudaEvent_t e) {
  if (e == nullptr || e->destroyed) Fail("use of a null or destroyed event");
  return e;
}

}  // namespace

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  const auto lock = spw_emu::ApiLock();
  Live(event)->destroyed = true;  // kept: queued work may still complete it
  R().destroyed_events.push_back(event);  // reachable, so not a leak to LeakSanitizer
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  CUevent_st* e = Live(event);
  CUstream_st* s = spw_emu::Resolve(stream);
  if (s->capturing) Fail("EMU limitation: cudaEventRecord in a stream capture");
  const uint64_t serial = ++R().event_serial;
  e->recorded = serial;
  e->stream = s;
  spw_emu::Enqueue(stream, "cudaEventRecord", [e, serial] {
    if (serial > e->completed) e->ran = std::chrono::steady_clock::now();
    e->completed = std::max(e->completed, serial);
  });
  return cudaSuccess;
}

// The host time between the two records' running (the emulation's work runs when the host
// waits for it, so this times the emulation, not a GPU).
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  const auto lock = spw_emu::ApiLock();
  const CUevent_st* a = Live(start);
  const CUevent_st* b = Live(end);
  if (a->recorded == 0 || b->recorded == 0) return cudaErrorInvalidResourceHandle;
  if (a->completed < a->recorded || b->completed < b->recorded) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(b->ran - a->ran).count();
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  const auto lock = spw_emu::ApiLock();
  CUevent_st* e = Live(event);
  if (e->completed >= e->recorded) return cudaSuccess;
  // Not done yet. The device moves on while the host polls: the work before the record runs
  // now, so a later query finds it done (and a loop of queries ends).
  spw_emu::DrainUntil(e->stream, e, e->recorded);
  return cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  const auto lock = spw_emu::ApiLock();
  CUevent_st* e = Live(event);
  if (e->completed < e->recorded) spw_emu::DrainUntil(e->stream, e, e->recorded);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int /*flags*/) {
  const auto lock = spw_emu::ApiLock();
  CUevent_st* e = Live(event);
  if (spw_emu::Resolve(stream)->capturing) Fail("EMU limitation: cudaStreamWaitEvent in a capture");
  // The wait names the record made before this call (a later record does not move it).
  const uint64_t serial = e->recorded;
  if (serial == 0 || e->completed >= serial) return cudaSuccess;
  CUstream_st* from = e->stream;
  spw_emu::Enqueue(stream, "cudaStreamWaitEvent",
                   [e, from, serial] { spw_emu::DrainUntil(from, e, serial); });
  return cudaSuccess;
}

// ---- stream capture and graphs ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  const auto lock = spw_emu::ApiLock();
  CUstream_st* s = spw_emu::Resolve(stream);
  // The legacy stream cannot be captured; one capture at a time here (one host thread).
  if (s->legacy || spw_emu::Capturing() != nullptr) return cudaErrorIllegalState;
  s->capturing = true;
  s->capture_invalid = false;
  s->capture_mode = mode;
  s->capture_thread = std::this_thread::get_id();
  s->captured.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  const auto lock = spw_emu::ApiLock();
  CUstream_st* s = spw_emu::Resolve(stream);
  *graph = nullptr;
  if (!s->capturing) return cudaErrorIllegalState;
  s->capturing = false;
  std::vector<EmuOp> ops = std::move(s->captured);
  s->captured.clear();
  if (s->capture_invalid) return cudaErrorStreamCaptureInvalidated;
  *graph = new CUgraph_st{std::move(ops)};
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  const auto lock = spw_emu::ApiLock();
  if (graph == nullptr) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  if (exec == nullptr) return cudaErrorInvalidValue;
  // One operation on the stream: the graph's work in capture order.
  spw_emu::Enqueue(stream, "cudaGraphLaunch", [ops = exec->ops] {
    const std::string outer = R().running;
    for (const auto& [what, op] : ops) {
      R().running = "cudaGraphLaunch: " + what;
      op();
      spw_emu::CheckGuards(what + " (in a graph)");
    }
    R().running = outer;
  });
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  const auto lock = spw_emu::ApiLock();
  delete exec;  // a launched graph holds its own copy of the work
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  const auto lock = spw_emu::ApiLock();
  delete graph;
  return cudaSuccess;
}

cudaError_t spw_emu_FuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  const auto lock = spw_emu::ApiLock();
  // The opt-in limit of the emulated device (compute capability 9.0: 227 KiB).
  constexpr int kOptInMax = 232448;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > kOptInMax) {
    return cudaErrorInvalidValue;
  }
  R().dynamic_shared[func] = static_cast<size_t>(value);
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const auto lock = spw_emu::ApiLock();
  const cudaError_t e = R().last_error;
  R().last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  const auto lock = spw_emu::ApiLock();
  return R().last_error;
}

namespace {

struct ErrorText {
  cudaError_t error;
  const char* name;
  const char* text;  // the real runtime's message
};
constexpr ErrorText kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration",
     "invalid configuration argument"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorLaunchOutOfResources, "cudaErrorLaunchOutOfResources",
     "too many resources requested for launch"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle",
     "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState",
     "the operation cannot be performed in the present state"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureImplicit, "cudaErrorStreamCaptureImplicit",
     "operation would make the legacy stream depend on a capturing blocking stream"},
};

const ErrorText* FindError(cudaError_t error) {
  for (const ErrorText& e : kErrors) {
    if (e.error == error) return &e;
  }
  return nullptr;
}

}  // namespace

const char* cudaGetErrorName(cudaError_t error) {
  const ErrorText* e = FindError(error);
  return e != nullptr ? e->name : "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  const ErrorText* e = FindError(error);
  return e != nullptr ? e->text : "unknown error";
}
