// ChoiceStream: turns the tokens sampled for one choice of a request into its TokenEvents —
// the stop rules (max_tokens, EOS/EOT unless ignore_eos, stop_token_ids, stop strings,
// min_tokens, the model's context), UTF-8-safe text deltas (IncrementalDetokenizer,
// skip_special) and the stop-string hold-back: text that could be the start of a stop string
// is kept until the following tokens decide it, and a matched stop string is never emitted
// (vLLM's detokenizer). Owned by the scheduler's per-request state; engine-loop thread only.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler/sampler.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "scheduler/api/request.h"
#include "scheduler/api/token_event.h"

namespace spillway::scheduler {

class ChoiceStream {
 public:
  // `rules` and `end_of_generation_ids` (the tokenizer's EOS and EOT ids) must outlive the
  // stream. `want_logprobs`: events carry the SampleResult of each token they carry.
  ChoiceStream(const engine::Tokenizer& tokenizer, const StopRules& rules,
               std::span<const TokenId> end_of_generation_ids, int32_t index, bool want_logprobs);

  // MaskStopTokens sets the logits of the tokens that would stop the choice to -inf while
  // fewer than min_tokens have been generated (vLLM's min_tokens logits processor); otherwise
  // leaves `logits` alone. Call before sampling.
  void MaskStopTokens(std::span<float> logits) const;
  // The tokens MaskStopTokens would set to -inf now (none once min_tokens are generated),
  // appended to `out`: the stop mask of a step sampled on the device.
  void AppendMaskedTokens(std::vector<TokenId>* out) const;

  // Accept takes the choice's next sampled token and returns its event: the token and the text
  // it makes final, and a finish_reason when the choice ends here. `at_context_limit`: the
  // sequence now fills the model's context. REQUIRES: !finished().
  TokenEvent Accept(const engine::SampleResult& sample, bool at_context_limit);

  bool finished() const { return finished_; }
  int32_t num_generated() const { return num_generated_; }

 private:
  bool IsStopToken(TokenId token) const;
  // Moves the text of `pending_` that no stop string can start into `event.text`.
  void EmitSafeText(TokenEvent& event);
  // Ends the choice: `event` gets every held byte, then `reason`.
  void Finish(TokenEvent& event, FinishReason reason);

  const engine::Tokenizer& tokenizer_;
  const StopRules& rules_;
  std::span<const TokenId> end_of_generation_ids_;
  const int32_t index_;
  const bool want_logprobs_;
  engine::IncrementalDetokenizer detokenizer_;
  std::string pending_;  // decoded text not yet emitted (a possible stop-string start)
  int32_t num_generated_ = 0;
  bool finished_ = false;
};

}  // namespace spillway::scheduler
