// ThreadPool: a fixed set of worker threads for data-parallel loops inside the CPU backend
// (DESIGN.md: compute parallelism lives inside the backend). The calling thread takes part in
// every loop. ParallelFor may be called from one thread at a time (the engine loop); workers
// spin briefly between loops so that the hundreds of small loops of one decode step do not
// each pay for a wake-up.
#pragma once

#include <cstdint>
#include <functional>

namespace spillway::engine::cpu {

class ThreadPool {
 public:
  // `num_threads` counts the caller; 0 means the number of cores the process may use.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;

  // Calls fn(thread_index, begin, end) over disjoint ranges covering [0, n), with
  // 0 <= thread_index < num_threads(), and returns when all calls have returned.
  // `grain` is the smallest range worth handing out.
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int thread_index, int64_t begin, int64_t end)>& fn);

 private:
  struct State;
  State* state_;
};

}  // namespace spillway::engine::cpu
