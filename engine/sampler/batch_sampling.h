// BatchSampling: the sampling of many sequences described as plain data, for a backend that
// samples where the logits are (the CUDA backend, kernels/sampling.h; docs/gpu.md "Sampling on
// the device"). Each Sampler (sampler.h) describes its sequence's next draw as one SampleRow —
// its parameters, the uniform number its generator gives for the draw, and the few tokens whose
// logits its logit_bias, penalties and stop-token mask change (TokenEdit) — so that the device
// applies the same per-token float operations as Sampler::Sample and returns only token ids and
// logprobs. Plain value types, no thread affinity.
#pragma once

#include <cstdint>
#include <vector>

namespace spillway::engine {

// NOTE(sampler): this header is plain C++17 without absl, because kernels/sampling.cu (nvcc,
// C++17) includes it; so it redeclares TokenId (as sampling_params.h explains) and holds
// kGreedyTemperature, which sampling_params.h takes from here.
using TokenId = int32_t;

// Temperatures below this sample greedily (vLLM's _SAMPLING_EPS).
inline constexpr float kGreedyTemperature = 1e-5f;

struct TokenLogprob {
  TokenId token;
  float logprob;
};

struct SampleResult {
  TokenId token;
  // Only when params.logprobs >= 0 (otherwise 0 and empty): the chosen token's logprob and the
  // params.logprobs most likely tokens, most likely first (ties: lower id first). `top` may or
  // may not contain `token`, as in vLLM, which reports it beside the top-N.
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

// The most top logprobs a row sampled on the device may ask for (the device finds them one
// pass each); a step with a row asking for more samples on the host. vLLM's default
// max_logprobs is 20.
inline constexpr int32_t kMaxDeviceTopLogprobs = 20;

// One token whose logit the row's processing changes, in Sampler::Sample's order: the stop
// mask (-inf, before everything, so also in the raw logits that logprobs describe), then
// + bias, then the repetition penalty (when kRepeated), then the frequency and presence
// penalties (when count > 0).
struct TokenEdit {
  static constexpr uint32_t kMasked = 1;    // a stop token masked while output < min_tokens
  static constexpr uint32_t kRepeated = 2;  // in the prompt or the output
  TokenId token = 0;
  uint32_t flags = 0;
  float bias = 0.0f;
  int32_t count = 0;  // occurrences in the output
};

// How one row of a logits batch turns into a token. POD: copied to the device as is.
struct SampleRow {
  // temperature < kGreedyTemperature: argmax (ties: lowest id); top_k, top_p, min_p, uniform
  // unused.
  float temperature = 1.0f;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_k = 0;  // <= 0 or >= vocab: off
  // -1: no logprobs; N in [0, kMaxDeviceTopLogprobs]: the chosen token's and the top N.
  int32_t logprobs = -1;
  // The draw, in [0, 1): the token is the first kept one (in id order) whose cumulative weight
  // exceeds uniform × the kept weight, as in Sampler::Sample.
  double uniform = 0.0;
  // This row's edits: BatchSampling::edits[edits_begin, edits_end), sorted by token, distinct.
  int32_t edits_begin = 0;
  int32_t edits_end = 0;
};

struct BatchSampling {
  std::vector<SampleRow> rows = {};  // one per logits row, in row order
  std::vector<TokenEdit> edits = {};

  void clear() {
    rows.clear();
    edits.clear();
  }
};

}  // namespace spillway::engine
