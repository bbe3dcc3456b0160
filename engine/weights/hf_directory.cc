#include "engine/weights/hf_directory.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/string_views.h"
#include "engine/weights/internal/mapped_file.h"
#include "engine/weights/safetensors_reader.h"
#include "engine/weights/tokenizer_json.h"

namespace spillway::engine {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

// Parses a non-negative decimal integer that fills all of `s`.
std::optional<int64_t> ParseIndex(std::string_view s) {
  int64_t value = -1;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < 0) return std::nullopt;
  return value;
}

// ---- JSON field access with messages that name the file and the field. -------------------

class JsonFields {
 public:
  JsonFields(const json::object& obj, std::string_view where) : obj_(obj), where_(where) {}

  // The value of `key`, or nullptr when absent or null.
  const json::value* Get(std::string_view key) const {
    const json::value* v = obj_.if_contains(key);
    return (v == nullptr || v->is_null()) ? nullptr : v;
  }

  absl::Status Missing(std::string_view key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(where_, ": required field \"", AbslSv(key), "\" is missing"));
  }
  absl::Status Bad(std::string_view key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(where_, ": field \"", AbslSv(key), "\" ", AbslSv(what)));
  }

  absl::StatusOr<std::optional<int64_t>> OptInt(std::string_view key) const {
    const json::value* v = Get(key);
    if (v == nullptr) return std::optional<int64_t>();
    if (v->is_int64()) return std::optional<int64_t>(v->get_int64());
    if (v->is_uint64() && v->get_uint64() <= std::numeric_limits<int64_t>::max()) {
      return std::optional<int64_t>(static_cast<int64_t>(v->get_uint64()));
    }
    return Bad(key, absl::StrCat("is ", json::serialize(*v), ", not an integer"));
  }

  // A required integer >= 1.
  absl::StatusOr<int64_t> PositiveInt(std::string_view key) const {
    SPW_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(key));
    if (!v.has_value()) return Missing(key);
    if (*v < 1) return Bad(key, absl::StrCat("is ", *v, "; it must be at least 1"));
    return *v;
  }

  absl::StatusOr<std::optional<double>> OptNumber(std::string_view key) const {
    const json::value* v = Get(key);
    if (v == nullptr) return std::optional<double>();
    if (v->is_double()) return std::optional<double>(v->get_double());
    if (v->is_int64()) return std::optional<double>(static_cast<double>(v->get_int64()));
    if (v->is_uint64()) return std::optional<double>(static_cast<double>(v->get_uint64()));
    return Bad(key, absl::StrCat("is ", json::serialize(*v), ", not a number"));
  }

  absl::StatusOr<double> PositiveNumber(std::string_view key, double default_value) const {
    SPW_ASSIGN_OR_RETURN(std::optional<double> v, OptNumber(key));
    if (!v.has_value()) return default_value;
    if (!(*v > 0.0) || !std::isfinite(*v)) {
      return Bad(key, absl::StrCat("is ", *v, "; it must be a positive number"));
    }
    return *v;
  }

  absl::StatusOr<bool> Bool(std::string_view key, bool default_value) const {
    const json::value* v = Get(key);
    if (v == nullptr) return default_value;
    if (!v->is_bool()) return Bad(key, absl::StrCat("is ", json::serialize(*v), ", not a boolean"));
    return v->get_bool();
  }

  absl::StatusOr<std::optional<std::string>> OptString(std::string_view key) const {
    const json::value* v = Get(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) {
      return Bad(key, absl::StrCat("is ", json::serialize(*v), ", not a string"));
    }
    return std::optional<std::string>(std::string(v->get_string()));
  }

 private:
  const json::object& obj_;
  std::string where_;
};

absl::StatusOr<json::value> ParseJson(std::string_view text, std::string_view where) {
  try {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec)
      return absl::InvalidArgumentError(
          absl::StrCat(AbslSv(where), ": invalid JSON: ", ec.message()));
    return v;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslSv(where), ": cannot parse JSON: ", e.what()));
  }
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const json::object& obj) {
  const JsonFields f(obj, "config.json rope_scaling");
  SPW_ASSIGN_OR_RETURN(std::optional<std::string> type, f.OptString("rope_type"));
  if (!type.has_value()) {
    SPW_ASSIGN_OR_RETURN(type, f.OptString("type"));
  }
  RopeScaling scaling;
  if (!type.has_value() || *type == "default") return scaling;
  if (*type == "linear") {
    scaling.kind = RopeScaling::Kind::kLinear;
    SPW_ASSIGN_OR_RETURN(double factor, f.PositiveNumber("factor", 1.0));
    scaling.factor = static_cast<float>(factor);
    return scaling;
  }
  if (*type == "llama3") {
    scaling.kind = RopeScaling::Kind::kLlama3;
    SPW_ASSIGN_OR_RETURN(double factor, f.PositiveNumber("factor", 8.0));
    SPW_ASSIGN_OR_RETURN(double low, f.PositiveNumber("low_freq_factor", 1.0));
    SPW_ASSIGN_OR_RETURN(double high, f.PositiveNumber("high_freq_factor", 4.0));
    SPW_ASSIGN_OR_RETURN(std::optional<int64_t> original,
                         f.OptInt("original_max_position_embeddings"));
    if (!(high > low)) {
      return f.Bad("high_freq_factor",
                   absl::StrCat("is ", high, "; it must exceed low_freq_factor (", low, ")"));
    }
    scaling.factor = static_cast<float>(factor);
    scaling.low_freq_factor = static_cast<float>(low);
    scaling.high_freq_factor = static_cast<float>(high);
    if (original.has_value()) {
      if (*original < 1) return f.Bad("original_max_position_embeddings", "must be positive");
      scaling.original_context = *original;
    }
    return scaling;
  }
  return absl::UnimplementedError(
      absl::StrCat("config.json: rope_scaling type \"", *type,
                   "\" is not supported (spillway supports \"linear\" and \"llama3\")"));
}

// ---- Files. -------------------------------------------------------------------------------

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  SPW_ASSIGN_OR_RETURN(internal::MappedFile file, internal::MappedFile::Open(path.string()));
  if (file.size() == 0) return std::string();
  return std::string(reinterpret_cast<const char*>(file.data()), file.size());
}

bool IsRegularFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// A shard named in model.safetensors.index.json must be a file inside the directory.
bool IsPlainRelativePath(std::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  for (const fs::path& part : fs::path(name)) {
    if (part == "..") return false;
  }
  return true;
}

// Parses "blk.<N>.rest" and returns N, or -1 for a name without a layer number.
int64_t LayerOf(std::string_view gguf_name) {
  if (!gguf_name.starts_with("blk.")) return -1;
  gguf_name.remove_prefix(4);
  const size_t dot = gguf_name.find('.');
  if (dot == std::string_view::npos) return -1;
  return ParseIndex(gguf_name.substr(0, dot)).value_or(-1);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("{", absl::StrJoin(shape, ", "), "}");
}

// ---- The model file. ----------------------------------------------------------------------

class HfModelFile final : public ModelFile {
 public:
  [[nodiscard]] absl::Status Load(const fs::path& dir);

 private:
  [[nodiscard]] absl::Status LoadWeights(const fs::path& dir);
  [[nodiscard]] absl::Status AddShardTensors(const SafetensorsFile& shard,
                                             const std::set<std::string>* only);
  [[nodiscard]] absl::Status CheckTensors(const fs::path& dir);
  [[nodiscard]] absl::Status LoadTokenizer(const fs::path& dir);

  std::vector<SafetensorsFile> shards_;  // the mappings behind tensors_
};

absl::Status HfModelFile::Load(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  if (!IsRegularFile(config_path)) {
    return absl::NotFoundError(absl::StrCat(
        dir.string(), " is not a Hugging Face model directory: it has no config.json"));
  }
  SPW_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path));
  const std::string name =
      dir.filename().empty() ? dir.parent_path().filename().string() : dir.filename().string();
  absl::StatusOr<ModelConfig> config = ParseHfConfig(config_text, name);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(dir.string(), ": ", config.status().message()));
  }
  config_ = *std::move(config);
  SPW_RETURN_IF_ERROR(LoadWeights(dir));
  SPW_RETURN_IF_ERROR(CheckTensors(dir));
  return LoadTokenizer(dir);
}

absl::Status HfModelFile::LoadWeights(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (IsRegularFile(index)) {
    SPW_ASSIGN_OR_RETURN(std::string text, ReadFile(index));
    SPW_ASSIGN_OR_RETURN(json::value root, ParseJson(text, index.string()));
    const json::value* map_v =
        root.is_object() ? root.get_object().if_contains("weight_map") : nullptr;
    if (map_v == nullptr || !map_v->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index.string(), ": \"weight_map\" is missing or not an object"));
    }
    std::map<std::string, std::set<std::string>> by_shard;
    for (const auto& [tensor, shard_v] : map_v->get_object()) {
      if (!shard_v.is_string() || !IsPlainRelativePath(shard_v.get_string())) {
        return absl::InvalidArgumentError(
            absl::StrCat(index.string(), ": weight_map entry for \"", AbslSv(tensor), "\" is ",
                         json::serialize(shard_v), ", not the name of a file in the directory"));
      }
      by_shard[std::string(shard_v.get_string())].insert(std::string(tensor));
    }
    if (by_shard.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map is empty"));
    }
    for (const auto& [shard_name, names] : by_shard) {
      SPW_ASSIGN_OR_RETURN(SafetensorsFile shard,
                           SafetensorsFile::Open((dir / shard_name).string()));
      for (const std::string& name : names) {
        if (shard.Find(name) == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(index.string(), " puts tensor \"", name,
                                                         "\" in ", shard_name,
                                                         ", but that file has no such tensor"));
        }
      }
      SPW_RETURN_IF_ERROR(AddShardTensors(shard, &names));
      shards_.push_back(std::move(shard));
    }
    return absl::OkStatus();
  }
  if (IsRegularFile(single)) {
    SPW_ASSIGN_OR_RETURN(SafetensorsFile shard, SafetensorsFile::Open(single.string()));
    SPW_RETURN_IF_ERROR(AddShardTensors(shard, nullptr));
    shards_.push_back(std::move(shard));
    return absl::OkStatus();
  }
  return absl::NotFoundError(
      absl::StrCat(dir.string(),
                   " has neither model.safetensors nor model.safetensors.index.json"
                   " (spillway reads safetensors weights only)"));
}

absl::Status HfModelFile::AddShardTensors(const SafetensorsFile& shard,
                                          const std::set<std::string>* only) {
  for (const SafetensorsTensor& t : shard.tensors()) {
    if (only != nullptr && !only->contains(t.name)) continue;
    // NOTE(hf): old Llama checkpoints store the RoPE inverse frequencies; they follow from
    // the config, so they are skipped rather than trusted.
    if (t.name.ends_with(".rotary_emb.inv_freq")) continue;
    std::optional<std::string> gguf_name = HfTensorNameToGguf(t.name);
    if (!gguf_name.has_value()) {
      return absl::UnimplementedError(
          absl::StrCat(shard.path(), ": tensor \"", t.name, "\" is not used by spillway's ",
                       config_.architecture, " model (unsupported checkpoint layout)"));
    }
    WeightTensor w;
    w.name = *gguf_name;
    w.type = t.type;
    w.shape.assign(t.shape.rbegin(), t.shape.rend());
    w.data = t.data;
    w.nbytes = t.nbytes;
    if (!tensors_.emplace(w.name, w).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard.path(), ": tensor \"", t.name, "\" appears in more than one shard"));
    }
  }
  return absl::OkStatus();
}

absl::Status HfModelFile::CheckTensors(const fs::path& dir) {
  // NOTE(hf): with tie_word_embeddings Hugging Face uses the embedding as the lm head even if
  // the file also stores lm_head.weight, so do we; without lm_head.weight we tie regardless.
  if (config_.tied_embeddings || !tensors_.contains("output.weight")) {
    config_.tied_embeddings = true;
    tensors_.erase("output.weight");
  }
  const std::vector<ExpectedTensor> expected = ExpectedTensors(config_);
  std::set<std::string> expected_names;
  for (const ExpectedTensor& e : expected) {
    expected_names.insert(e.name);
    auto it = tensors_.find(e.name);
    if (it == tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir.string(), ": tensor ", e.name, " is missing (config: ", config_.num_layers,
          " layers, architecture ", config_.architecture, ")"));
    }
    if (it->second.shape != e.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir.string(), ": tensor ", e.name, " has shape ", ShapeString(it->second.shape),
          " (ggml order) but config.json implies ", ShapeString(e.shape)));
    }
  }
  for (const auto& [name, tensor] : tensors_) {
    if (expected_names.contains(name)) continue;
    const int64_t layer = LayerOf(name);
    if (layer >= config_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": tensor ", name, " belongs to layer ", layer,
                       " but config.json has num_hidden_layers = ", config_.num_layers));
    }
    return absl::UnimplementedError(absl::StrCat(dir.string(), ": tensor ", name,
                                                 " is not used by a ", config_.architecture,
                                                 " model with this config.json"));
  }
  return absl::OkStatus();
}

absl::Status HfModelFile::LoadTokenizer(const fs::path& dir) {
  const fs::path tokenizer_path = dir / "tokenizer.json";
  if (!IsRegularFile(tokenizer_path)) {
    return absl::NotFoundError(absl::StrCat(
        dir.string(), " has no tokenizer.json (spillway does not read tokenizer.model)"));
  }
  SPW_ASSIGN_OR_RETURN(std::string tokenizer_text, ReadFile(tokenizer_path));
  std::string config_text = "{}";
  if (IsRegularFile(dir / "tokenizer_config.json")) {
    SPW_ASSIGN_OR_RETURN(config_text, ReadFile(dir / "tokenizer_config.json"));
  }
  absl::StatusOr<TokenizerSpec> spec = ParseTokenizerJson(tokenizer_text, config_text);
  if (!spec.ok()) {
    return absl::Status(spec.status().code(),
                        absl::StrCat(dir.string(), ": ", spec.status().message()));
  }
  tokenizer_ = *std::move(spec);
  if (std::ssize(tokenizer_.tokens) > config_.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir.string(), ": tokenizer.json has ", tokenizer_.tokens.size(),
                     " tokens but config.json vocab_size is ", config_.vocab_size));
  }

  // generation_config.json may list several end ids (Llama 3: <|end_of_text|>, <|eot_id|>).
  const fs::path gen_path = dir / "generation_config.json";
  if (IsRegularFile(gen_path)) {
    SPW_ASSIGN_OR_RETURN(std::string gen_text, ReadFile(gen_path));
    SPW_ASSIGN_OR_RETURN(json::value gen, ParseJson(gen_text, gen_path.string()));
    const json::value* eos =
        gen.is_object() ? gen.get_object().if_contains("eos_token_id") : nullptr;
    std::vector<int64_t> ids;
    if (eos != nullptr && eos->is_int64()) ids.push_back(eos->get_int64());
    if (eos != nullptr && eos->is_array()) {
      for (const json::value& v : eos->get_array()) {
        if (v.is_int64()) ids.push_back(v.get_int64());
      }
    }
    for (int64_t id : ids) {
      if (id < 0 || id >= std::ssize(tokenizer_.tokens)) {
        return absl::InvalidArgumentError(absl::StrCat(gen_path.string(), ": eos_token_id ", id,
                                                       " is not a token of tokenizer.json"));
      }
      const TokenId tid = static_cast<TokenId>(id);
      if (tid != tokenizer_.eos_id &&
          std::find(tokenizer_.eot_ids.begin(), tokenizer_.eot_ids.end(), tid) ==
              tokenizer_.eot_ids.end()) {
        tokenizer_.eot_ids.push_back(tid);
      }
    }
  }

  absl::StatusOr<std::string> chat_template = ChatTemplateFromTokenizerConfig(config_text);
  if (!chat_template.ok()) {
    return absl::Status(chat_template.status().code(),
                        absl::StrCat(dir.string(), ": ", chat_template.status().message()));
  }
  chat_template_ = *std::move(chat_template);
  if (chat_template_.empty() && IsRegularFile(dir / "chat_template.jinja")) {
    SPW_ASSIGN_OR_RETURN(chat_template_, ReadFile(dir / "chat_template.jinja"));
  }
  return absl::OkStatus();
}

// model_type and the features that select or rule out an architecture; returns model_type.
absl::StatusOr<std::string> ParseArchitecture(const JsonFields& f, ModelConfig* c) {
  SPW_ASSIGN_OR_RETURN(std::optional<std::string> model_type, f.OptString("model_type"));
  if (!model_type.has_value()) return f.Missing("model_type");
  if (*model_type == "llama" || *model_type == "mistral") {
    c->architecture = "llama";
  } else if (*model_type == "qwen2") {
    c->architecture = "qwen2";
    c->qkv_bias = true;
  } else {
    return absl::UnimplementedError(
        absl::StrCat("config.json: model_type \"", *model_type,
                     "\" is not supported (spillway runs llama, mistral and qwen2)"));
  }
  SPW_ASSIGN_OR_RETURN(std::optional<std::string> act, f.OptString("hidden_act"));
  if (act.has_value() && *act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat("config.json: hidden_act \"", *act, "\" is not supported (only silu)"));
  }
  SPW_ASSIGN_OR_RETURN(bool attention_bias, f.Bool("attention_bias", false));
  SPW_ASSIGN_OR_RETURN(bool mlp_bias, f.Bool("mlp_bias", false));
  if (attention_bias || mlp_bias) {
    return absl::UnimplementedError(
        absl::StrCat("config.json: ", attention_bias ? "attention_bias" : "mlp_bias",
                     " = true is not supported for model_type \"", *model_type, "\""));
  }
  return *model_type;
}

// Layer count and the attention / head sizes.
[[nodiscard]] absl::Status ParseSizes(const JsonFields& f, ModelConfig* c) {
  SPW_ASSIGN_OR_RETURN(c->num_layers, f.PositiveInt("num_hidden_layers"));
  SPW_ASSIGN_OR_RETURN(c->hidden, f.PositiveInt("hidden_size"));
  SPW_ASSIGN_OR_RETURN(c->num_heads, f.PositiveInt("num_attention_heads"));
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, f.OptInt("num_key_value_heads"));
  c->num_kv_heads = kv_heads.value_or(c->num_heads);
  if (c->num_kv_heads < 1 || c->num_heads % c->num_kv_heads != 0) {
    return f.Bad("num_key_value_heads",
                 absl::StrCat("is ", c->num_kv_heads, "; it must divide num_attention_heads (",
                              c->num_heads, ")"));
  }
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, f.OptInt("head_dim"));
  if (head_dim.has_value()) {
    if (*head_dim < 1) return f.Bad("head_dim", absl::StrCat("is ", *head_dim));
    c->head_dim = *head_dim;
  } else {
    if (c->hidden % c->num_heads != 0) {
      return f.Bad("hidden_size",
                   absl::StrCat("is ", c->hidden, ", not a multiple of num_attention_heads (",
                                c->num_heads, "), and head_dim is not given"));
    }
    c->head_dim = c->hidden / c->num_heads;
  }
  if (c->head_dim % 2 != 0) {
    return f.Bad("head_dim", absl::StrCat("is ", c->head_dim, "; RoPE needs an even head_dim"));
  }
  return absl::OkStatus();
}

// FFN and vocabulary sizes, context, norm epsilon, RoPE and embedding tying.
[[nodiscard]] absl::Status ParseRest(const JsonFields& f, std::string_view model_type,
                                     ModelConfig* c) {
  SPW_ASSIGN_OR_RETURN(c->ffn_hidden, f.PositiveInt("intermediate_size"));
  SPW_ASSIGN_OR_RETURN(c->vocab_size, f.PositiveInt("vocab_size"));
  SPW_ASSIGN_OR_RETURN(c->context_length, f.PositiveInt("max_position_embeddings"));
  SPW_ASSIGN_OR_RETURN(double eps, f.PositiveNumber("rms_norm_eps", 1e-6));
  c->rms_eps = static_cast<float>(eps);
  SPW_ASSIGN_OR_RETURN(double theta, f.PositiveNumber("rope_theta", 10000.0));
  c->rope_theta = static_cast<float>(theta);
  c->rope_style = RopeStyle::kNeox;
  c->rope_dims = c->head_dim;
  if (const json::value* rs = f.Get("rope_scaling"); rs != nullptr) {
    if (!rs->is_object()) return f.Bad("rope_scaling", "is not an object or null");
    SPW_ASSIGN_OR_RETURN(c->rope_scaling, ParseRopeScaling(rs->get_object()));
  }
  SPW_ASSIGN_OR_RETURN(c->tied_embeddings, f.Bool("tie_word_embeddings", false));

  // NOTE(hf): spillway has no sliding-window attention. Mistral v0.1 sets sliding_window =
  // 4096 < max_position_embeddings; capping the context at the window keeps results exact.
  // Qwen2 lists a window but only uses it with use_sliding_window = true.
  SPW_ASSIGN_OR_RETURN(bool use_sliding_window,
                       f.Bool("use_sliding_window", model_type == "mistral"));
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> window, f.OptInt("sliding_window"));
  if (use_sliding_window && window.has_value() && *window >= 1) {
    c->context_length = std::min(c->context_length, *window);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view config_json, std::string_view name) {
  SPW_ASSIGN_OR_RETURN(json::value root, ParseJson(config_json, "config.json"));
  if (!root.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  const JsonFields f(root.get_object(), "config.json");
  ModelConfig c;
  c.name = std::string(name);
  SPW_ASSIGN_OR_RETURN(const std::string model_type, ParseArchitecture(f, &c));
  SPW_RETURN_IF_ERROR(ParseSizes(f, &c));
  SPW_RETURN_IF_ERROR(ParseRest(f, model_type, &c));
  return c;
}

std::optional<std::string> HfTensorNameToGguf(std::string_view hf_name) {
  if (hf_name == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf_name == "model.norm.weight") return "output_norm.weight";
  if (hf_name == "lm_head.weight") return "output.weight";
  std::string_view rest = hf_name;
  if (!rest.starts_with("model.layers.")) return std::nullopt;
  rest.remove_prefix(std::string_view("model.layers.").size());
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const std::optional<int64_t> layer = ParseIndex(rest.substr(0, dot));
  if (!layer.has_value()) return std::nullopt;
  rest.remove_prefix(dot + 1);
  static constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  for (const auto& [hf, gguf] : kLayerNames) {
    if (rest == hf) return absl::StrCat("blk.", *layer, ".", AbslSv(gguf));
  }
  return std::nullopt;
}

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  std::vector<ExpectedTensor> out = {
      {"token_embd.weight", {c.hidden, c.vocab_size}},
      {"output_norm.weight", {c.hidden}},
  };
  if (!c.tied_embeddings) out.push_back({"output.weight", {c.hidden, c.vocab_size}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("blk.", i, ".");
    out.push_back({p + "attn_norm.weight", {c.hidden}});
    out.push_back({p + "attn_q.weight", {c.hidden, q_dim}});
    out.push_back({p + "attn_k.weight", {c.hidden, kv_dim}});
    out.push_back({p + "attn_v.weight", {c.hidden, kv_dim}});
    out.push_back({p + "attn_output.weight", {q_dim, c.hidden}});
    if (c.qkv_bias) {
      out.push_back({p + "attn_q.bias", {q_dim}});
      out.push_back({p + "attn_k.bias", {kv_dim}});
      out.push_back({p + "attn_v.bias", {kv_dim}});
    }
    out.push_back({p + "ffn_norm.weight", {c.hidden}});
    out.push_back({p + "ffn_gate.weight", {c.hidden, c.ffn_hidden}});
    out.push_back({p + "ffn_up.weight", {c.hidden, c.ffn_hidden}});
    out.push_back({p + "ffn_down.weight", {c.ffn_hidden, c.hidden}});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ModelFile>> OpenHfDirectory(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, " is not a directory"));
  }
  auto file = std::make_unique<HfModelFile>();
  SPW_RETURN_IF_ERROR(file->Load(fs::path(path)));
  return std::unique_ptr<ModelFile>(std::move(file));
}

}  // namespace spillway::engine
