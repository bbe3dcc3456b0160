// IncrementalDetokenizer: turns a stream of token ids into text deltas for streaming responses.
// Each Push returns only complete UTF-8 characters; bytes of a character that the following
// tokens complete are held back. The concatenation of every Push result and the final Flush is
// exactly Tokenizer::Decode of the whole sequence (same skip_special).
// Thread safety: one instance per sequence, used from one thread; the Tokenizer must outlive it.
#pragma once

#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace spillway::engine {

class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special);

  // Push adds `id` and returns the text completed by it (possibly empty); never ends inside a
  // UTF-8 character. Byte sequences that can no longer become valid come out as U+FFFD.
  // REQUIRES: 0 <= id < tokenizer.vocab_size().
  std::string Push(TokenId id);

  // Flush returns what is held back (an incomplete character becomes U+FFFD) and empties the
  // buffer. Pushing may continue afterwards.
  std::string Flush();

  // Bytes held back: at most 3, the start of a character not yet complete.
  size_t num_pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  const bool skip_special_;
  bool at_start_ = true;  // no byte produced yet (for the leading-space rule)
  std::string pending_;
};

}  // namespace spillway::engine
