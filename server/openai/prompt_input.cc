#include "server/openai/prompt_input.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/string_views.h"
#include "server/openai/api_error.h"
#include "server/openai/json_fields.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

constexpr std::string_view kPromptShape =
    "'prompt' must be a string, a list of strings, a list of token ids or a list of token id "
    "lists";

absl::StatusOr<std::vector<engine::TokenId>> TokenIds(const json::array& ids,
                                                      const ServedModel& model) {
  std::vector<engine::TokenId> out;
  out.reserve(ids.size());
  for (const json::value& v : ids) {
    std::optional<int64_t> id = AsInteger(v);
    if (!id.has_value()) return InvalidParamError("prompt", kPromptShape);
    if (*id < 0 || *id >= model.tokenizer->vocab_size()) {
      return InvalidParamError("prompt",
                               absl::StrCat("token id ", *id, " in 'prompt' is out of range [0, ",
                                            model.tokenizer->vocab_size(), ")"));
    }
    out.push_back(static_cast<engine::TokenId>(*id));
  }
  return out;
}

absl::StatusOr<PromptInput> FromIds(const json::array& ids, const ServedModel& model) {
  PromptInput p;
  auto tokens = TokenIds(ids, model);
  if (!tokens.ok()) return tokens.status();
  p.tokens = std::move(*tokens);
  p.text = model.tokenizer->Decode(p.tokens, /*skip_special=*/false);
  return p;
}

PromptInput FromText(std::string_view text, const ServedModel& model) {
  return {.tokens = model.tokenizer->Encode(text, /*add_special=*/true, /*parse_special=*/true),
          .text = std::string(text)};
}

// Collects the prompts of a list: all strings, all token lists, or one list of token ids.
absl::StatusOr<std::vector<PromptInput>> FromList(const json::array& list,
                                                  const ServedModel& model) {
  std::vector<PromptInput> out;
  if (list.empty()) return InvalidParamError("prompt", "'prompt' must not be empty");
  if (list.front().is_number()) {
    auto p = FromIds(list, model);
    if (!p.ok()) return p.status();
    out.push_back(std::move(*p));
    return out;
  }
  if (std::ssize(list) > model.limits.max_prompts) {
    return InvalidParamError("prompt",
                             absl::StrCat("'prompt' may hold at most ", model.limits.max_prompts,
                                          " prompts, got ", list.size()));
  }
  for (const json::value& item : list) {
    if (item.is_string()) {
      out.push_back(FromText(item.get_string(), model));
    } else if (item.is_array()) {
      auto p = FromIds(item.get_array(), model);
      if (!p.ok()) return p.status();
      out.push_back(std::move(*p));
    } else {
      return InvalidParamError("prompt", kPromptShape);
    }
  }
  return out;
}

// The text of one message's `content`: a string, text parts joined by "\n" (as vLLM joins
// them), or null (an assistant turn without text).
absl::StatusOr<std::string> MessageContent(const json::value* content, const std::string& where) {
  const std::string param = where + ".content";
  if (content == nullptr || content->is_null()) return std::string();
  if (content->is_string()) return std::string(content->get_string());
  if (!content->is_array()) {
    return InvalidParamError(param, absl::StrCat("'", param,
                                                 "' must be a string or a list of "
                                                 "text parts, got ",
                                                 JsonTypeName(*content)));
  }
  std::vector<absl::string_view> parts;
  for (const json::value& part : content->get_array()) {
    const json::object* o = part.if_object();
    const json::value* type = o != nullptr ? o->if_contains("type") : nullptr;
    const json::value* text = o != nullptr ? o->if_contains("text") : nullptr;
    if (type == nullptr || !type->is_string() || type->get_string() != "text") {
      return InvalidParamError(param, absl::StrCat("only text content parts ({\"type\": \"text\","
                                                   " \"text\": ...}) are supported in '",
                                                   param, "'"));
    }
    if (text == nullptr || !text->is_string()) {
      return InvalidParamError(param,
                               absl::StrCat("a text part of '", param, "' needs a string 'text'"));
    }
    parts.push_back(AbslSv(std::string_view(text->get_string())));
  }
  return absl::StrJoin(parts, "\n");
}

absl::StatusOr<engine::ChatMessage> Message(const json::value& v, size_t index) {
  const std::string where = absl::StrCat("messages[", index, "]");
  const json::object* o = v.if_object();
  if (o == nullptr) {
    return InvalidParamError(
        where, absl::StrCat("'", where, "' must be an object, got ", JsonTypeName(v)));
  }
  const json::value* role = o->if_contains("role");
  if (role == nullptr || !role->is_string()) {
    return InvalidParamError(where + ".role", absl::StrCat("'", where, ".role' must be a string"));
  }
  engine::ChatMessage m;
  m.role = std::string(role->get_string());
  if (m.role == "developer") m.role = "system";  // OpenAI's newer name for the system role
  if (m.role != "system" && m.role != "user" && m.role != "assistant") {
    return InvalidParamError(where + ".role",
                             absl::StrCat("'", where,
                                          ".role' must be one of system, developer, "
                                          "user, assistant; got '",
                                          AbslSv(std::string_view(role->get_string())), "'"));
  }
  auto content = MessageContent(o->if_contains("content"), where);
  if (!content.ok()) return content.status();
  m.content = std::move(*content);
  return m;
}

}  // namespace

absl::StatusOr<std::vector<PromptInput>> CompletionPrompts(const json::value& prompt,
                                                           const ServedModel& model) {
  std::vector<PromptInput> out;
  if (prompt.is_string()) {
    out.push_back(FromText(prompt.get_string(), model));
  } else if (prompt.is_array()) {
    auto list = FromList(prompt.get_array(), model);
    if (!list.ok()) return list.status();
    out = std::move(*list);
  } else {
    return InvalidParamError("prompt", kPromptShape);
  }
  for (const PromptInput& p : out) {
    if (p.tokens.empty()) return InvalidParamError("prompt", "the prompt is empty (0 tokens)");
  }
  return out;
}

absl::StatusOr<std::string> RenderChat(const json::value& messages, bool add_generation_prompt,
                                       const ServedModel& model) {
  if (model.chat_template == nullptr) {
    return InvalidParamError("messages",
                             "this model has no chat template; use /v1/completions instead");
  }
  const json::array* list = messages.if_array();
  if (list == nullptr || list->empty()) {
    return InvalidParamError("messages", "'messages' must be a non-empty list of messages");
  }
  engine::ChatTemplateInput input;
  input.add_generation_prompt = add_generation_prompt;
  input.bos_token = model.bos_token;
  input.eos_token = model.eos_token;
  for (size_t i = 0; i < list->size(); ++i) {
    auto m = Message((*list)[i], i);
    if (!m.ok()) return m.status();
    input.messages.push_back(std::move(*m));
  }
  absl::StatusOr<std::string> text = model.chat_template->Render(input);
  // Every template failure (raise_exception, a limit) is about these messages: a 400.
  if (!text.ok()) return InvalidParamError("messages", StdSv(text.status().message()));
  return text;
}

std::vector<engine::TokenId> TokenizeChat(const std::string& text, const ServedModel& model) {
  return model.tokenizer->Encode(text, /*add_special=*/false, /*parse_special=*/true);
}

}  // namespace spillway::server::openai
