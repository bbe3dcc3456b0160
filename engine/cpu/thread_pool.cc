#include "engine/cpu/thread_pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common/check.h"

namespace spillway::engine::cpu {
namespace {

// NOTE(kernels): how long an idle worker spins before it sleeps on the futex. One decode step
// runs a few hundred loops with a few microseconds of single-threaded work between them; 50 µs
// of spinning covers those gaps, while a pool that is idle between steps sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);
// Pause instructions the caller spins, waiting for workers to leave a loop, before it yields
// (a few tens of microseconds).
constexpr int kCloseSpins = 4096;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
}

int DefaultThreadCount() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// The ticket word: generation in the high 32 bits, kClosed, and the number of workers that
// joined the current loop in the low 31 bits.
constexpr uint64_t kClosed = uint64_t{1} << 31;
constexpr uint64_t kActiveMask = kClosed - 1;
constexpr uint32_t Generation(uint64_t ticket) { return static_cast<uint32_t>(ticket >> 32); }

}  // namespace

// NOTE(kernels): protocol of one ParallelFor (generation g):
//   caller: writes the job, publishes ticket = (g, open, 0 active), bumps `wake` and wakes
//           sleepers; takes chunks; then waits until no worker is active and closes the ticket
//           with a CAS from (g, open, 0) to (g, closed, 0).
//   worker: joins with a CAS (g, open, k) -> (g, open, k + 1), takes chunks, leaves with
//           fetch_sub. A worker that is late (ticket closed or newer) does not touch the job.
// So the caller never waits for a worker that has not started, and the job fields are never
// rewritten while a worker may read them.
struct ThreadPool::State {
  int num_threads = 1;
  std::vector<std::thread> workers;

  alignas(64) std::atomic<uint64_t> ticket{kClosed};
  alignas(64) std::atomic<int64_t> next{0};
  alignas(64) std::atomic<uint32_t> wake{0};  // futex word: low bits of the generation
  std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};

  // The job; written by the caller only while no worker can join.
  const std::function<void(int, int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 1;

  void RunChunks(int thread_index) {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      (*fn)(thread_index, begin, std::min(n, begin + chunk));
    }
  }

  // Waits until the ticket shows a generation other than `seen` (or stop). Returns it.
  uint64_t WaitForNewGeneration(uint32_t seen) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    int spins = 0;
    for (;;) {
      const uint64_t t = ticket.load(std::memory_order_acquire);
      if (Generation(t) != seen || stop.load(std::memory_order_relaxed)) return t;
      if (++spins < 64) {
        CpuRelax();
        continue;
      }
      spins = 0;
      if (std::chrono::steady_clock::now() < spin_until) continue;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      if (wake.load(std::memory_order_seq_cst) == seen && !stop.load(std::memory_order_seq_cst)) {
        FutexWait(&wake, seen);
      }
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  void WorkerLoop(int thread_index) {
    char name[16];
    std::snprintf(name, sizeof(name), "spw-cpu-%d", thread_index);
    pthread_setname_np(pthread_self(), name);
    uint32_t seen = 0;
    for (;;) {
      uint64_t t = WaitForNewGeneration(seen);
      if (stop.load(std::memory_order_acquire)) return;
      seen = Generation(t);
      // Join the loop unless it is already closed.
      bool joined = false;
      while (!(t & kClosed) && Generation(t) == seen) {
        if (ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) {
          joined = true;
          break;
        }
      }
      if (!joined) continue;
      RunChunks(thread_index);
      ticket.fetch_sub(1, std::memory_order_release);
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : state_(new State) {
  SPW_CHECK(num_threads >= 0) << "num_threads " << num_threads;
  state_->num_threads = num_threads == 0 ? DefaultThreadCount() : num_threads;
  state_->workers.reserve(state_->num_threads - 1);
  for (int i = 1; i < state_->num_threads; ++i) {
    state_->workers.emplace_back([s = state_, i] { s->WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  state_->stop.store(true, std::memory_order_seq_cst);
  state_->wake.fetch_add(1, std::memory_order_seq_cst);
  FutexWakeAll(&state_->wake);
  for (std::thread& t : state_->workers) t.join();
  delete state_;
}

int ThreadPool::num_threads() const { return state_->num_threads; }

void ThreadPool::ParallelFor(
    int64_t n, int64_t grain,
    const std::function<void(int thread_index, int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  State& s = *state_;
  const int64_t threads = s.num_threads;
  if (threads == 1 || n <= grain) {
    fn(0, 0, n);
    return;
  }
  // NOTE(kernels): chunks are handed out dynamically (an atomic counter), about four per
  // thread, so a thread that the OS delays does not hold the others up.
  const int64_t target_chunks = threads * 4;
  s.fn = &fn;
  s.n = n;
  s.chunk = std::max(grain, (n + target_chunks - 1) / target_chunks);
  s.next.store(0, std::memory_order_relaxed);
  const uint32_t generation = Generation(s.ticket.load(std::memory_order_relaxed)) + 1;
  s.ticket.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
  s.wake.store(generation, std::memory_order_seq_cst);
  if (s.sleepers.load(std::memory_order_seq_cst) > 0) FutexWakeAll(&s.wake);

  s.RunChunks(0);

  // Close the loop once no worker is inside it.
  // NOTE(kernels): a worker still inside the loop may have been preempted by another process
  // on a busy machine; after a short spin the caller yields, so that such a worker can finish
  // if it waits for this core, instead of the caller burning the core until the next tick.
  uint64_t t = s.ticket.load(std::memory_order_acquire);
  int spins = 0;
  for (;;) {
    if ((t & kActiveMask) == 0) {
      if (s.ticket.compare_exchange_weak(t, t | kClosed, std::memory_order_acq_rel)) break;
      continue;
    }
    if (++spins < kCloseSpins) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
    t = s.ticket.load(std::memory_order_acquire);
  }
}

}  // namespace spillway::engine::cpu
