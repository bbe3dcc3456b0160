#include "engine/cpu/thread_pool.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <string>
#include <vector>

namespace spillway::engine::cpu {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    ASSERT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 64, 100, 1000, 4097}) {
      for (int64_t grain : {0, 1, 3, 16, 1000, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<bool> bad_thread{false};
        pool.ParallelFor(n, grain, [&](int thread, int64_t begin, int64_t end) {
          if (thread < 0 || thread >= threads || begin >= end || begin < 0 || end > n) {
            bad_thread = true;
          }
          for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        EXPECT_FALSE(bad_thread) << threads << " " << n << " " << grain;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1)
              << "threads " << threads << " n " << n << " grain " << grain << " index " << i;
        }
      }
    }
  }
}

TEST(ThreadPool, SingleThreadRunsOnCaller) {
  ThreadPool pool(1);
  const pthread_t caller = pthread_self();
  int calls = 0;
  pool.ParallelFor(100, 1, [&](int thread, int64_t begin, int64_t end) {
    EXPECT_EQ(thread, 0);
    EXPECT_TRUE(pthread_equal(pthread_self(), caller));
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 100);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPool, DefaultUsesAvailableCores) {
  ThreadPool pool;
  EXPECT_GE(pool.num_threads(), 1);
}

TEST(ThreadPool, ManySmallLoopsAndSleepingWorkers) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  for (int i = 0; i < 20000; ++i) {
    pool.ParallelFor(8, 1, [&](int, int64_t begin, int64_t end) { total += end - begin; });
  }
  EXPECT_EQ(total.load(), 20000 * 8);
  // Let the worker fall asleep on the futex, then check it wakes up.
  usleep(5000);
  pool.ParallelFor(1000, 1, [&](int, int64_t begin, int64_t end) { total += end - begin; });
  EXPECT_EQ(total.load(), 20000 * 8 + 1000);
}

TEST(ThreadPool, WorkersAreNamed) {
  ThreadPool pool(2);
  std::vector<std::string> names(2);
  std::atomic<bool> seen_worker{false};
  for (int attempt = 0; attempt < 1000 && !seen_worker; ++attempt) {
    pool.ParallelFor(64, 1, [&](int thread, int64_t, int64_t) {
      if (thread == 1) {
        char name[16] = {};
        pthread_getname_np(pthread_self(), name, sizeof(name));
        names[1] = name;
        seen_worker = true;
      }
      usleep(10);
    });
  }
  ASSERT_TRUE(seen_worker);
  EXPECT_EQ(names[1], "spw-cpu-1");
}

}  // namespace
}  // namespace spillway::engine::cpu
