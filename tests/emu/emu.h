// The CPU emulation of CUDA (the `emu` test tier, docs/testing.md; docs/gpu.md "CUDA emulation
// on the CPU"). It runs the GPU training path and the inference backend without a GPU:
// kernels/{train_ops,elementwise,paged_attention,sampling,lora,gemv}.cu (turned into C++ by
// tests/emu/cu_to_cc.py), CudaTrainModel, CudaBackend, the KV copy engine and the uploads
// (engine/cuda/), with the real tests/gpu/ files and the whole server (spillway_emu, driven by
// tests/emu/test_emu_server.py), against stand-ins for the CUDA runtime, cuBLAS and the two CUB
// collectives sampling.cu uses (tests/emu/include/, on the include path of the emulated targets
// only).
//
// What it is:
// - Thread blocks: a launch runs its blocks one after another on the calling thread; a block's
//   threads are fibers (a stack each, switched by spw_emu_swap in runtime.cc) that run until
//   they reach __syncthreads or a warp shuffle, which are barriers; __shared__ variables are
//   function statics (one block at a time uses them). Grids of up to 3-D (x fastest), 1-D
//   blocks of a multiple of 32 threads (anything else stops with "EMU limitation"); dynamic
//   shared memory (`extern __shared__`) is NaN-filled per block with guard words after it (a
//   write past the launch's bytes stops the program), and more than 48 KiB needs
//   cudaFuncSetAttribute, as on the device. Atomics are plain read-modify-writes. In an
//   AddressSanitizer build the switches are announced to ASan, so the tier runs under it.
// - Streams: the work of a stream is queued and runs only when the host must see it
//   (cudaStreamSynchronize of that stream, cudaDeviceSynchronize, cudaFree, a copy to pageable
//   host memory), the legacy default stream ordered with blocking streams as CUDA orders it,
//   non-blocking streams with nothing. Host sources are staged when a copy is enqueued, as
//   for pageable memory. So a missing synchronisation or a GEMM on the wrong stream reads
//   stale data, and the tests see it.
// - Events, graphs, pinned memory: an event completes when the stream work queued before its
//   record has run (cudaEventQuery of a pending one says cudaErrorNotReady and lets that work
//   run, as the device moves on while the host polls); cudaStreamWaitEvent orders a stream
//   after the record made before the call. A capture (cudaStreamBeginCapture) records the
//   stream's work instead of queueing it; cudaGraphLaunch queues it again, reading buffers as
//   they are then. While a capture is under way the calls CUDA refuses are refused, with
//   cudaErrorStreamCaptureUnsupported, and the capture invalidated (cudaStreamEndCapture:
//   cudaErrorStreamCaptureInvalidated): cudaMalloc, cudaFree, cudaHostAlloc, cudaMemcpy,
//   cudaDeviceSynchronize and a synchronisation of the legacy stream (not in relaxed mode),
//   a synchronisation of the capturing stream or a copy from or into pageable memory on it
//   (in any mode); legacy-stream work while a blocking stream is captured is
//   cudaErrorStreamCaptureImplicit. cudaHostAlloc memory is pinned: copies read and write it
//   when they run (a pageable source is staged when the copy is queued), and a copy into it
//   does not make the host wait.
// - Memory: cudaMalloc gives 256-byte aligned host memory filled with 0xff bytes (f32 NaN), so
//   a read of something never written shows as NaN, between guard zones checked after every
//   operation (a write outside stops the program naming the operation; a read outside gives
//   NaN). Every pointer argument of a kernel, copy, memset or GEMM must lie in a live
//   allocation (with its extent, where the call gives one); a host pointer where device memory
//   belongs stops it. __shared__ variables are refilled with NaN when each block first reaches
//   them.
// - Launches: grid and block limits and each kernel's __launch_bounds__ are checked as the
//   driver checks them (cudaErrorInvalidConfiguration, cudaErrorLaunchOutOfResources via
//   cudaGetLastError); a warp whose live lanes split between a shuffle and anything else, or
//   a shuffle reading an exited lane, stops the program.
// - cuBLAS (cublas.cc): a reference GEMM with the column-major contract, double accumulation
//   (checked against a naive row-major reference in tests/emu/cublas_emu_test.cc).
// Schedules (SPW_EMU_ORDER): forward (default) runs a block's threads in order, every thread
// once per round, so warps move in lockstep from shuffle to shuffle; reverse runs the warps
// from the last, each through its shuffles as far as it gets before the next starts, lanes in
// reverse (the most skew between warps); shuffle is forward in a random order. A missing
// __syncthreads shows in one schedule or another. tests/emu/emu_runtime_test.cu shows each
// check firing.
//
// What it cannot catch: real concurrency (threads never run at the same time, so races that
// need true interleaving inside a barrier interval, and atomics' contention, are invisible;
// __syncthreads at different call sites counts as one barrier), the GPU memory model (no
// caches, no reordering; host and device share one address space, so a host pointer a
// kernel reads without it being a launch argument goes unseen), shared memory's real size
// (48 KiB static per block is not checked), misaligned vector loads (a uint4 read of a
// pointer that is not 16-byte aligned faults on the device, not here), the hardware's
// numerics (expf, sincos, rsqrtf are glibc's; no FMA contraction where nvcc would make one;
// cuBLAS's and CUB's own summation orders), speed, memory capacity, events recorded inside a
// capture (an EMU limitation stop), and the rest of the real driver.
// It never replaces tests/gpu/ on a GPU (tests/gpu/run.sh): it checks the host code's logic
// (shapes, strides, leading dimensions, pointers, stream order) and the kernels' indexing and
// barriers, on the CPU in CI.
#pragma once

#include <cuda_runtime_api.h>
#include <math.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace spw_emu {

// ---- host side (runtime.cc) ----

// The emulated device is one: every runtime and cuBLAS call, and a launch, holds this lock
// while it runs (the queued work it drains included), so host threads that use CUDA at the
// same time (a server's engine loop and its fine-tune preparer) take turns, as the real
// driver's calls are thread-safe. Recursive: a call may make another.
std::unique_lock<std::recursive_mutex> ApiLock();

// Stops the program with "EMU: " + message (a bug the emulation found, or an EMU limitation).
[[noreturn]] void Fail(const std::string& message);
// Whether [p, p + bytes) lies inside one live device allocation.
bool IsDeviceRange(const void* p, size_t bytes);
// Fails unless [p, p + bytes) lies inside one live device allocation.
void RequireDeviceRange(const void* p, size_t bytes, const std::string& what);
// Records a launch error for cudaGetLastError.
void SetLastError(cudaError_t e);
// Queues `op` on `stream` (its ordering rules in the header comment); `what` names it in
// reports.
void Enqueue(cudaStream_t stream, std::string what, std::function<void()> op);
// Runs `body` as every thread of every block of the grid (blocks in order, x fastest), each
// block with `shared_bytes` of dynamic shared memory (NaN-filled per block).
void RunGrid(dim3 grid, dim3 block, size_t shared_bytes, const std::string& name,
             const std::function<void()>& body);
// The dynamic shared memory limit set for `kernel` (cudaFuncSetAttribute; 48 KiB without).
size_t MaxDynamicShared(const void* kernel);
// Stops the program unless the block has `threads` threads (CUB's BLOCK_DIM_X contract).
void RequireBlockSize(int threads, const char* what);

// ---- device side: the current block and thread ----

enum class State { kRun, kBlockBar, kWarpBar, kDone };
struct Fiber {
  void* sp = nullptr;
  unsigned tid = 0;
  State state = State::kRun;
  void* asan_fake = nullptr;  // AddressSanitizer's fake stack of this thread (ASan builds)
};
struct Block {
  std::vector<Fiber> fibers;
  std::vector<uint64_t> shuffle;         // each lane's value at the current shuffle
  std::vector<uint64_t> dynamic_shared;  // `extern __shared__` (8-byte aligned words)
  size_t dynamic_shared_bytes = 0;
  Fiber* cur = nullptr;
  dim3 block_idx, block_dim, grid_dim;
  std::string kernel;
};
inline Block g_block;

// Parks the current thread with `s` and returns when the scheduler resumes it.
void Yield(State s);

// Called where each __shared__ variable is declared (cu_to_cc.py adds the call): the first
// thread of a block to get there fills it with 0xff bytes (f32 NaN), as shared memory holds
// garbage when a block starts, so a read of a slot this block never wrote shows.
void FreshShared(void* p, size_t bytes);

inline dim3 ThreadIdx() { return dim3(g_block.cur->tid); }

// `extern __shared__ T name[];` (cu_to_cc.py): the block's dynamic shared memory.
template <typename T>
T* DynamicShared() {
  return reinterpret_cast<T*>(g_block.dynamic_shared.data());
}

template <typename T>
T ShuffleXor(T v, int mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  const unsigned tid = g_block.cur->tid;
  std::memcpy(&g_block.shuffle[tid], &v, sizeof(T));
  Yield(State::kWarpBar);  // every lane has written
  const unsigned src = tid ^ static_cast<unsigned>(mask);
  if (src >= g_block.fibers.size() || g_block.fibers[src].state == State::kDone) {
    Fail("kernel " + g_block.kernel + ": a shuffle reads lane " + std::to_string(src) +
         ", which has exited or does not exist");
  }
  T out;
  std::memcpy(&out, &g_block.shuffle[src], sizeof(T));
  Yield(State::kWarpBar);  // every lane has read
  return out;
}

// ---- launches: `k<<<grid, block, shmem, stream>>>(args)` becomes
// spw_emu::Launcher(grid, block, shmem, stream).Kernel("k", bound).Bind(k)(args) ----

class Launcher {
 public:
  Launcher(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}
  // `max_threads`: the kernel's __launch_bounds__ (1024 without).
  Launcher& Kernel(const char* name, unsigned max_threads) {
    name_ = name;
    max_threads_ = max_threads;
    return *this;
  }
  template <typename K>
  auto Bind(K kernel) const {
    return [l = *this, kernel](auto... args) {
      const auto lock = ApiLock();
      if (!l.Valid(reinterpret_cast<const void*>(kernel))) return;
      int index = 0;
      (l.CheckArg(args, index++), ...);
      Enqueue(l.stream_, "kernel " + l.name_, [l, kernel, args...] {
        RunGrid(l.grid_, l.block_, l.shared_bytes_, l.name_, [&] { kernel(args...); });
      });
    };
  }

 private:
  // The driver's launch checks (an error for cudaGetLastError, nothing runs) and the
  // emulation's limits (a stop).
  bool Valid(const void* kernel) const;
  template <typename A>
  void CheckArg(const A& a, int index) const {
    if constexpr (std::is_pointer_v<A>) {
      if (a != nullptr && !IsDeviceRange(a, 1)) {
        Fail("kernel " + name_ + ": argument " + std::to_string(index) +
             " is a pointer outside device memory");
      }
    }
  }

  dim3 grid_, block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
  std::string name_ = "?";
  unsigned max_threads_ = 1024;
};

}  // namespace spw_emu

#define threadIdx (::spw_emu::ThreadIdx())
#define blockIdx (::spw_emu::g_block.block_idx)
#define blockDim (::spw_emu::g_block.block_dim)
#define gridDim (::spw_emu::g_block.grid_dim)

inline void __syncthreads() { spw_emu::Yield(spw_emu::State::kBlockBar); }
inline void __syncwarp(unsigned = 0xffffffffu) { spw_emu::Yield(spw_emu::State::kWarpBar); }
template <typename T>
T __shfl_xor_sync(unsigned /*mask: all lanes, as the kernels use it*/, T v, int lane_mask) {
  return spw_emu::ShuffleXor(v, lane_mask);
}
// Round-to-nearest products and sums that the compiler may not fuse: volatile stores force
// one rounding each (the host build does not contract across them either).
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// Device min/max of integers (CUDA's overloads; the float ones are fminf/fmaxf).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
// One thread runs at a time, so an atomic is a plain read-modify-write (its contention is
// what the emulation cannot show).
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
