#include "engine/chat/chat_template.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/internal/ast.h"
#include "engine/chat/internal/evaluator.h"
#include "engine/chat/internal/parser.h"

namespace spillway::engine {
namespace {

using chat::internal::DictData;
using chat::internal::Value;

// NOTE(chat): template sources above 1 MiB are refused; real chat templates are < 20 KiB.
constexpr size_t kMaxSourceBytes = size_t{1} << 20;

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  if (source.size() > kMaxSourceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template is ", source.size(), " bytes; the limit is ", kMaxSourceBytes));
  }
  absl::StatusOr<std::unique_ptr<chat::internal::Ast>> ast = chat::internal::ParseTemplate(source);
  if (!ast.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error: ", ast.status().message()));
  }
  return ChatTemplate(std::shared_ptr<const chat::internal::Ast>(std::move(*ast)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInput& input) const {
  std::vector<Value> messages;
  messages.reserve(input.messages.size());
  for (const ChatMessage& m : input.messages) {
    DictData message;
    message.Set("role", Value::String(m.role));
    message.Set("content", Value::String(m.content));
    messages.push_back(Value::Dict(std::move(message)));
  }
  // The keyword arguments of transformers' compiled_template.render(...).
  // Extra variables come first so that they cannot shadow the standard ones (lookups scan
  // from the back).
  std::vector<std::pair<std::string, Value>> variables;
  for (const auto& [name, value] : input.extra_string_vars) {
    variables.emplace_back(name, Value::String(value));
  }
  variables.emplace_back("messages", Value::List(std::move(messages)));
  variables.emplace_back("tools", Value::MakeNone());
  variables.emplace_back("documents", Value::MakeNone());
  variables.emplace_back("add_generation_prompt", Value::Bool(input.add_generation_prompt));
  variables.emplace_back("bos_token", Value::String(input.bos_token));
  variables.emplace_back("eos_token", Value::String(input.eos_token));
  chat::internal::Evaluator evaluator(*ast_, chat::internal::RenderLimits(), input.now);
  absl::StatusOr<std::string> out = evaluator.Render(std::move(variables));
  if (out.ok() || evaluator.raised()) return out;
  if (out.status().code() != absl::StatusCode::kInvalidArgument) return out.status();
  return absl::InvalidArgumentError(absl::StrCat("chat template error: ", out.status().message()));
}

}  // namespace spillway::engine
