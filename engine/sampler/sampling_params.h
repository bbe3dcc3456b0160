// SamplingParams: how one sequence picks its next token, as plain data. The server maps the
// OpenAI / vLLM request fields onto it (same names, same meaning as vLLM's SamplingParams) and
// calls Validate() once, where bad input is answered; engine/sampler/sampler.h consumes it on
// the engine-loop thread. Plain value type, no thread affinity.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler/batch_sampling.h"

namespace spillway::engine {

// NOTE(sampler): the same alias as engine/tokenizer/tokenizer_spec.h (a redeclaration of the
// same type is legal and the compiler rejects a mismatch in any file that includes both). It is
// repeated so that the sampler does not depend on the tokenizer; it belongs in common/ids.h.
using TokenId = int32_t;

// kGreedyTemperature (temperatures below it sample greedily) is in batch_sampling.h.

// Every member has a default member initializer so that designated initializers naming only
// some fields compile without -Wmissing-field-initializers warnings (GCC 12).
struct SamplingParams {
  // Logits are divided by it. Below kGreedyTemperature (in particular 0) the sampler takes the
  // argmax and ignores top_k, top_p, min_p and the seed. Must be finite and >= 0.
  // NOTE(sampler): vLLM raises temperatures in (0, 0.01) to 0.01 because its kernels can hit
  // inf/NaN there; the Sampler computes exp((logit - max) / T), which cannot overflow, so small
  // temperatures are used as given.
  float temperature = 1.0f;
  // Nucleus sampling: keep the smallest set of most likely tokens whose probability mass is
  // >= top_p. In (0, 1]; 1 keeps everything.
  float top_p = 1.0f;
  // Keep the top_k most likely tokens (and any tied with the k-th, as vLLM does). 0 or -1: off.
  int32_t top_k = 0;
  // Drop tokens whose probability is below min_p times that of the most likely token. [0, 1].
  float min_p = 0.0f;
  // > 0. For every token in the prompt or the output: positive logits are divided by it,
  // negative ones multiplied (vLLM / Hugging Face). 1 is off.
  float repetition_penalty = 1.0f;
  // [-2, 2]. Subtracted once from the logit of every token that occurs in the output
  // (not the prompt), as in the OpenAI API.
  float presence_penalty = 0.0f;
  // [-2, 2]. Subtracted from a token's logit once per occurrence in the output (not the prompt).
  float frequency_penalty = 0.0f;
  // (token, bias) pairs added to the logits before anything else. Tokens must be in the
  // vocabulary and distinct; biases finite (the OpenAI front end clamps them to [-100, 100]).
  std::vector<std::pair<TokenId, float>> logit_bias = {};
  // Seeds the sequence's random generator: the same seed, params and logits give the same
  // tokens. Unset: seeded from std::random_device. A request with n > 1 sequences must give
  // each its own seed (e.g. seed + index), or they all draw the same tokens.
  std::optional<uint64_t> seed = std::nullopt;
  // -1: no logprobs. N >= 0: the chosen token's logprob and the N most likely alternatives.
  // In [-1, vocab_size]; the server applies its own, lower cap (vLLM's max_logprobs).
  int32_t logprobs = -1;
};

// Validate returns OK when `params` is usable with a model of `vocab_size` tokens, otherwise
// InvalidArgument naming the first bad field, its allowed range and the value given, e.g.
// "temperature must be >= 0, got -1". NaN fails every range. REQUIRES: vocab_size > 0.
[[nodiscard]] absl::Status Validate(const SamplingParams& params, int64_t vocab_size);

}  // namespace spillway::engine
