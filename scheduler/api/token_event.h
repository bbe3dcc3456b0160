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
  kCancelled,  // error: CANCELLED (EngineLoop::Cancel), DEADLINE_EXCEEDED, UNAVAILABLE (Stop)
  kError,      // error: the model's failure, or RESOURCE_EXHAUSTED when the sequence can never
               // fit in the whole KV cache
};

struct Usage {
  int32_t prompt_tokens = 0;
  // All choices together, every sampled token: an EOS/stop token that ended a choice counts
  // (as in vLLM) although no event carries it.
  int32_t completion_tokens = 0;
  // Prompt tokens whose KV came from the prefix cache when choice 0 was first admitted (a
  // multiple of 16, always < prompt_tokens).
  int32_t cached_tokens = 0;
};

// Each step, every running choice that sampled gets one event (one token), even when its text
// is empty (held back: an incomplete UTF-8 character or a possible stop-string start). Every
// choice gets exactly one event with finish_reason != kNone; the request's very last event
// (the last choice to finish) also carries `usage`; then the channel is closed.
struct TokenEvent {
  int32_t index = 0;  // the choice, 0 <= index < n
  // Tokens new in this event: 0 or 1. EOS/EOT (unless ignore_eos) and stop_token_ids end the
  // choice without appearing here; a token that completes a stop string does appear.
  std::vector<engine::TokenId> token_ids = {};
  // Text made final by this event: whole UTF-8 characters, special tokens skipped, stop
  // strings and everything after them cut. The texts of a choice concatenate to its output.
  std::string text = {};
  std::vector<engine::SampleResult> logprobs = {};  // one per token id when logprobs >= 0
  FinishReason finish_reason = FinishReason::kNone;
  // The stop string or stop token id that ended the choice, when finish_reason is kStop
  // because of one (vLLM's `stop_reason`); both unset for EOS/EOT.
  std::optional<std::string> stop_string = std::nullopt;
  std::optional<engine::TokenId> stop_token = std::nullopt;
  absl::Status error = {};                    // set with kError / kCancelled
  std::optional<Usage> usage = std::nullopt;  // on the request's last event
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
