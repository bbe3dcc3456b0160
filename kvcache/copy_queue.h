// CopyQueue: one thread that runs block copies in the order they were submitted, and the
// bookkeeping of their tickets — what a backend without a hardware copy engine (the CPU
// backend) uses to make BlockIo's copies asynchronous (kvcache/block_io.h): the engine thread
// only enqueues, and learns of completions by polling.
//
// Submit / Poll / Wait / WaitThrough may be called from any one thread (the engine loop); the
// jobs run on the queue's own thread. The destructor runs the jobs already queued, then joins.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "kvcache/block_io.h"

namespace spillway::kvcache {

class CopyQueue {
 public:
  CopyQueue();
  ~CopyQueue();
  CopyQueue(const CopyQueue&) = delete;
  CopyQueue& operator=(const CopyQueue&) = delete;

  // Queues `job` (a copy) and returns its ticket; tickets increase with submission order.
  CopyTicket Submit(std::function<absl::Status()> job);
  // Appends the jobs that finished and were not yet reported (in ticket order) to `done`.
  void Poll(std::vector<CopyDone>& done);
  // Blocks until job `ticket` finished and returns its result (Poll will not report it).
  // REQUIRES: `ticket` was submitted and not yet reported.
  CopyDone Wait(CopyTicket ticket);
  // Blocks until every job up to and including `ticket` ran (their results stay to be
  // reported). 0 returns at once.
  void WaitThrough(CopyTicket ticket);

 private:
  struct Job {
    CopyTicket ticket = 0;
    std::function<absl::Status()> run;
    std::chrono::steady_clock::time_point submitted;
  };
  void Run();

  std::mutex mu_;
  std::condition_variable work_cv_;  // a job was queued, or stop
  std::condition_variable done_cv_;  // a job finished
  std::deque<Job> queue_;
  std::map<CopyTicket, CopyDone> done_;  // finished, not yet reported
  CopyTicket next_ticket_ = 1;
  CopyTicket last_finished_ = 0;  // jobs run in ticket order
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace spillway::kvcache
