// Lexer for the jinja2 subset: turns template source into data, tag and expression tokens,
// applying jinja2's whitespace rules as transformers configures them (trim_blocks=True,
// lstrip_blocks=True, `-`/`+` modifiers, newline normalisation, one trailing newline dropped).
// Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::engine::chat::internal {

enum class TokenKind {
  kData,           // literal template text (already whitespace-controlled)
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,  // text holds the operator, e.g. "==", "//", "("
  kEof,
};

struct Token {
  TokenKind kind;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

// Tokenize returns InvalidArgument("line L, column C: ...") for unterminated tags, comments and
// strings and for characters that cannot start a token. The last token is always kEof.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace spillway::engine::chat::internal
