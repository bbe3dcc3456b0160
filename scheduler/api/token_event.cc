#include "scheduler/api/token_event.h"

#include <utility>

namespace spillway::scheduler {

TokenChannel::TokenChannel(std::function<void()> notify) : notify_(std::move(notify)) {}

void TokenChannel::Push(TokenEvent event) {
  {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  if (notify_) notify_();
}

void TokenChannel::Close() {
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  if (notify_) notify_();
}

std::vector<TokenEvent> TokenChannel::Drain(bool* closed) {
  absl::MutexLock lock(&mu_);
  std::vector<TokenEvent> out(std::make_move_iterator(events_.begin()),
                              std::make_move_iterator(events_.end()));
  events_.clear();
  if (closed != nullptr) *closed = closed_;
  return out;
}

}  // namespace spillway::scheduler
