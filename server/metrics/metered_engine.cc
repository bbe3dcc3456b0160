#include "server/metrics/metered_engine.h"

#include <chrono>
#include <memory>
#include <utility>
#include <vector>

namespace spillway::server::metrics {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The channel the engine loop pushes into; its notifier forwards every event to the front
// end's channel after observing it. Only the engine loop's thread runs Forward (notifiers run
// there), so the fields need no lock.
struct Tap {
  std::shared_ptr<scheduler::TokenChannel> downstream;
  scheduler::TokenChannel* upstream = nullptr;  // owns this Tap through its notifier
  ServerMetrics* metrics = nullptr;
  std::string_view api;
  Clock::time_point arrival;
  int64_t prompt_tokens = 0;
  bool first_token_seen = false;
  bool done = false;
  bool error_counted = false;
  RequestRecord record;
  std::vector<Clock::time_point> last_token;  // per choice; epoch = none yet
  int64_t generated = 0;

  void Forward() {
    bool closed = false;
    std::vector<scheduler::TokenEvent> events = upstream->Drain(&closed);
    const Clock::time_point now = Clock::now();
    for (scheduler::TokenEvent& e : events) Observe(e, now);
    for (scheduler::TokenEvent& e : events) downstream->Push(std::move(e));
    if (closed && !done) {
      done = true;
      record.api = api;
      record.e2e_s = Seconds(now - arrival);
      if (record.prompt_tokens == 0) record.prompt_tokens = prompt_tokens;
      if (record.generation_tokens == 0) record.generation_tokens = generated;
      metrics->ObserveRequest(record);
      downstream->Close();
    }
  }

  void Observe(const scheduler::TokenEvent& e, Clock::time_point now) {
    // A sampled token: one in token_ids, or an EOS / stop token that ended the choice.
    const bool sampled =
        !e.token_ids.empty() || (e.error.ok() && e.finish_reason != scheduler::FinishReason::kNone);
    if (sampled && !first_token_seen) {
      first_token_seen = true;
      record.ttft_s = Seconds(now - arrival);
      const Clock::time_point step = metrics->last_step_start();
      record.queue_s = step > arrival ? Seconds(step - arrival) : 0.0;
    }
    if (!e.token_ids.empty()) {
      generated += static_cast<int64_t>(e.token_ids.size());
      if (e.index >= static_cast<int32_t>(last_token.size())) last_token.resize(e.index + 1);
      Clock::time_point& last = last_token[e.index];
      if (last != Clock::time_point()) metrics->ObserveInterTokenLatency(api, Seconds(now - last));
      last = now;
    }
    if (e.finish_reason != scheduler::FinishReason::kNone) {
      record.finish_reason = e.finish_reason;
      if (!e.error.ok() && !error_counted) {  // once per request, not per choice
        error_counted = true;
        metrics->CountError(api, e.error);
      }
    }
    if (e.usage) {
      record.prompt_tokens = e.usage->prompt_tokens;
      record.generation_tokens = e.usage->completion_tokens;
    }
  }
};

}  // namespace

MeteredEngine::MeteredEngine(openai::GenerationEngine& inner, ServerMetrics& metrics,
                             std::string api)
    : inner_(inner), metrics_(metrics), api_(std::move(api)) {}

absl::Status MeteredEngine::Submit(scheduler::Request request) {
  auto tap = std::make_shared<Tap>();
  tap->downstream = std::move(request.channel);
  tap->metrics = &metrics_;
  tap->api = api_;
  tap->arrival = Clock::now();
  tap->prompt_tokens = static_cast<int64_t>(request.prompt.size());
  // NOTE(metrics): the notifier holds the Tap and the Tap points back at the channel (not a
  // cycle: the channel owns its notifier). The engine loop owns the channel from here on.
  auto upstream = std::make_shared<scheduler::TokenChannel>([tap] { tap->Forward(); });
  tap->upstream = upstream.get();
  const bool had_channel = tap->downstream != nullptr;
  request.channel = had_channel ? std::move(upstream) : nullptr;
  absl::Status st = inner_.Submit(std::move(request));
  if (!st.ok()) metrics_.CountError(api_, st);
  return st;
}

}  // namespace spillway::server::metrics
