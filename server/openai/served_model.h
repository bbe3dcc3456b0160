// ServedModel and ApiLimits: what the OpenAI front end knows about the one model it serves —
// its public name, tokenizer, chat template and context — and the request limits it applies
// on top of engine::Validate. Built once at start-up by `spillway serve`; read-only afterwards,
// so any network thread may read it without locks. Pointers do not own: the LoadedEngine does.
#pragma once

#include <cstdint>
#include <string>

#include "engine/chat/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/adapters/adapter_registry.h"

namespace spillway::server::openai {

struct ApiLimits {
  int32_t max_n = 16;             // choices per prompt (`n`, `best_of`)
  int32_t max_prompts = 64;       // items in a batched `prompt` list
  int32_t max_logprobs = 20;      // `logprobs` (completions) / `top_logprobs` (chat), as OpenAI
  int32_t max_stop = 16;          // stop strings; OpenAI allows 4, vLLM any number
  int32_t max_logit_bias = 1024;  // entries in `logit_bias`
  int32_t default_completion_max_tokens = 16;  // completions without max_tokens (OpenAI, vLLM)
};

struct ServedModel {
  std::string name;                              // what clients put in `model`
  std::string path;                              // the file it was loaded from (/v1/models `root`)
  const engine::Tokenizer* tokenizer = nullptr;  // never null
  const engine::ChatTemplate* chat_template = nullptr;  // null: chat requests are refused
  std::string bos_token;  // bound to the template's bos_token / eos_token ("" if none)
  std::string eos_token;
  int32_t context_tokens = 0;  // prompt + completion tokens per sequence
  int64_t created_unix = 0;    // server start, for `created` in /v1/models
  // LoRA adapters served beside the model (`model` may name one); null: none. Thread-safe
  // itself, so the pointer being fixed keeps ServedModel read-only.
  adapters::AdapterRegistry* adapters = nullptr;
  ApiLimits limits;
};

}  // namespace spillway::server::openai
