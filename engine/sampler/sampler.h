// Sampler: picks the next token of one sequence from the logits of its last position, after
// each forward pass. One Sampler per sequence (it holds the sequence's random generator and
// its token counts for the penalties); the engine loop owns it and calls it on its thread
// only. Not thread-safe; movable.
//
// Sample() follows vLLM's order of operations:
//   logit_bias -> repetition, frequency, presence penalties ->
//   greedy argmax (temperature < kGreedyTemperature), or
//   temperature -> top_k -> top_p -> min_p -> draw from the per-sequence generator.
//
// NOTE(sampler): the order top_k -> top_p -> min_p is vLLM v0's (and this issue's). vLLM v1
// applies min_p right after the temperature, before top_k / top_p; the kept sets differ only
// when min_p drops tokens whose mass top_p would otherwise have counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampler/batch_sampling.h"
#include "engine/sampler/sampling_params.h"

namespace spillway::engine {

class Sampler {
 public:
  // REQUIRES: Validate(params, vocab_size).ok() for the model's vocab_size; every prompt token
  // is in that vocabulary.
  Sampler(SamplingParams params, std::span<const TokenId> prompt_tokens);

  // Sample returns the next token given `logits` ([vocab_size] f32, the model's output for
  // the sequence's last position). It does not record the token: call Accept() with whatever
  // token is appended to the sequence.
  //
  // On return `logits` holds the processed logits: logit_bias and penalties applied, nothing
  // else (temperature and the filters work on a private copy). Greedy picks their argmax; ties
  // go to the lowest token id.
  //
  // NOTE(sampler): logprobs are the log-softmax of `logits` as passed in, before bias,
  // penalties and temperature: vLLM's default logprobs_mode "raw_logprobs". They describe the
  // model, not the filtered distribution the token was drawn from.
  //
  // REQUIRES: logits.size() is the vocab_size this Sampler was validated for; at least one
  // logit is finite. Allocates nothing after the first call (scratch buffers are kept), except
  // for the returned `top`.
  SampleResult Sample(std::span<float> logits);

  // Accept records `token` as appended to the sequence's output (sampled or forced); later
  // frequency, presence and repetition penalties count it. REQUIRES: 0 <= token < vocab_size.
  void Accept(TokenId token);

  // DescribeRow is Sample() for a backend that samples where the logits are (batch_sampling.h,
  // docs/gpu.md): it appends this sequence's next draw to `out` — its parameters, the edits of
  // its logit_bias and penalties, a kMasked edit for each token of `masked` inside the
  // vocabulary (the stop tokens ChoiceStream::MaskStopTokens would set to -inf) and, unless
  // greedy, the uniform number Sample() would draw next, so the generator advances exactly as
  // on the host. Accept() the token the backend returns.
  // REQUIRES: params().logprobs <= kMaxDeviceTopLogprobs.
  void DescribeRow(std::span<const TokenId> masked, int64_t vocab_size, BatchSampling* out);

  const SamplingParams& params() const { return params_; }
  int64_t num_output_tokens() const { return num_output_tokens_; }

 private:
  struct Candidate {
    float logit;   // processed logit, before temperature
    float weight;  // exp((logit - max logit) / temperature), unnormalised probability
    TokenId token;
  };

  void ApplyLogitBias(std::span<float> logits) const;
  void ApplyPenalties(std::span<float> logits) const;
  TokenId SampleRandom(std::span<const float> logits);
  // Puts the tokens with logit >= min_logit into candidates_[0, n) and returns n.
  size_t FillCandidates(std::span<const float> logits, float min_logit);
  // Sets weight = exp((logit - max_logit) / temperature) on candidates_[0, n); returns the sum.
  double ComputeWeights(size_t n, float max_logit);
  // Filters keep a prefix candidates_[0, n) and return its new length.
  size_t KeepTopP(size_t n, double total_weight);
  size_t NarrowByWeight(size_t n, double needed);
  size_t KeepMinP(size_t n);
  double UniformDouble();  // in [0, 1), 53 random bits; the same on every platform
  void FillLogprobs(std::span<const float> raw_logits, SampleResult& result);

  SamplingParams params_;
  bool has_penalties_;
  std::vector<TokenId> prompt_tokens_;                      // sorted, distinct
  std::vector<std::pair<TokenId, int32_t>> output_counts_;  // (token, count), sorted by token
  int64_t num_output_tokens_ = 0;
  std::mt19937_64 rng_;
  // Scratch, sized to the vocabulary on first use and reused.
  std::vector<Candidate> candidates_;
  std::vector<float> float_scratch_;  // top-k / top-logprobs selection
  std::vector<float> raw_logits_;     // copy of the input logits, only when logprobs need it
  std::vector<TokenEdit> edits_;      // DescribeRow's unmerged edits
};

}  // namespace spillway::engine
