#include "server/openai/info_endpoints.h"

#include <boost/json.hpp>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/openai/api_error.h"
#include "server/openai/json_fields.h"
#include "server/openai/prompt_input.h"
#include "server/openai/request_parser.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

}  // namespace

std::string ModelsJson(const ServedModel& model) {
  json::object m{
      {"id", model.name},       {"object", "model"},  {"created", model.created_unix},
      {"owned_by", "spillway"}, {"root", model.path}, {"max_model_len", model.context_tokens}};
  json::array data;
  data.emplace_back(std::move(m));
  // Served LoRA adapters, as vLLM lists them: `parent` the base model, `root` the source.
  if (model.adapters != nullptr) {
    for (const adapters::AdapterInfo& a : model.adapters->List()) {
      data.emplace_back(json::object{{"id", a.name},
                                     {"object", "model"},
                                     {"created", a.created_unix},
                                     {"owned_by", "spillway"},
                                     {"root", a.source},
                                     {"parent", model.name},
                                     {"max_model_len", model.context_tokens}});
    }
  }
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

namespace {

// The lower KV tiers' occupancy and traffic (docs/kv-tiers.md); null without tiers.
json::value KvTiersJson(const scheduler::EngineStats& s) {
  if (!s.tiers.has_value()) return nullptr;
  const kvcache::TierStats& t = *s.tiers;
  json::object o{{"host_blocks", t.host_used},
                 {"host_total_blocks", t.host_slots},
                 {"spilled_device_host", t.spills_device_host},
                 {"spilled_host_disk", t.spills_host_disk},
                 {"loaded_host_device", t.loads_host_device},
                 {"loaded_disk_host", t.loads_disk_host}};
  if (t.disk_enabled) {
    o["disk_blocks"] = t.disk_blocks;
    o["disk_total_blocks"] = t.disk_capacity_blocks;
    o["disk_degraded"] = t.disk_degraded;
  }
  return o;
}

}  // namespace

std::string HealthJson(const ServedModel& model, const scheduler::EngineStats& s,
                       int64_t num_active_generations) {
  return json::serialize(json::object{
      {"status", "ok"},
      {"model", model.name},
      {"running_seqs", s.running_seqs},
      {"waiting_requests", s.waiting_requests},
      {"kv_used_blocks", s.kv_used_blocks},
      {"kv_cached_blocks", s.kv_cached_blocks},
      {"kv_total_blocks", s.kv_total_blocks},
      {"kv_reserved_blocks", s.kv_reserved_blocks},
      {"preemptions", s.preemptions},
      {"prefix_cache_queries", s.prefix_cache_queries},
      {"prefix_cache_hits", s.prefix_cache_hits},
      {"steps", s.steps},
      {"active_generations", num_active_generations},
      {"kv_tiers", KvTiersJson(s)},
  });
}

absl::StatusOr<std::string> Tokenize(std::string_view body, const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(json::object o, ParseJsonBody(body));
  SPW_RETURN_IF_ERROR(CheckModelField(o, model));
  const FieldReader r(o);
  SPW_ASSIGN_OR_RETURN(auto add_special, r.Bool("add_special_tokens"));
  SPW_ASSIGN_OR_RETURN(auto add_generation_prompt, r.Bool("add_generation_prompt"));
  SPW_ASSIGN_OR_RETURN(auto token_strs, r.Bool("return_token_strs"));
  std::vector<engine::TokenId> tokens;
  if (const json::value* messages = r.Find("messages")) {
    SPW_ASSIGN_OR_RETURN(std::string text,
                         RenderChat(*messages, add_generation_prompt.value_or(true), model));
    tokens = model.tokenizer->Encode(text, add_special.value_or(false), /*parse_special=*/true);
  } else {
    SPW_ASSIGN_OR_RETURN(auto prompt, r.String("prompt"));
    if (!prompt) {
      return InvalidParamError("prompt", "'prompt' (a string) or 'messages' is required");
    }
    tokens = model.tokenizer->Encode(*prompt, add_special.value_or(true), /*parse_special=*/true);
  }
  json::array ids, strs;
  for (engine::TokenId t : tokens) {
    ids.emplace_back(t);
    if (token_strs.value_or(false)) strs.emplace_back(model.tokenizer->TokenPiece(t));
  }
  return json::serialize(json::object{
      {"count", tokens.size()},
      {"max_model_len", model.context_tokens},
      {"tokens", std::move(ids)},
      {"token_strs", token_strs.value_or(false) ? json::value(std::move(strs)) : nullptr}});
}

absl::StatusOr<std::string> Detokenize(std::string_view body, const ServedModel& model) {
  SPW_ASSIGN_OR_RETURN(json::object o, ParseJsonBody(body));
  SPW_RETURN_IF_ERROR(CheckModelField(o, model));
  const json::value* tokens = FieldReader(o).Find("tokens");
  if (tokens == nullptr || !tokens->is_array()) {
    return InvalidParamError("tokens", "'tokens' must be a list of token ids");
  }
  std::vector<engine::TokenId> ids;
  for (const json::value& v : tokens->get_array()) {
    std::optional<int64_t> id = AsInteger(v);
    if (!id || *id < 0 || *id >= model.tokenizer->vocab_size()) {
      return InvalidParamError("tokens", absl::StrCat("'tokens' must hold token ids in [0, ",
                                                      model.tokenizer->vocab_size(), ")"));
    }
    ids.push_back(static_cast<engine::TokenId>(*id));
  }
  return json::serialize(
      json::object{{"prompt", model.tokenizer->Decode(ids, /*skip_special=*/false)}});
}

}  // namespace spillway::server::openai
