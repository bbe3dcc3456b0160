// Generator: runs a fixed set of generation requests to completion in one continuous batch —
// every step carries the next token of each running sequence plus prompt chunks — and
// streams the tokens out. It is what `spillway generate` and `bench-engine` use and what the
// engine tests drive; the serving scheduler (scheduler/) replaces it for the server.
// Single-threaded: call from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/sampler/sampler.h"
#include "kvcache/kv_cache.h"

namespace spillway::engine {

struct GenerateRequest {
  std::vector<TokenId> prompt = {};
  SamplingParams sampling = {};
  int32_t max_tokens = 16;
  bool ignore_eos = false;
  std::vector<TokenId> stop_ids = {};  // end-of-generation ids (the tokenizer's EOS/EOT)
};

enum class FinishReason { kStop, kLength };

struct GenerateResult {
  std::vector<TokenId> tokens;        // generated tokens (the stop token included)
  std::vector<SampleResult> samples;  // one per token (logprobs when requested)
  FinishReason finish_reason = FinishReason::kLength;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;  // steps that carried prompt tokens
  double decode_seconds = 0;   // steps of decode tokens only
};

struct GeneratorOptions {
  int32_t max_batch_tokens = 512;  // tokens per forward pass (prompt chunks are cut to fit)
};

class Generator {
 public:
  // `model` and `kv` must outlive the generator; `kv` holds the model's KV block ids.
  Generator(Model& model, kvcache::KvCache& kv, GeneratorOptions options = {});

  // Called with (request index, sampled token) as each token is chosen.
  using TokenCallback = std::function<void(size_t, TokenId)>;

  // Runs `requests` together until each stops (stop id, unless ignore_eos) or reaches
  // max_tokens or the model's context. Fails with ResourceExhausted if the KV cache cannot
  // hold the requests at once, InvalidArgument for a prompt that is empty or over the
  // context, or the model's error.
  absl::StatusOr<std::vector<GenerateResult>> Run(std::span<const GenerateRequest> requests,
                                                  const TokenCallback& on_token = {});

  const GenerateStats& stats() const { return stats_; }

 private:
  Model& model_;
  kvcache::KvCache& kv_;
  GeneratorOptions options_;
  GenerateStats stats_;
};

}  // namespace spillway::engine
