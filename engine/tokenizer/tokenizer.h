// Tokenizer: text <-> token ids for Llama-family models, built from a TokenizerSpec (GGUF
// `tokenizer.ggml.*` metadata). Two models:
//   - "gpt2": byte-level BPE with merge ranks and a pre-tokenizer named by spec.pre ("smollm",
//     "gpt2"/"default", "llama-bpe", "qwen2"); matches Hugging Face `tokenizers`.
//   - "llama": SentencePiece-style BPE with scores, "▁" for spaces and <0xNN> byte fallback.
// Used by the server (prompts), the chat templates and the detokenizer (scheduler).
// Thread safety: immutable after Create; every method is const and safe to call from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_spec.h"

namespace spillway::engine {

namespace internal {
class ByteLevelBpe;
class SpmBpe;
enum class PreTokenizerKind;
}  // namespace internal

class Tokenizer {
 public:
  // Create validates `spec` and builds the tokenizer. Returns InvalidArgument naming the problem
  // for: an unknown model or pre-tokenizer, no tokens, token_types/scores of the wrong size, a
  // special id out of range, add_bos/add_eos without that id, a merge that refers to an unknown
  // token, SentencePiece scores missing, a byte token not spelled <0xNN>.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encode returns the ids of `text`.
  //   add_special: prepend BOS if spec.add_bos, append EOS if spec.add_eos.
  //   parse_special: control tokens written in the text ("<|im_start|>") become their ids, as
  //     HF does for added special tokens; otherwise they are encoded as plain text.
  //     User-defined tokens are always matched (HF's non-special added tokens), whatever the flag.
  // Matching is leftmost-longest; the text between matches is encoded on its own.
  // "llama" model: with add_space_prefix, a "▁" is prepended to the first text fragment and to
  // each fragment that follows a special token (as llama.cpp does).
  std::vector<TokenId> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // Decode returns the text of `ids` as well-formed UTF-8: invalid byte sequences become U+FFFD
  // (one per maximal ill-formed subpart, like HF). skip_special drops control and unknown
  // tokens. "llama" model with add_space_prefix: one leading space of the result is removed.
  // REQUIRES: every id in [0, vocab_size()).
  std::string Decode(std::span<const TokenId> ids, bool skip_special) const;

  // The token's text as stored in the vocabulary ("Ġthe", "▁the", "<0x0A>", "<|im_end|>").
  // REQUIRES: 0 <= id < vocab_size().
  std::string_view TokenPiece(TokenId id) const;
  // The raw bytes the token stands for (" the", "\n", "<|im_end|>"); may be part of a UTF-8
  // character. REQUIRES: 0 <= id < vocab_size().
  std::string TokenBytes(TokenId id) const;
  // The id of the token whose stored text is `piece` (the inverse of TokenPiece).
  std::optional<TokenId> FindToken(std::string_view piece) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  TokenId bos_id() const { return bos_id_; }  // -1 if none
  TokenId eos_id() const { return eos_id_; }  // -1 if none
  // REQUIRES: 0 <= id < vocab_size().
  TokenType token_type(TokenId id) const;
  // True for the EOS id and the end-of-turn ids (spec.eot_ids).
  bool IsEndOfGeneration(TokenId id) const;
  // True for the tokens that Decode drops when skip_special is set (control and unknown).
  bool IsSkippedWhenSpecial(TokenId id) const;

  // The pieces used by Decode, for incremental detokenizers: appends the bytes `id` adds to the
  // decoded text (nothing for a skipped special token).
  void AppendDecodedBytes(TokenId id, bool skip_special, std::string* bytes) const;
  // True if Decode removes one leading space from its result ("llama" with add_space_prefix).
  bool strips_leading_space() const { return strips_leading_space_; }

 private:
  struct SpecialToken {
    std::string_view text;
    TokenId id;
    bool control;  // matched only with parse_special
  };

  Tokenizer() = default;
  absl::Status Init(const TokenizerSpec& spec);
  // Appends the ids of plain text (no special tokens in it).
  void EncodeText(std::string_view text, bool first_fragment, bool after_special,
                  std::vector<TokenId>* out) const;
  void CheckId(TokenId id) const;

  bool is_spm_ = false;
  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> token_bytes_;  // id -> TokenBytes(id)
  std::unordered_map<std::string_view, TokenId> piece_to_id_;
  std::vector<SpecialToken> specials_;  // longest first
  std::array<bool, 256> special_first_byte_{};
  TokenId bos_id_ = -1;
  TokenId eos_id_ = -1;
  std::vector<TokenId> eot_ids_;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  bool strips_leading_space_ = false;
  internal::PreTokenizerKind pre_{};
  std::unique_ptr<internal::ByteLevelBpe> bpe_;
  std::unique_ptr<internal::SpmBpe> spm_;
};

}  // namespace spillway::engine
