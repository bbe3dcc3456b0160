// Request: one generation request as both front ends (HTTP/OpenAI and gRPC) hand it to the
// scheduler (DESIGN.md "Request / TokenEvent"). Built and validated in server/, never deeper:
// by the time a Request exists its prompt fits the context and its parameters are in range.
// Plain data; moved into the engine loop through EngineLoop::Submit.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/sampler/sampling_params.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "kvcache/ids.h"
#include "scheduler/api/token_event.h"

namespace spillway::scheduler {

using engine::TokenId;

// Unique per server process; the front end allocates it (EngineLoop::NextRequestId).
using RequestId = uint64_t;

struct StopRules {
  int32_t max_tokens = 16;  // generated tokens per choice; >= 1
  // Stop at the model's end-of-sequence / end-of-turn tokens unless ignore_eos.
  bool ignore_eos = false;
  std::vector<TokenId> stop_token_ids = {};    // extra stop tokens; they apply even with ignore_eos
  std::vector<std::string> stop_strings = {};  // matched across token boundaries; never emitted
  int32_t min_tokens = 0;                      // no stop (token or string) before this many tokens
};

// The LoRA adapter a request runs with (server/adapters/adapter_registry.h hands these out).
// Default: the base model. `weights` keeps the adapter's backend weights alive until the
// request is gone, so an adapter unloaded meanwhile still serves the requests that hold it.
struct AdapterRef {
  kvcache::AdapterId id = kvcache::kBaseModel;  // prefix-cache key: adapters never share blocks
  std::shared_ptr<const engine::lora::BackendLoraAdapter> weights;  // null for the base model

  bool is_base() const { return weights == nullptr; }
};

struct Request {
  RequestId id = 0;
  std::vector<TokenId> prompt;  // 1 <= size < context
  engine::SamplingParams sampling = {};
  StopRules stop = {};
  // Choices, each a sequence with its own Sampler; with sampling.seed set, choice i uses
  // seed + i. Choice 0 computes the prompt; the others start once it has, reusing its full
  // KV blocks through the prefix cache (the last partial block is recomputed per choice).
  int32_t n = 1;
  // Lower runs earlier; equal priorities run first come, first served (vLLM's convention).
  // When KV blocks run out, the running sequence with the highest (priority, arrival) is
  // preempted first.
  int32_t priority = 0;
  // When set, the request is dropped (FinishReason::kCancelled, DEADLINE_EXCEEDED) within one
  // step of this time if it has not finished by then, waiting or running.
  std::optional<std::chrono::steady_clock::time_point> deadline = {};
  // Every chunk of every choice runs with this adapter (BatchChunk::adapter), and its KV
  // blocks are hashed under adapter.id.
  AdapterRef adapter = {};
  // Where the engine loop sends this request's events. Never null.
  std::shared_ptr<TokenChannel> channel;
};

}  // namespace spillway::scheduler
