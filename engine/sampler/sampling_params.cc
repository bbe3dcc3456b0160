#include "engine/sampler/sampling_params.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace spillway::engine {
namespace {

absl::Status OutOfRange(const char* field, const char* range, double value) {
  return absl::InvalidArgumentError(absl::StrFormat("%s must be %s, got %g", field, range, value));
}

// Every comparison is written so that NaN fails it.
absl::Status ValidateScalars(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    return OutOfRange("temperature", ">= 0", p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return OutOfRange("top_p", "in (0, 1]", p.top_p);
  }
  if (p.top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("top_k must be -1 or 0 (off) or >= 1, got %d", p.top_k));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return OutOfRange("min_p", "in [0, 1]", p.min_p);
  }
  if (!(p.repetition_penalty > 0.0f) || std::isinf(p.repetition_penalty)) {
    return OutOfRange("repetition_penalty", "> 0 and finite", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "in [-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  }
  return absl::OkStatus();
}

absl::Status ValidateLogitBias(const SamplingParams& p, int64_t vocab_size) {
  std::vector<TokenId> tokens;
  tokens.reserve(p.logit_bias.size());
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "logit_bias token must be in [0, %d) (the vocabulary), got %d", vocab_size, token));
    }
    if (!std::isfinite(bias)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("logit_bias for token %d must be finite, got %g", token, bias));
    }
    tokens.push_back(token);
  }
  std::sort(tokens.begin(), tokens.end());
  if (auto dup = std::adjacent_find(tokens.begin(), tokens.end()); dup != tokens.end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("logit_bias must list each token at most once, got %d twice", *dup));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Validate(const SamplingParams& params, int64_t vocab_size) {
  SPW_CHECK(vocab_size > 0) << "vocab_size " << vocab_size;
  SPW_RETURN_IF_ERROR(ValidateScalars(params));
  SPW_RETURN_IF_ERROR(ValidateLogitBias(params, vocab_size));
  if (params.logprobs < -1 || params.logprobs > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("logprobs must be -1 (off) or in [0, %d] (the vocabulary size), got %d",
                        vocab_size, params.logprobs));
  }
  return absl::OkStatus();
}

}  // namespace spillway::engine
