// TokenEvent and TokenChannel: what comes back from the engine loop for one request
// (DESIGN.md "flow of a request", step 4). The loop pushes events into the request's channel;
// the connection that owns the channel drains them when its notifier fires.
//
// Thread safety: TokenChannel is the one object both sides touch. Push and Close are called
// by the engine-loop thread, Drain by the connection's thread; all are safe concurrently.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/sampler/sampler.h"
#include "engine/tokenizer/tokenizer_spec.h"

namespace spillway::scheduler {

enum class FinishReason {
  kNone,       // more events follow for this choice
  kStop,       // EOS/EOT, a stop token or a stop string
  kLength,     // max_tokens, or the model's context
  kCancelled,  // the client went away or its deadline passed
  kError,      // see TokenEvent::error
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;  // all choices together
  int32_t cached_tokens = 0;      // prompt tokens whose KV came from the prefix cache
};

struct TokenEvent {
  int32_t index = 0;                            // the choice, 0 <= index < n
  std::vector<engine::TokenId> token_ids = {};  // tokens new in this event (stop tokens excluded)
  std::string text = {};  // their text: whole UTF-8 characters, stop strings cut
  std::vector<engine::SampleResult> logprobs = {};  // one per token id when logprobs were asked
  FinishReason finish_reason = FinishReason::kNone;
  // The stop string or stop token id that ended the choice, when finish_reason is kStop
  // because of one (vLLM's `stop_reason`).
  std::optional<std::string> stop_string = std::nullopt;
  std::optional<engine::TokenId> stop_token = std::nullopt;
  absl::Status error = {};  // set with kError / kCancelled
  std::optional<Usage> usage =
      std::nullopt;  // on the request's last event (after every choice finished)
};

class TokenChannel {
 public:
  // `notify` is called (on the engine-loop thread, without the channel's lock) after each
  // Push or Close; it must be cheap and thread-safe, e.g. post a wake-up to an io_context.
  explicit TokenChannel(std::function<void()> notify = {});

  void Push(TokenEvent event);
  // Marks the stream complete: the request's last event has been pushed.
  void Close();
  // Takes every pending event. `closed` tells whether the stream is complete (after these).
  std::vector<TokenEvent> Drain(bool* closed);

 private:
  const std::function<void()> notify_;
  absl::Mutex mu_;
  std::deque<TokenEvent> events_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace spillway::scheduler
