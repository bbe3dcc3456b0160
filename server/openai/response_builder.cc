#include "server/openai/response_builder.h"

#include <cmath>
#include <span>

#include "common/check.h"
#include "server/openai/api_error.h"
#include "server/openai/sse.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

// JSON has no -inf; vLLM reports -9999.0 for a token with zero probability.
double JsonLogprob(float logprob) {
  return std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0;
}

// Characters (code points) in UTF-8 `text`, as Python's len() counts OpenAI's text_offset.
int64_t NumChars(std::string_view text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

std::string_view FinishReasonName(scheduler::FinishReason r) {
  return r == scheduler::FinishReason::kLength ? "length" : "stop";
}

json::array BytesJson(const std::string& bytes) {
  json::array out;
  for (unsigned char b : bytes) out.emplace_back(static_cast<int64_t>(b));
  return out;
}

}  // namespace

ResponseContext ContextOf(const GenerationSpec& spec) {
  return {.endpoint = spec.endpoint,
          .stream = spec.stream,
          .include_usage = spec.include_usage,
          .n = spec.n,
          .logprobs = spec.logprobs,
          .echo_texts = spec.echo ? spec.echo_texts : std::vector<std::string>{},
          .num_prompts = spec.requests.size()};
}

ResponseBuilder::ResponseBuilder(ResponseContext context) : ctx_(std::move(context)) {
  SPW_CHECK(ctx_.tokenizer != nullptr);
  choices_.resize(ctx_.num_prompts * ctx_.n);
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (!ctx_.echo_texts.empty()) choices_[i].text = ctx_.echo_texts[i / ctx_.n];
    choices_[i].text_offset = NumChars(choices_[i].text);
  }
}

json::object ResponseBuilder::ChunkHead() const {
  json::object o;
  o["id"] = ctx_.id;
  o["object"] =
      ctx_.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion";
  o["created"] = ctx_.created_unix;
  o["model"] = ctx_.model;
  return o;
}

std::string ResponseBuilder::Chunk(json::object choice) const {
  json::object o = ChunkHead();
  json::array choices;
  choices.emplace_back(std::move(choice));
  o["choices"] = std::move(choices);
  if (ctx_.include_usage) o["usage"] = nullptr;
  return SseData(json::serialize(o));
}

std::string ResponseBuilder::StreamStart() {
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    json::object choice;
    choice["index"] = i;
    if (ctx_.endpoint == Endpoint::kChatCompletions) {
      choice["delta"] = json::object{{"role", "assistant"}, {"content", ""}};
    } else if (!ctx_.echo_texts.empty()) {
      choice["text"] = choices_[i].text;
    } else {
      continue;
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = nullptr;
    out += Chunk(std::move(choice));
  }
  return out;
}

json::value ResponseBuilder::TakeLogprobs(Choice& c, const scheduler::TokenEvent& event) {
  if (ctx_.logprobs < 0) return nullptr;
  const engine::Tokenizer& tok = *ctx_.tokenizer;
  const size_t num = std::min(event.token_ids.size(), event.logprobs.size());
  const size_t num_top = static_cast<size_t>(ctx_.logprobs);
  json::array tokens, token_logprobs, top, offsets, content;
  for (size_t i = 0; i < num; ++i) {
    const engine::SampleResult& r = event.logprobs[i];
    const engine::TokenId id = event.token_ids[i];
    const std::string text = tok.Decode(std::span(&id, 1), /*skip_special=*/false);
    const std::span<const engine::TokenLogprob> alternatives(r.top.data(),
                                                             std::min(r.top.size(), num_top));
    if (ctx_.endpoint == Endpoint::kChatCompletions) {
      json::array alts;
      for (const engine::TokenLogprob& t : alternatives) {
        const std::string t_text = tok.Decode(std::span(&t.token, 1), false);
        alts.emplace_back(json::object{{"token", t_text},
                                       {"logprob", JsonLogprob(t.logprob)},
                                       {"bytes", BytesJson(tok.TokenBytes(t.token))}});
      }
      content.emplace_back(json::object{{"token", text},
                                        {"logprob", JsonLogprob(r.logprob)},
                                        {"bytes", BytesJson(tok.TokenBytes(id))},
                                        {"top_logprobs", std::move(alts)}});
      continue;
    }
    // Legacy completions: the sampled token always appears among the alternatives (OpenAI:
    // "up to logprobs + 1 elements").
    json::object alts;
    for (const engine::TokenLogprob& t : alternatives) {
      alts[tok.Decode(std::span(&t.token, 1), false)] = JsonLogprob(t.logprob);
    }
    alts[text] = JsonLogprob(r.logprob);
    tokens.emplace_back(text);
    token_logprobs.emplace_back(JsonLogprob(r.logprob));
    top.emplace_back(std::move(alts));
    offsets.emplace_back(c.text_offset);
    c.text_offset += NumChars(text);
  }
  if (ctx_.endpoint == Endpoint::kChatCompletions) {
    for (const json::value& v : content) c.lp_content.push_back(v);
    return json::object{{"content", std::move(content)}};
  }
  for (const json::value& v : tokens) c.lp_tokens.push_back(v);
  for (const json::value& v : token_logprobs) c.lp_token_logprobs.push_back(v);
  for (const json::value& v : top) c.lp_top.push_back(v);
  for (const json::value& v : offsets) c.lp_offsets.push_back(v);
  return json::object{{"tokens", std::move(tokens)},
                      {"token_logprobs", std::move(token_logprobs)},
                      {"top_logprobs", std::move(top)},
                      {"text_offset", std::move(offsets)}};
}

std::string ResponseBuilder::OnEvent(size_t prompt_index, const scheduler::TokenEvent& event) {
  SPW_CHECK(prompt_index < ctx_.num_prompts && event.index >= 0 && event.index < ctx_.n)
      << "event for choice " << event.index << " of prompt " << prompt_index;
  const size_t index = prompt_index * ctx_.n + event.index;
  Choice& c = choices_[index];
  if (event.usage.has_value()) {
    usage_.prompt_tokens += event.usage->prompt_tokens;
    usage_.completion_tokens += event.usage->completion_tokens;
    usage_.cached_tokens += event.usage->cached_tokens;
  }
  if (c.finish_reason.has_value()) return "";  // a usage-only event after the choice ended
  using scheduler::FinishReason;
  if (event.finish_reason == FinishReason::kError ||
      event.finish_reason == FinishReason::kCancelled) {
    if (error_.ok()) {
      error_ = !event.error.ok() ? event.error : absl::InternalError("generation failed");
    }
    c.finish_reason = "error";
    return "";
  }
  json::value logprobs = TakeLogprobs(c, event);
  c.text += event.text;
  const bool finished = event.finish_reason != FinishReason::kNone;
  if (finished) {
    c.finish_reason = std::string(FinishReasonName(event.finish_reason));
    if (event.stop_string) c.stop_reason = json::value(*event.stop_string);
    if (event.stop_token) c.stop_reason = json::value(int64_t{*event.stop_token});
  }
  if (!ctx_.stream || (event.text.empty() && !finished && logprobs.is_null())) return "";
  json::object choice;
  choice["index"] = index;
  if (ctx_.endpoint == Endpoint::kChatCompletions) {
    json::object delta;
    if (!event.text.empty()) delta["content"] = event.text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = event.text;
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finished ? json::value(*c.finish_reason) : json::value(nullptr);
  if (finished) choice["stop_reason"] = c.stop_reason;
  return Chunk(std::move(choice));
}

bool ResponseBuilder::all_finished() const {
  for (const Choice& c : choices_) {
    if (!c.finish_reason.has_value()) return false;
  }
  return true;
}

json::object ResponseBuilder::UsageJson() const {
  return {{"prompt_tokens", usage_.prompt_tokens},
          {"completion_tokens", usage_.completion_tokens},
          {"total_tokens", usage_.prompt_tokens + usage_.completion_tokens},
          {"prompt_tokens_details", json::object{{"cached_tokens", usage_.cached_tokens}}}};
}

std::string ResponseBuilder::StreamEnd() {
  std::string out;
  if (!error_.ok()) {
    json::object e = json::parse(ApiErrorJson(ApiErrorFromStatus(error_))).as_object();
    out += SseData(json::serialize(e));
  } else if (ctx_.include_usage) {
    json::object o = ChunkHead();
    o["choices"] = json::array();
    o["usage"] = UsageJson();
    out += SseData(json::serialize(o));
  }
  out += kSseDone;
  return out;
}

json::value ResponseBuilder::LogprobsJson(const Choice& c) const {
  if (ctx_.logprobs < 0) return nullptr;
  if (ctx_.endpoint == Endpoint::kChatCompletions) return json::object{{"content", c.lp_content}};
  return json::object{{"tokens", c.lp_tokens},
                      {"token_logprobs", c.lp_token_logprobs},
                      {"top_logprobs", c.lp_top},
                      {"text_offset", c.lp_offsets}};
}

std::string ResponseBuilder::FinalJson() const {
  const bool chat = ctx_.endpoint == Endpoint::kChatCompletions;
  json::object o;
  o["id"] = ctx_.id;
  o["object"] = chat ? "chat.completion" : "text_completion";
  o["created"] = ctx_.created_unix;
  o["model"] = ctx_.model;
  json::array choices;
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json::object choice;
    choice["index"] = i;
    if (chat) {
      choice["message"] = json::object{{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = LogprobsJson(c);
    choice["finish_reason"] = c.finish_reason ? json::value(*c.finish_reason) : nullptr;
    choice["stop_reason"] = c.stop_reason;
    choices.emplace_back(std::move(choice));
  }
  o["choices"] = std::move(choices);
  o["usage"] = UsageJson();
  return json::serialize(o);
}

}  // namespace spillway::server::openai
