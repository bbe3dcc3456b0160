// ChatTemplate: renders a model's own chat template (the Jinja source stored in GGUF
// `tokenizer.chat_template` or tokenizer_config.json `chat_template`) into a prompt string,
// byte-for-byte as HF transformers' apply_chat_template renders it with jinja2 (sandboxed,
// trim_blocks and lstrip_blocks on, `raise_exception`, `strftime_now`, and a `tojson` that
// keeps non-ASCII and does not escape HTML). Only the subset of Jinja that chat templates use
// is supported; anything else is a Parse error, never a crash.
//
// Templates are untrusted input: rendering is bounded in output size, steps and recursion.
// A ChatTemplate is immutable after Parse; Render may be called from many threads at once.
#pragma once

#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::engine {

namespace chat::internal {
struct Ast;
}  // namespace chat::internal

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateInput {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  std::string bos_token;  // e.g. "<|begin_of_text|>"
  std::string eos_token;
  // Values for templates that read extra variables (e.g. Llama 3.1's date_string); optional.
  std::map<std::string, std::string> extra_string_vars;
  // The time strftime_now() formats; unset means the local time at the call.
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Parse compiles `source`. Syntax errors and unsupported tags return InvalidArgument with
  // "chat template syntax error: line L, column C: ...".
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  // Render runs the template with `messages`, `add_generation_prompt`, `bos_token`,
  // `eos_token`, `tools` = none, `documents` = none and every extra_string_vars entry bound, as
  // transformers does. A template's raise_exception(msg) returns InvalidArgument(msg); other
  // runtime errors (type errors, use of undefined values) return InvalidArgument with
  // "chat template error: line N: ..."; exceeding a limit returns ResourceExhausted.
  absl::StatusOr<std::string> Render(const ChatTemplateInput& input) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const chat::internal::Ast> ast) : ast_(std::move(ast)) {}

  std::shared_ptr<const chat::internal::Ast> ast_;
};

}  // namespace spillway::engine
