// Parsing and validation of POST /v1/completions and /v1/chat/completions bodies into a
// GenerationSpec: one scheduler::Request per prompt (ids and channels still unset) plus what
// the response needs (stream, n, logprobs, echo). This is the one place bad input is answered
// (DESIGN.md step 1): every failure is an absl::Status whose `param` names the field
// (api_error.h) — wrong types, out-of-range values (engine::Validate plus the OpenAI ranges),
// an unknown model (NotFound), a prompt that does not fit the context (both numbers).
// Pure functions over a ServedModel; safe from any thread.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/api/request.h"
#include "server/openai/served_model.h"

namespace spillway::server::openai {

enum class Endpoint { kCompletions, kChatCompletions };

struct GenerationSpec {
  Endpoint endpoint = Endpoint::kCompletions;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  int32_t n = 1;               // choices per prompt; choice index = prompt * n + i
  // Completions: `logprobs` (alternatives per token). Chat: `top_logprobs` when `logprobs` is
  // true. -1: no logprobs in the response.
  int32_t logprobs = -1;
  bool echo = false;                         // completions: prompt text before each choice's text
  std::vector<std::string> echo_texts;       // per prompt, when echo
  std::vector<scheduler::Request> requests;  // one per prompt; id = 0, channel = null
  std::string model_name;  // the base model's or the adapter's name (the response's `model`)
};

// What a request's `model` names: the base model (adapter.is_base()) or a served LoRA adapter.
struct ResolvedModel {
  std::string name;
  scheduler::AdapterRef adapter;
};

// `body` is the raw HTTP body (UTF-8 and JSON are checked here).
absl::StatusOr<GenerationSpec> ParseCompletionRequest(std::string_view body,
                                                      const ServedModel& model);
absl::StatusOr<GenerationSpec> ParseChatRequest(std::string_view body, const ServedModel& model);

// OK if `model` (the request's `model` field, absent = the served model) names the served
// model or one of its adapters (model.adapters); otherwise NotFound naming it (404,
// model_not_found).
absl::Status CheckModelField(const boost::json::object& body, const ServedModel& model);
// The same, returning what it names (the adapter's weights stay alive while it is held).
absl::StatusOr<ResolvedModel> ResolveModelField(const boost::json::object& body,
                                                const ServedModel& model);
absl::StatusOr<ResolvedModel> ResolveModel(std::string_view name, const ServedModel& model);

}  // namespace spillway::server::openai
