// TokenizerSpec: everything a tokenizer is built from, as plain data. The model-file readers
// fill it from GGUF metadata (`tokenizer.ggml.*`) or from `tokenizer.json` +
// `tokenizer_config.json`; engine/tokenizer/tokenizer.h builds a Tokenizer from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spillway::engine {

using TokenId = int32_t;

// GGUF `tokenizer.ggml.token_type` values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizerSpec {
  // "gpt2" (byte-level BPE with merges) or "llama" (SentencePiece-style BPE with scores).
  std::string model;
  // Pre-tokenizer name as GGUF's `tokenizer.ggml.pre` spells it: "smollm", "llama-bpe",
  // "qwen2", "gpt2", "default", ...
  std::string pre;
  std::vector<std::string> tokens;     // id -> token text (byte-level encoded for gpt2)
  std::vector<float> scores;           // id -> score (SentencePiece); may be empty
  std::vector<TokenType> token_types;  // id -> type; may be empty (all normal)
  std::vector<std::string> merges;     // "left right", highest priority first (gpt2)
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId unk_id = -1;
  TokenId pad_id = -1;
  std::vector<TokenId> eot_ids;  // extra end-of-turn ids (e.g. <|eot_id|>, <|im_end|>)
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece: prepend "▁" to the text
};

}  // namespace spillway::engine
