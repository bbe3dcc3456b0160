#include "server/openai/generation.h"

#include <spdlog/spdlog.h>

#include "server/openai/api_error.h"

namespace spillway::server::openai {

// What a TokenChannel notifier holds: a flag that coalesces wake-ups and the strand's post.
// It holds the Generation weakly, so a request that outlives its connection keeps nothing.
struct Generation::Wake {
  std::atomic<bool> pending{false};
  std::weak_ptr<Generation> target;
  std::function<void(std::function<void()>)> post;

  static void Notify(const std::shared_ptr<Wake>& wake) {
    if (wake->pending.exchange(true)) return;
    wake->post([wake] {
      wake->pending.store(false);
      if (std::shared_ptr<Generation> g = wake->target.lock()) g->Pump();
    });
  }
};

Generation::Generation(ResponseContext context, GenerationEngine& engine, http::Exchange exchange,
                       std::atomic<int64_t>* num_active)
    : builder_(context),
      stream_(context.stream),
      engine_(engine),
      exchange_(std::move(exchange)),
      num_active_(num_active) {
  if (num_active_ != nullptr) num_active_->fetch_add(1);
}

Generation::~Generation() {
  if (num_active_ != nullptr) num_active_->fetch_sub(1);
}

void Generation::Start(GenerationSpec spec, ResponseContext context, GenerationEngine& engine,
                       const http::Exchange& exchange, std::atomic<int64_t>* num_active) {
  auto g = std::make_shared<Generation>(std::move(context), engine, exchange, num_active);
  auto wake = std::make_shared<Wake>();
  wake->target = g;
  wake->post = exchange.Poster();
  for (scheduler::Request& r : spec.requests) {
    r.id = engine.NextRequestId();
    r.channel = std::make_shared<scheduler::TokenChannel>([wake] { Wake::Notify(wake); });
    g->ids_.push_back(r.id);
    g->channels_.push_back(r.channel);
  }
  g->closed_.assign(spec.requests.size(), false);
  g->num_open_ = spec.requests.size();
  exchange.Keep(g);
  exchange.OnDisconnect([weak = std::weak_ptr<Generation>(g)] {
    if (std::shared_ptr<Generation> g = weak.lock()) g->CancelRunning();
  });
  for (size_t i = 0; i < spec.requests.size(); ++i) {
    if (absl::Status s = engine.Submit(std::move(spec.requests[i])); !s.ok()) {
      // Nothing of request i exists in the engine; the ones before it are cancelled.
      for (size_t k = 0; k < i; ++k) engine.Cancel(g->ids_[k]);
      g->finished_ = true;
      exchange.Reply(ErrorResponse(ApiErrorFromStatus(s)));
      return;
    }
  }
  if (g->stream_) {
    exchange.StartStream({.status = 200, .content_type = "text/event-stream"});
    exchange.Send(g->builder_.StreamStart());
  }
}

void Generation::Pump() {
  if (finished_) return;
  std::string out;
  for (size_t k = 0; k < channels_.size(); ++k) {
    if (closed_[k]) continue;
    bool closed = false;
    for (const scheduler::TokenEvent& e : channels_[k]->Drain(&closed)) {
      out += builder_.OnEvent(k, e);
    }
    if (closed) {
      closed_[k] = true;
      --num_open_;
    }
  }
  if (stream_ && !out.empty()) exchange_.Send(std::move(out));
  if (num_open_ == 0) Finish();
}

void Generation::Finish() {
  finished_ = true;
  const scheduler::Usage& usage = builder_.usage();
  exchange_.AddLogField("prompt_tokens", usage.prompt_tokens);
  exchange_.AddLogField("completion_tokens", usage.completion_tokens);
  exchange_.AddLogField("cached_tokens", usage.cached_tokens);
  if (stream_) {
    exchange_.Send(builder_.StreamEnd());
    exchange_.EndStream();
  } else if (!builder_.error().ok()) {
    exchange_.Reply(ErrorResponse(ApiErrorFromStatus(builder_.error())));
  } else {
    exchange_.Reply(JsonResponse(builder_.FinalJson()));
  }
}

void Generation::CancelRunning() {
  if (finished_) return;
  for (size_t k = 0; k < ids_.size(); ++k) {
    if (!closed_[k]) {
      spdlog::debug("client went away: cancelling request {}", ids_[k]);
      engine_.Cancel(ids_[k]);
    }
  }
  finished_ = true;
}

}  // namespace spillway::server::openai
