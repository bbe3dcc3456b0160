#include "server/openai/request_parser.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/string_views.h"
#include "engine/sampler/sampling_params.h"
#include "server/openai/api_error.h"
#include "server/openai/json_fields.h"
#include "server/openai/prompt_input.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// Fields both endpoints share, before the prompt is known.
struct CommonFields {
  engine::SamplingParams sampling;
  scheduler::StopRules stop;
  std::optional<int64_t> max_tokens;
  int32_t n = 1;
  int32_t priority = 0;
  bool stream = false;
  bool include_usage = false;
  ResolvedModel model;  // the base model or a served adapter
};

absl::StatusOr<std::vector<std::pair<engine::TokenId, float>>> LogitBias(const FieldReader& r,
                                                                         const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(const json::object* bias, r.Object("logit_bias"));
  std::vector<std::pair<engine::TokenId, float>> out;
  if (bias == nullptr) return out;
  if (std::ssize(*bias) > model.limits.max_logit_bias) {
    return InvalidParamError(
        "logit_bias", absl::StrCat("'logit_bias' may hold at most ", model.limits.max_logit_bias,
                                   " entries, got ", bias->size()));
  }
  for (const auto& [key, value] : *bias) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(AbslSv(std::string_view(key)), &id) || id < 0 ||
        id >= model.tokenizer->vocab_size()) {
      return InvalidParamError(
          "logit_bias",
          absl::StrCat("'logit_bias' keys must be token ids in [0, ", model.tokenizer->vocab_size(),
                       "), got '", AbslSv(std::string_view(key)), "'"));
    }
    if (!value.is_number() || !std::isfinite(value.to_number<double>())) {
      return InvalidParamError("logit_bias", absl::StrCat("'logit_bias' values must be numbers, "
                                                          "got ",
                                                          JsonTypeName(value)));
    }
    // NOTE(http): OpenAI documents [-100, 100]; like vLLM we clamp rather than refuse.
    const double b = std::clamp(value.to_number<double>(), -100.0, 100.0);
    out.emplace_back(static_cast<engine::TokenId>(id), static_cast<float>(b));
  }
  return out;
}

absl::Status ParseSampling(const FieldReader& r, const ServedModel& model,
                           engine::SamplingParams& s) {
  SPW_ASSIGN_OR_RETURN(auto temperature, r.Number("temperature", 0, kInf));
  SPW_ASSIGN_OR_RETURN(auto top_p, r.Number("top_p", 0, 1, /*min_exclusive=*/true));
  SPW_ASSIGN_OR_RETURN(auto top_k, r.Int("top_k", -1, kInt32Max));
  SPW_ASSIGN_OR_RETURN(auto min_p, r.Number("min_p", 0, 1));
  SPW_ASSIGN_OR_RETURN(auto presence, r.Number("presence_penalty", -2, 2));
  SPW_ASSIGN_OR_RETURN(auto frequency, r.Number("frequency_penalty", -2, 2));
  SPW_ASSIGN_OR_RETURN(auto repetition, r.Number("repetition_penalty", 0, kInf, true));
  SPW_ASSIGN_OR_RETURN(auto seed, r.Int("seed", std::numeric_limits<int64_t>::min(),
                                        std::numeric_limits<int64_t>::max()));
  SPW_ASSIGN_OR_RETURN(s.logit_bias, LogitBias(r, model));
  if (temperature) s.temperature = static_cast<float>(*temperature);
  if (top_p) s.top_p = static_cast<float>(*top_p);
  if (top_k) s.top_k = static_cast<int32_t>(*top_k);
  if (min_p) s.min_p = static_cast<float>(*min_p);
  if (presence) s.presence_penalty = static_cast<float>(*presence);
  if (frequency) s.frequency_penalty = static_cast<float>(*frequency);
  if (repetition) s.repetition_penalty = static_cast<float>(*repetition);
  if (seed) s.seed = static_cast<uint64_t>(*seed);
  return absl::OkStatus();
}

absl::Status ParseStop(const FieldReader& r, const ServedModel& model, scheduler::StopRules& stop) {
  SPW_ASSIGN_OR_RETURN(auto strings, r.StringOrStrings("stop", model.limits.max_stop));
  if (strings) {
    // An empty stop string would end every choice at once; OpenAI and vLLM ignore it.
    for (std::string& s : *strings) {
      if (!s.empty()) stop.stop_strings.push_back(std::move(s));
    }
  }
  if (const json::value* ids = r.Find("stop_token_ids")) {  // vLLM's extension
    const json::array* a = ids->if_array();
    if (a == nullptr) {
      return InvalidParamError("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    }
    for (const json::value& v : *a) {
      std::optional<int64_t> id = AsInteger(v);
      if (!id || *id < 0 || *id >= model.tokenizer->vocab_size()) {
        return InvalidParamError("stop_token_ids",
                                 absl::StrCat("'stop_token_ids' must hold token ids in [0, ",
                                              model.tokenizer->vocab_size(), ")"));
      }
      stop.stop_token_ids.push_back(static_cast<engine::TokenId>(*id));
    }
  }
  SPW_ASSIGN_OR_RETURN(auto ignore_eos, r.Bool("ignore_eos"));
  SPW_ASSIGN_OR_RETURN(auto min_tokens, r.Int("min_tokens", 0, kInt32Max));
  if (ignore_eos) stop.ignore_eos = *ignore_eos;
  if (min_tokens) stop.min_tokens = static_cast<int32_t>(*min_tokens);
  return absl::OkStatus();
}

absl::Status ParseStreamFields(const FieldReader& r, CommonFields& c) {
  SPW_ASSIGN_OR_RETURN(auto stream, r.Bool("stream"));
  c.stream = stream.value_or(false);
  SPW_ASSIGN_OR_RETURN(const json::object* options, r.Object("stream_options"));
  if (options == nullptr) return absl::OkStatus();
  if (!c.stream) {
    return InvalidParamError("stream_options",
                             "'stream_options' is only allowed when 'stream' is true");
  }
  FieldReader o(*options);
  auto include_usage = o.Bool("include_usage");
  if (!include_usage.ok()) {
    return InvalidParamError("stream_options", StdSv(include_usage.status().message()));
  }
  c.include_usage = include_usage->value_or(false);
  return absl::OkStatus();
}

// The field name a message of engine::Validate starts with ("top_k must be ...").
std::string ValidateParam(std::string_view message) {
  std::string_view first = message.substr(0, message.find_first_of(" :"));
  return std::string(first.empty() ? "sampling" : first);
}

absl::StatusOr<CommonFields> ParseCommon(const json::object& body, const ServedModel& model,
                                         std::string_view max_tokens_field) {
  CommonFields c;
  SPW_ASSIGN_OR_RETURN(c.model, ResolveModelField(body, model));
  const FieldReader r(body);
  SPW_RETURN_IF_ERROR(ParseSampling(r, model, c.sampling));
  SPW_RETURN_IF_ERROR(ParseStop(r, model, c.stop));
  SPW_RETURN_IF_ERROR(ParseStreamFields(r, c));
  SPW_ASSIGN_OR_RETURN(c.max_tokens, r.Int(max_tokens_field, 1, kInt32Max));
  SPW_ASSIGN_OR_RETURN(auto n, r.Int("n", 1, model.limits.max_n));
  SPW_ASSIGN_OR_RETURN(auto best_of, r.Int("best_of", 1, model.limits.max_n));
  SPW_ASSIGN_OR_RETURN(auto priority,
                       r.Int("priority", std::numeric_limits<int32_t>::min(), kInt32Max));
  SPW_ASSIGN_OR_RETURN(auto user, r.String("user"));
  (void)user;  // accepted and ignored, as OpenAI's end-user id for abuse monitoring
  c.n = static_cast<int32_t>(n.value_or(1));
  c.priority = static_cast<int32_t>(priority.value_or(0));
  if (best_of && *best_of != c.n) {
    return InvalidParamError("best_of", "'best_of' different from 'n' is not supported");
  }
  if (c.stop.min_tokens > 0 && c.max_tokens && c.stop.min_tokens > *c.max_tokens) {
    return InvalidParamError("min_tokens",
                             absl::StrCat("'min_tokens' (", c.stop.min_tokens, ") must be <= '",
                                          AbslSv(max_tokens_field), "' (", *c.max_tokens, ")"));
  }
  if (absl::Status s = engine::Validate(c.sampling, model.tokenizer->vocab_size()); !s.ok()) {
    return InvalidParamError(ValidateParam(StdSv(s.message())), StdSv(s.message()));
  }
  return c;
}

// Builds the Request of one prompt, refusing a prompt that leaves no room for `max_tokens`.
absl::StatusOr<scheduler::Request> MakeRequest(const CommonFields& c,
                                               std::vector<engine::TokenId> prompt,
                                               std::optional<int64_t> max_tokens,
                                               const ServedModel& model, bool chat) {
  const int64_t num_prompt = std::ssize(prompt);
  const int64_t context = model.context_tokens;
  const std::string_view what = chat ? "messages" : "prompt";
  if (num_prompt >= context) {
    return WithParam(absl::InvalidArgumentError(absl::StrCat(
                         "This model's maximum context length is ", context,
                         " tokens. However, your request has ", num_prompt,
                         " input tokens. Please reduce the length of the ", AbslSv(what), ".")),
                     what, "context_length_exceeded");
  }
  const int64_t completion = max_tokens.value_or(context - num_prompt);
  if (num_prompt + completion > context) {
    return WithParam(
        absl::InvalidArgumentError(absl::StrCat(
            "This model's maximum context length is ", context, " tokens. However, you requested ",
            num_prompt + completion, " tokens (", num_prompt, " in the ", AbslSv(what), ", ",
            completion, " in the completion). Please reduce the length of the ", AbslSv(what),
            " or completion.")),
        what, "context_length_exceeded");
  }
  scheduler::Request request;
  request.prompt = std::move(prompt);
  request.sampling = c.sampling;
  request.stop = c.stop;
  request.stop.max_tokens = static_cast<int32_t>(completion);
  request.n = c.n;
  request.priority = c.priority;
  request.adapter = c.model.adapter;
  return request;
}

GenerationSpec SpecFrom(const CommonFields& c, Endpoint endpoint) {
  GenerationSpec spec;
  spec.endpoint = endpoint;
  spec.stream = c.stream;
  spec.include_usage = c.include_usage;
  spec.n = c.n;
  spec.model_name = c.model.name;
  return spec;
}

}  // namespace

absl::Status CheckModelField(const json::object& body, const ServedModel& model) {
  return ResolveModelField(body, model).status();
}

absl::StatusOr<ResolvedModel> ResolveModel(std::string_view name, const ServedModel& model) {
  if (name == model.name) return ResolvedModel{.name = model.name, .adapter = {}};
  if (model.adapters != nullptr) {
    if (std::optional<adapters::ResolvedAdapter> a = model.adapters->Find(name); a.has_value()) {
      return ResolvedModel{.name = std::move(a->info.name), .adapter = std::move(a->ref)};
    }
  }
  return ModelNotFoundError(name);
}

absl::StatusOr<ResolvedModel> ResolveModelField(const json::object& body,
                                                const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(auto name, FieldReader(body).String("model"));
  if (!name) return ResolvedModel{.name = model.name, .adapter = {}};
  return ResolveModel(*name, model);
}

absl::StatusOr<GenerationSpec> ParseCompletionRequest(std::string_view body,
                                                      const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(json::object o, ParseJsonBody(body));
  SPW_ASSIGN_OR_RETURN(CommonFields c, ParseCommon(o, model, "max_tokens"));
  const FieldReader r(o);
  SPW_ASSIGN_OR_RETURN(auto logprobs, r.Int("logprobs", 0, model.limits.max_logprobs));
  SPW_ASSIGN_OR_RETURN(auto echo, r.Bool("echo"));
  SPW_ASSIGN_OR_RETURN(auto suffix, r.String("suffix"));
  if (suffix && !suffix->empty()) {
    return InvalidParamError("suffix", "'suffix' is not supported");
  }
  const json::value* prompt = r.Find("prompt");
  if (prompt == nullptr) return InvalidParamError("prompt", "'prompt' is required");
  SPW_ASSIGN_OR_RETURN(std::vector<PromptInput> prompts, CompletionPrompts(*prompt, model));

  GenerationSpec spec = SpecFrom(c, Endpoint::kCompletions);
  spec.logprobs = static_cast<int32_t>(logprobs.value_or(-1));
  spec.echo = echo.value_or(false);
  if (spec.echo && spec.logprobs >= 0) {
    // NOTE(http): echo with logprobs needs the prompt tokens' logprobs, which the engine does
    // not compute yet; refusing beats returning nulls that look like data.
    return InvalidParamError("echo", "'echo' together with 'logprobs' is not supported yet");
  }
  const int64_t max_tokens = c.max_tokens.value_or(model.limits.default_completion_max_tokens);
  for (PromptInput& p : prompts) {
    SPW_ASSIGN_OR_RETURN(scheduler::Request request,
                         MakeRequest(c, std::move(p.tokens), max_tokens, model, false));
    request.sampling.logprobs = spec.logprobs;
    spec.requests.push_back(std::move(request));
    if (spec.echo) spec.echo_texts.push_back(std::move(p.text));
  }
  return spec;
}

absl::StatusOr<GenerationSpec> ParseChatRequest(std::string_view body, const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(json::object o, ParseJsonBody(body));
  // max_completion_tokens replaces the deprecated max_tokens; it wins when both are given.
  const bool new_field = FieldReader(o).Find("max_completion_tokens") != nullptr;
  SPW_ASSIGN_OR_RETURN(CommonFields c,
                       ParseCommon(o, model, new_field ? "max_completion_tokens" : "max_tokens"));
  const FieldReader r(o);
  SPW_ASSIGN_OR_RETURN(auto logprobs, r.Bool("logprobs"));
  SPW_ASSIGN_OR_RETURN(auto top_logprobs, r.Int("top_logprobs", 0, model.limits.max_logprobs));
  SPW_ASSIGN_OR_RETURN(auto add_generation_prompt, r.Bool("add_generation_prompt"));
  if (top_logprobs && !logprobs.value_or(false)) {
    return InvalidParamError("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
  }
  if (const json::value* tools = r.Find("tools");
      tools != nullptr && !(tools->is_array() && tools->get_array().empty())) {
    return InvalidParamError("tools", "'tools' (function calling) is not supported");
  }
  SPW_ASSIGN_OR_RETURN(const json::object* format, r.Object("response_format"));
  if (format != nullptr) {
    const json::value* type = format->if_contains("type");
    if (type == nullptr || !type->is_string() || type->get_string() != "text") {
      return InvalidParamError("response_format",
                               "only 'response_format' {\"type\": \"text\"} is supported");
    }
  }
  const json::value* messages = r.Find("messages");
  if (messages == nullptr) return InvalidParamError("messages", "'messages' is required");
  SPW_ASSIGN_OR_RETURN(std::string text,
                       RenderChat(*messages, add_generation_prompt.value_or(true), model));
  std::vector<engine::TokenId> tokens = TokenizeChat(text, model);
  if (tokens.empty()) return InvalidParamError("messages", "the messages render to 0 tokens");

  GenerationSpec spec = SpecFrom(c, Endpoint::kChatCompletions);
  spec.logprobs = logprobs.value_or(false) ? static_cast<int32_t>(top_logprobs.value_or(0)) : -1;
  SPW_ASSIGN_OR_RETURN(scheduler::Request request,
                       MakeRequest(c, std::move(tokens), c.max_tokens, model, true));
  request.sampling.logprobs = spec.logprobs;
  spec.requests.push_back(std::move(request));
  return spec;
}

}  // namespace spillway::server::openai
