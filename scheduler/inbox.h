// Inbox: the one way into the engine loop (STYLE.md §7). Any thread posts new requests,
// cancellations and the stop signal; the loop takes everything pending at the start of each
// step under the lock and applies it outside (mlc-llm's ThreadedEngine). When the loop has
// nothing to do it blocks in Take until something is posted — no busy waiting.
//
// Thread safety: every method is safe from any thread; Take is called by the loop only.
#pragma once

#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/api/request.h"

namespace spillway::scheduler {

class Inbox {
 public:
  struct Messages {
    std::vector<Request> requests;  // in posting order; apply before `cancels`
    std::vector<RequestId> cancels;
    // Work for the loop's thread (EngineLoop::Post), run before `requests`.
    std::vector<absl::AnyInvocable<void() &&>> tasks;
    bool stop = false;
  };

  // Returns false (and drops `request`) once Stop has been posted.
  bool PostRequest(Request request) {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    requests_.push_back(std::move(request));
    cv_.Signal();
    return true;
  }
  void PostCancel(RequestId id) {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(id);
    cv_.Signal();
  }
  // Wakes a Take(wait) without a message (e.g. idle work was queued; see IdleWork).
  void PostWake() {
    absl::MutexLock lock(&mu_);
    wake_ = true;
    cv_.Signal();
  }
  // Returns false (and leaves `task` untouched, for the caller to run) once Stop was posted.
  bool PostTask(absl::AnyInvocable<void() &&>& task) {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    tasks_.push_back(std::move(task));
    cv_.Signal();
    return true;
  }
  void PostStop() {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.Signal();
  }

  // Take returns everything posted since the last call; with `wait`, first blocks until there
  // is something (or the stop signal).
  Messages Take(bool wait) {
    absl::MutexLock lock(&mu_);
    while (wait && requests_.empty() && cancels_.empty() && tasks_.empty() && !stop_ && !wake_) {
      cv_.Wait(&mu_);
    }
    wake_ = false;
    Messages m{.requests = std::move(requests_),
               .cancels = std::move(cancels_),
               .tasks = std::move(tasks_),
               .stop = stop_};
    requests_.clear();
    cancels_.clear();
    tasks_.clear();
    return m;
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<RequestId> cancels_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace spillway::scheduler
