#include "scheduler/choice_stream.h"

#include <algorithm>
#include <limits>

#include "common/check.h"

namespace spillway::scheduler {
namespace {

bool Contains(std::span<const TokenId> ids, TokenId id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Length of the longest suffix of `text` that is a proper prefix of one of `stops`.
size_t LongestStopPrefixSuffix(std::string_view text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& stop : stops) {
    for (size_t k = std::min(text.size(), stop.size() - 1); k > best; --k) {
      if (text.substr(text.size() - k) == std::string_view(stop).substr(0, k)) {
        best = k;
        break;
      }
    }
  }
  return best;
}

}  // namespace

ChoiceStream::ChoiceStream(const engine::Tokenizer& tokenizer, const StopRules& rules,
                           std::span<const TokenId> end_of_generation_ids, int32_t index,
                           bool want_logprobs)
    : tokenizer_(tokenizer),
      rules_(rules),
      end_of_generation_ids_(end_of_generation_ids),
      index_(index),
      want_logprobs_(want_logprobs),
      detokenizer_(tokenizer, /*skip_special=*/true) {}

void ChoiceStream::MaskStopTokens(std::span<float> logits) const {
  if (num_generated_ >= rules_.min_tokens) return;
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  auto mask = [&](TokenId id) {
    if (id >= 0 && static_cast<size_t>(id) < logits.size()) logits[id] = kMasked;
  };
  if (!rules_.ignore_eos)
    std::for_each(end_of_generation_ids_.begin(), end_of_generation_ids_.end(), mask);
  std::for_each(rules_.stop_token_ids.begin(), rules_.stop_token_ids.end(), mask);
}

void ChoiceStream::AppendMaskedTokens(std::vector<TokenId>* out) const {
  if (num_generated_ >= rules_.min_tokens) return;
  if (!rules_.ignore_eos) {
    out->insert(out->end(), end_of_generation_ids_.begin(), end_of_generation_ids_.end());
  }
  out->insert(out->end(), rules_.stop_token_ids.begin(), rules_.stop_token_ids.end());
}

bool ChoiceStream::IsStopToken(TokenId token) const {
  return Contains(rules_.stop_token_ids, token);
}

TokenEvent ChoiceStream::Accept(const engine::SampleResult& sample, bool at_context_limit) {
  SPW_CHECK(!finished_) << "choice " << index_ << " already finished";
  ++num_generated_;
  TokenEvent event{.index = index_};
  const TokenId token = sample.token;
  const bool may_stop = num_generated_ >= rules_.min_tokens;
  // vLLM's order: EOS (no stop_reason), then stop token ids (stop_reason = the id); neither is
  // emitted as a token or text.
  if (may_stop && !rules_.ignore_eos && tokenizer_.IsEndOfGeneration(token)) {
    Finish(event, FinishReason::kStop);
    return event;
  }
  if (may_stop && IsStopToken(token)) {
    event.stop_token = token;
    Finish(event, FinishReason::kStop);
    return event;
  }
  event.token_ids.push_back(token);
  if (want_logprobs_) event.logprobs.push_back(sample);
  pending_ += detokenizer_.Push(token);
  if (may_stop && !rules_.stop_strings.empty()) {
    size_t first = std::string::npos;
    const std::string* matched = nullptr;
    for (const std::string& stop : rules_.stop_strings) {
      const size_t pos = pending_.find(stop);
      if (pos < first) {
        first = pos;
        matched = &stop;
      }
    }
    if (matched != nullptr) {
      event.text = pending_.substr(0, first);
      pending_.clear();
      event.stop_string = *matched;
      event.finish_reason = FinishReason::kStop;
      finished_ = true;
      return event;
    }
  }
  if (num_generated_ >= rules_.max_tokens || at_context_limit) {
    Finish(event, FinishReason::kLength);
    return event;
  }
  EmitSafeText(event);
  return event;
}

void ChoiceStream::EmitSafeText(TokenEvent& event) {
  const size_t hold = LongestStopPrefixSuffix(pending_, rules_.stop_strings);
  event.text += pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
}

void ChoiceStream::Finish(TokenEvent& event, FinishReason reason) {
  event.text += pending_;
  event.text += detokenizer_.Flush();
  pending_.clear();
  event.finish_reason = reason;
  finished_ = true;
}

}  // namespace spillway::scheduler
