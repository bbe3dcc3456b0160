// SentencePiece-style BPE (Llama 2, Mistral): merges adjacent symbols whose concatenation is a
// token, highest score first, and falls back to <0xNN> byte tokens for what no token covers.
// Immutable after Create; safe to share between threads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/internal/string_hash.h"
#include "engine/tokenizer/tokenizer_spec.h"

namespace spillway::engine::internal {

// "▁" (U+2581), SentencePiece's stand-in for a space.
inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

// Parses a byte token text "<0xNN>"; returns the byte or -1.
int ParseByteToken(std::string_view text);

class SpmBpe {
 public:
  // Errors: scores missing or of the wrong size.
  static absl::StatusOr<SpmBpe> Create(const TokenizerSpec& spec);

  // Appends the ids of `text`, whose spaces are already replaced by "▁".
  void EncodeText(std::string_view text, std::vector<TokenId>* out) const;

 private:
  // id of `piece` if it is a token that merging may produce (normal or user-defined), else -1.
  TokenId Find(std::string_view piece) const;
  // Appends the token of one final symbol, or its <0xNN> byte tokens (unk where one is missing).
  void EmitSymbol(std::string_view piece, std::vector<TokenId>* out) const;

  StringMap<TokenId> pieces_;
  std::vector<float> scores_;
  std::vector<TokenId> byte_tokens_;  // byte -> <0xNN> id, -1 if missing
  TokenId unk_id_ = -1;
};

}  // namespace spillway::engine::internal
