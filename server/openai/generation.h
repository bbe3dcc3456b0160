// Generation: one /v1/completions or /v1/chat/completions request in flight. It submits one
// scheduler::Request per prompt, and whenever a TokenChannel notifier fires (on the
// engine-loop thread) it posts a wake-up to the connection's strand, where Pump() drains the
// events and writes SSE chunks (streaming) or, once every channel closed, the JSON body. A
// client that goes away cancels every request still running (EngineLoop::Cancel), so their
// KV blocks are freed within a step.
//
// Thread safety: Start and everything else run on the exchange's strand; only the channel
// notifiers run elsewhere, and they touch nothing but an atomic flag and the strand's post.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "server/http/exchange.h"
#include "server/openai/generation_engine.h"
#include "server/openai/request_parser.h"
#include "server/openai/response_builder.h"

namespace spillway::server::openai {

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // Submits `spec`'s requests and answers through `exchange`: a 429 (Retry-After) or other
  // error when a Submit fails (the requests submitted before it are cancelled), else the
  // response as events arrive. `num_active`, when given, counts generations in flight and must
  // outlive them. REQUIRES: on the exchange's strand; context.tokenizer set.
  static void Start(GenerationSpec spec, ResponseContext context, GenerationEngine& engine,
                    const http::Exchange& exchange, std::atomic<int64_t>* num_active);

  Generation(ResponseContext context, GenerationEngine& engine, http::Exchange exchange,
             std::atomic<int64_t>* num_active);
  ~Generation();

 private:
  struct Wake;

  void Pump();
  void Finish();
  void CancelRunning();

  ResponseBuilder builder_;
  const bool stream_;
  GenerationEngine& engine_;
  http::Exchange exchange_;
  std::atomic<int64_t>* num_active_;
  std::vector<scheduler::RequestId> ids_;
  std::vector<std::shared_ptr<scheduler::TokenChannel>> channels_;
  std::vector<bool> closed_;
  size_t num_open_ = 0;
  bool finished_ = false;
};

}  // namespace spillway::server::openai
