// Byte-level BPE (GPT-2 style): the byte <-> printable-character map of GPT-2's vocabularies and
// the merge loop that turns one pre-tokenized piece into token ids by merge rank. Immutable after
// Create; safe to share between threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/internal/string_hash.h"
#include "engine/tokenizer/tokenizer_spec.h"

namespace spillway::engine::internal {

// GPT-2's bytes_to_unicode(): the printable code point that stands for byte `b` in token texts.
char32_t ByteToCodepoint(uint8_t b);
// The inverse; -1 if `cp` stands for no byte.
int CodepointToByte(char32_t cp);

// Raw bytes of a byte-level token text ("Ġthe" -> " the"). A code point that stands for no byte
// is kept as its UTF-8 encoding.
std::string ByteLevelToBytes(std::string_view token_text);

class ByteLevelBpe {
 public:
  // Builds the merge table from spec.merges ("left right", best first). `ignore_merges`: a piece
  // that is a whole token is emitted as that token without merging (HF `ignore_merges`).
  // Errors: a merge that is not two space-separated known tokens, or whose result is unknown.
  static absl::StatusOr<ByteLevelBpe> Create(const TokenizerSpec& spec, bool ignore_merges);

  // Appends the ids of one pre-tokenized piece (raw bytes). Bytes whose single-byte token is
  // missing from the vocabulary are dropped, as HF BPE without an unk token does.
  void EncodePiece(std::string_view piece, std::vector<TokenId>* out) const;

 private:
  struct Merge {
    int32_t rank;
    TokenId result;
  };
  static uint64_t PairKey(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  std::vector<TokenId> byte_tokens_;            // byte -> id, -1 if missing
  std::unordered_map<uint64_t, Merge> merges_;  // (left, right) -> rank, result
  StringMap<TokenId> whole_;                    // raw bytes -> id; only if ignore_merges
};

}  // namespace spillway::engine::internal
