// A tiny byte-level tokenizer for scheduler tests: token id b (0..255) is byte b (GPT-2's
// byte-to-unicode spelling, no merges), 256 is "<eos>" (EOS) and 257 "<eot>" (an end-of-turn
// id), both control tokens. So a test can write text as token ids ('a' == 97) and multi-byte
// UTF-8 characters arrive split across tokens. Header-only; needs spw_engine_tokenizer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace spillway::testing {

inline constexpr engine::TokenId kByteEos = 256;
inline constexpr engine::TokenId kByteEot = 257;

inline std::unique_ptr<engine::Tokenizer> MakeByteTokenizer() {
  engine::TokenizerSpec spec;
  spec.model = "gpt2";
  spec.pre = "gpt2";
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  int extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    spec.tokens.push_back(utf8(printable ? b : 256 + extra++));
  }
  spec.tokens.push_back("<eos>");
  spec.tokens.push_back("<eot>");
  spec.token_types.assign(256, engine::TokenType::kNormal);
  spec.token_types.push_back(engine::TokenType::kControl);
  spec.token_types.push_back(engine::TokenType::kControl);
  spec.eos_id = kByteEos;
  spec.eot_ids = {kByteEot};
  auto tokenizer = engine::Tokenizer::Create(spec);
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// The token ids of `text` (one per byte).
inline std::vector<engine::TokenId> ByteTokens(std::string_view text) {
  std::vector<engine::TokenId> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

}  // namespace spillway::testing
