// UTF-8 decoding/encoding, lossy UTF-8 repair and code-point classes (\p{L}, \p{N}, \s) for the
// tokenizer's pre-tokenizers and detokenizers. Pure functions; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/internal/unicode_tables.h"

namespace spillway::engine::internal {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Flags (kCpLetter | kCpNumber | kCpWhitespace) of `cp`; 0 for anything else.
uint8_t CodepointFlags(char32_t cp);

struct Utf8Char {
  char32_t cp;  // kReplacementChar for an invalid byte
  int len;      // bytes consumed, >= 1
};

// DecodeUtf8 reads the character starting at text[pos]. REQUIRES: pos < text.size().
// An ill-formed sequence decodes as {kReplacementChar, 1}, so every byte is covered exactly once.
Utf8Char DecodeUtf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// AppendValidUtf8 appends `bytes` to `out` as well-formed UTF-8, replacing each maximal ill-formed
// subpart with U+FFFD (Unicode's "best practice", which Rust's String::from_utf8_lossy and hence
// Hugging Face decoders follow). If `final` is false, an incomplete sequence at the end that could
// still become valid is left unconsumed. Returns the number of bytes consumed.
size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out);

// True if `text` is well-formed UTF-8.
bool IsValidUtf8(std::string_view text);

}  // namespace spillway::engine::internal
