// The small endpoints: GET /v1/models (OpenAI's list shape), GET /health (status plus the
// engine's stats — running sequences, waiting requests, KV blocks in use — so tests and
// operators can watch occupancy), POST /tokenize and POST /detokenize (vLLM's shapes).
// Pure functions over a ServedModel; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "scheduler/engine_loop.h"
#include "server/openai/served_model.h"

namespace spillway::server::openai {

std::string ModelsJson(const ServedModel& model);
std::string HealthJson(const ServedModel& model, const scheduler::EngineStats& stats,
                       int64_t num_active_generations);

// vLLM's /tokenize: {"prompt": str, "add_special_tokens": bool = true} or {"messages": [...],
// "add_generation_prompt": bool = true, "add_special_tokens": bool = false}, optional "model"
// and "return_token_strs" -> {"count", "max_model_len", "tokens", "token_strs"}.
absl::StatusOr<std::string> Tokenize(std::string_view body, const ServedModel& model);
// vLLM's /detokenize: {"tokens": [int]} -> {"prompt": str}.
absl::StatusOr<std::string> Detokenize(std::string_view body, const ServedModel& model);

}  // namespace spillway::server::openai
