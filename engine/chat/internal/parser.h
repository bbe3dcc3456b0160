// Parser for the jinja2 subset used by model chat templates: builds an Ast (ast.h) from the
// token stream of lexer.h with jinja2's grammar and operator precedence.
// Pure function; thread-safe.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/internal/ast.h"

namespace spillway::engine::chat::internal {

// Deepest nesting of blocks and sub-expressions that Parse accepts; deeper templates fail with
// InvalidArgument rather than exhaust the stack.
inline constexpr int kMaxParseDepth = 128;
// Tallest expression tree Parse accepts (long chains like a+b+c+... grow trees without
// recursion in the parser, so they are bounded separately).
inline constexpr int kMaxExprDepth = 256;

// ParseTemplate returns InvalidArgument("line L, column C: ...") on any syntax error,
// including tags this interpreter does not support (extends, include, import, call, ...).
absl::StatusOr<std::unique_ptr<Ast>> ParseTemplate(std::string_view source);

}  // namespace spillway::engine::chat::internal
