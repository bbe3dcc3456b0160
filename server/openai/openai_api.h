// OpenAiApi: the OpenAI-compatible endpoints on an http::Router —
//   POST /v1/completions, POST /v1/chat/completions (plain and SSE streaming),
//   GET /v1/models, GET /health, POST /tokenize, POST /detokenize —
// and the error pages (404, 405, 413, 400) in the OpenAI error shape. Handlers run on the
// connection's strand; they parse and validate there (cheap), then hand generation to the
// engine and return without waiting (Generation answers later).
// Thread safety: const after Register; the model and engine must outlive the server.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "server/http/router.h"
#include "server/openai/generation_engine.h"
#include "server/openai/request_parser.h"
#include "server/openai/served_model.h"

namespace spillway::server::openai {

class OpenAiApi {
 public:
  OpenAiApi(const ServedModel& model, GenerationEngine& engine);

  // The error pages for http::Router.
  static http::ErrorPages ErrorPages();
  // Adds every endpoint to `router`.
  void Register(http::Router& router);

  // Completion and chat requests whose answer is not complete yet.
  int64_t num_active_generations() const { return num_active_.load(); }

 private:
  void HandleGeneration(Endpoint endpoint, const http::HttpRequest& request,
                        const http::Exchange& exchange);
  std::string NewId(Endpoint endpoint);

  const ServedModel& model_;
  GenerationEngine& engine_;
  std::atomic<int64_t> num_active_{0};
  std::atomic<uint64_t> next_id_{0};
  const uint64_t id_salt_;
};

}  // namespace spillway::server::openai
