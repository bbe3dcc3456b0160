#include "server/admin/dataset.h"

#include <boost/json.hpp>

#include "absl/strings/str_format.h"

namespace spillway::server::admin {
namespace {

namespace json = boost::json;

absl::Status LineError(int64_t line, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrFormat("line %d: %s", line, what));
}

absl::StatusOr<DatasetExample> ParseLine(const json::object& o, int64_t line) {
  DatasetExample ex;
  if (const json::value* m = o.if_contains("messages")) {
    if (!m->is_array() || m->as_array().empty()) {
      return LineError(line, "'messages' must be a non-empty array");
    }
    ex.chat = true;
    bool assistant = false;
    for (size_t i = 0; i < m->as_array().size(); ++i) {
      const json::value& v = m->as_array()[i];
      const json::object* msg = v.if_object();
      const json::value* r = msg != nullptr ? msg->if_contains("role") : nullptr;
      const json::string* role = r != nullptr ? r->if_string() : nullptr;
      if (role == nullptr) {
        return LineError(line, absl::StrFormat("messages[%d] must be an object with a string "
                                               "'role'",
                                               i));
      }
      if (*role != "system" && *role != "user" && *role != "assistant") {
        return LineError(line, absl::StrFormat("messages[%d].role must be system, user or "
                                               "assistant",
                                               i));
      }
      const json::value* content = msg->if_contains("content");
      if (content == nullptr || !content->is_string()) {
        return LineError(line, absl::StrFormat("messages[%d].content must be a string", i));
      }
      assistant |= *role == "assistant";
      ex.messages.push_back({std::string(*role), std::string(content->get_string())});
    }
    if (!assistant) return LineError(line, "no assistant message to learn from");
    return ex;
  }
  const json::value* p = o.if_contains("prompt");
  const json::value* c = o.if_contains("completion");
  if (p == nullptr && c == nullptr) {
    return LineError(line, "expected 'messages' or 'prompt' and 'completion'");
  }
  if (p == nullptr || !p->is_string()) return LineError(line, "'prompt' must be a string");
  if (c == nullptr || !c->is_string()) return LineError(line, "'completion' must be a string");
  if (c->get_string().empty()) return LineError(line, "'completion' is empty");
  ex.prompt = std::string(p->get_string());
  ex.completion = std::string(c->get_string());
  return ex;
}

void Append(const std::vector<engine::TokenId>& ids, uint8_t mask,
            engine::train::TrainingExample& out) {
  out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
  out.loss_mask.insert(out.loss_mask.end(), ids.size(), mask);
}

absl::StatusOr<std::string> Render(const TokenizeContext& ctx,
                                   std::vector<engine::ChatMessage> messages, bool gen_prompt) {
  return ctx.chat_template->Render({.messages = std::move(messages),
                                    .add_generation_prompt = gen_prompt,
                                    .bos_token = ctx.bos_token,
                                    .eos_token = ctx.eos_token,
                                    .extra_string_vars = {},
                                    .now = std::nullopt});
}

absl::StatusOr<engine::train::TrainingExample> TokenizeChat(const DatasetExample& ex,
                                                            const TokenizeContext& ctx) {
  engine::train::TrainingExample out;
  const engine::Tokenizer& tok = *ctx.tokenizer;
  std::string done;  // text tokenized so far
  for (size_t i = 0; i < ex.messages.size(); ++i) {
    if (ex.messages[i].role != "assistant") continue;
    std::vector<engine::ChatMessage> before(ex.messages.begin(), ex.messages.begin() + i);
    absl::StatusOr<std::string> prefix = Render(ctx, before, /*gen_prompt=*/true);
    if (!prefix.ok()) return prefix.status();
    before.push_back(ex.messages[i]);
    absl::StatusOr<std::string> full = Render(ctx, before, /*gen_prompt=*/false);
    if (!full.ok()) return full.status();
    if (!prefix->starts_with(done) || !full->starts_with(*prefix)) {
      return absl::InvalidArgumentError(
          "the chat template does not render the conversation as a growing prefix");
    }
    Append(tok.Encode(std::string_view(*prefix).substr(done.size()), false, true), 0, out);
    Append(tok.Encode(std::string_view(*full).substr(prefix->size()), false, true), 1, out);
    done = *std::move(full);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<DatasetExample>> ParseFineTuneJsonl(std::string_view text) {
  std::vector<DatasetExample> out;
  int64_t line = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view l = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.find_first_not_of(" \t") == std::string_view::npos) continue;
    boost::system::error_code ec;
    json::value v = json::parse(l, ec);
    if (ec) return LineError(line, "not valid JSON");
    if (!v.is_object()) return LineError(line, "expected a JSON object");
    absl::StatusOr<DatasetExample> ex = ParseLine(v.as_object(), line);
    if (!ex.ok()) return ex.status();
    out.push_back(*std::move(ex));
  }
  if (out.empty()) return absl::InvalidArgumentError("the file has no example");
  return out;
}

absl::StatusOr<std::vector<engine::train::TrainingExample>> TokenizeExamples(
    const std::vector<DatasetExample>& examples, const TokenizeContext& ctx, int64_t max_tokens) {
  std::vector<engine::train::TrainingExample> out;
  for (size_t i = 0; i < examples.size(); ++i) {
    const DatasetExample& ex = examples[i];
    engine::train::TrainingExample t;
    if (ex.chat) {
      if (ctx.chat_template == nullptr) {
        return absl::InvalidArgumentError("the model has no usable chat template for 'messages'");
      }
      absl::StatusOr<engine::train::TrainingExample> c = TokenizeChat(ex, ctx);
      if (!c.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("example %d: %s", i + 1, c.status().message()));
      }
      t = *std::move(c);
    } else {
      Append(ctx.tokenizer->Encode(ex.prompt, /*add_special=*/true, false), 0, t);
      Append(ctx.tokenizer->Encode(ex.completion, false, false), 1, t);
      if (ctx.eos_id >= 0) Append({ctx.eos_id}, 1, t);
    }
    bool any_target = false;
    for (size_t k = 1; k < t.loss_mask.size(); ++k) any_target |= t.loss_mask[k] != 0;
    if (!any_target) {
      return absl::InvalidArgumentError(absl::StrFormat("example %d has no target token", i + 1));
    }
    if (static_cast<int64_t>(t.tokens.size()) > max_tokens) {
      return absl::InvalidArgumentError(absl::StrFormat("example %d is %d tokens; at most %d fit",
                                                        i + 1, t.tokens.size(), max_tokens));
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace spillway::server::admin
