#include "engine/tokenizer/incremental_detokenizer.h"

#include "engine/tokenizer/internal/unicode.h"

namespace spillway::engine {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::Push(TokenId id) {
  const size_t before = pending_.size();
  tokenizer_.AppendDecodedBytes(id, skip_special_, &pending_);
  if (at_start_ && pending_.size() > before) {
    at_start_ = false;
    if (tokenizer_.strips_leading_space() && pending_[0] == ' ') pending_.erase(0, 1);
  }
  std::string out;
  const size_t consumed = internal::AppendValidUtf8(pending_, /*final=*/false, &out);
  pending_.erase(0, consumed);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  internal::AppendValidUtf8(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace spillway::engine
