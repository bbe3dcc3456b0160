#include "kvcache/copy_queue.h"

#include <utility>

#include "common/check.h"

namespace spillway::kvcache {

CopyQueue::CopyQueue() : thread_([this] { Run(); }) {}

CopyQueue::~CopyQueue() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

CopyTicket CopyQueue::Submit(std::function<absl::Status()> job) {
  CopyTicket ticket;
  {
    std::lock_guard lock(mu_);
    ticket = next_ticket_++;
    queue_.push_back(
        {.ticket = ticket, .run = std::move(job), .submitted = std::chrono::steady_clock::now()});
  }
  work_cv_.notify_one();
  return ticket;
}

void CopyQueue::Poll(std::vector<CopyDone>& done) {
  std::lock_guard lock(mu_);
  for (auto& [ticket, d] : done_) done.push_back(std::move(d));
  done_.clear();
}

CopyDone CopyQueue::Wait(CopyTicket ticket) {
  std::unique_lock lock(mu_);
  SPW_CHECK(ticket > 0 && ticket < next_ticket_) << "Wait of unknown copy " << ticket;
  done_cv_.wait(lock, [&] { return last_finished_ >= ticket; });
  auto it = done_.find(ticket);
  SPW_CHECK(it != done_.end()) << "copy " << ticket << " was already reported";
  CopyDone d = std::move(it->second);
  done_.erase(it);
  return d;
}

void CopyQueue::WaitThrough(CopyTicket ticket) {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return last_finished_ >= ticket; });
}

void CopyQueue::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, and every queued job ran
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    absl::Status status = job.run();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - job.submitted).count();
    lock.lock();
    done_.emplace(job.ticket,
                  CopyDone{.ticket = job.ticket, .status = std::move(status), .seconds = seconds});
    last_finished_ = job.ticket;
    done_cv_.notify_all();
  }
}

}  // namespace spillway::kvcache
