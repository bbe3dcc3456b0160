// OpenGguf: GGUF metadata -> ModelConfig / TokenizerSpec, tensors -> WeightTensor views into
// the mapping. OpenModelFile picks the reader.
#include "engine/weights/model_file.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/weights/gguf_reader.h"
#include "engine/weights/internal/mapped_file.h"

namespace spillway::engine {
namespace {

class GgufModelFile final : public ModelFile {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFile>> Open(const std::string& path);

 private:
  absl::Status ReadConfig(const GgufContents& gguf);
  absl::Status ReadTokenizer(const GgufContents& gguf);
  absl::Status CheckTensors() const;

  internal::MappedFile file_;
};

class Metadata {
 public:
  explicit Metadata(const GgufContents& gguf) : gguf_(gguf) {}

  const GgufValue* Find(const std::string& key) const {
    auto it = gguf_.metadata.find(key);
    return it == gguf_.metadata.end() ? nullptr : &it->second;
  }
  absl::StatusOr<int64_t> Int(const std::string& key) const {
    const GgufValue* v = Find(key);
    if (v == nullptr) return absl::InvalidArgumentError("GGUF metadata lacks " + key);
    const std::optional<int64_t> i = v->AsInt();
    if (!i.has_value() || *i < 0) {
      return absl::InvalidArgumentError("GGUF metadata " + key + " is not a non-negative integer");
    }
    return *i;
  }
  int64_t IntOr(const std::string& key, int64_t fallback) const {
    const GgufValue* v = Find(key);
    return v != nullptr && v->AsInt().has_value() ? *v->AsInt() : fallback;
  }
  double FloatOr(const std::string& key, double fallback) const {
    const GgufValue* v = Find(key);
    return v != nullptr && v->AsFloat().has_value() ? *v->AsFloat() : fallback;
  }
  bool BoolOr(const std::string& key, bool fallback) const {
    const GgufValue* v = Find(key);
    return v != nullptr && v->AsBool().has_value() ? *v->AsBool() : fallback;
  }
  std::string StringOr(const std::string& key, const std::string& fallback) const {
    const GgufValue* v = Find(key);
    return v != nullptr && v->AsString() != nullptr ? *v->AsString() : fallback;
  }

 private:
  const GgufContents& gguf_;
};

absl::Status GgufModelFile::ReadConfig(const GgufContents& gguf) {
  const Metadata md(gguf);
  ModelConfig& c = config_;
  c.architecture = md.StringOr("general.architecture", "");
  if (c.architecture != "llama" && c.architecture != "qwen2") {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF architecture '%s' is not supported (spillway runs llama and qwen2; Mistral and "
        "SmolLM files are 'llama')",
        c.architecture));
  }
  const std::string a = c.architecture + ".";
  c.name = md.StringOr("general.name", "");
  SPW_ASSIGN_OR_RETURN(c.num_layers, md.Int(a + "block_count"));
  SPW_ASSIGN_OR_RETURN(c.hidden, md.Int(a + "embedding_length"));
  SPW_ASSIGN_OR_RETURN(c.num_heads, md.Int(a + "attention.head_count"));
  c.num_kv_heads = md.IntOr(a + "attention.head_count_kv", c.num_heads);
  SPW_ASSIGN_OR_RETURN(c.ffn_hidden, md.Int(a + "feed_forward_length"));
  c.context_length = md.IntOr(a + "context_length", 4096);
  c.rms_eps = static_cast<float>(md.FloatOr(a + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = static_cast<float>(md.FloatOr(a + "rope.freq_base", 10000.0));
  if (c.num_layers <= 0 || c.num_layers > 1024 || c.hidden <= 0 || c.hidden > (1 << 17) ||
      c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0 ||
      c.ffn_hidden <= 0 || c.context_length <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF model shape is invalid: %d layers, hidden %d, %d heads, %d KV heads, FFN %d",
        c.num_layers, c.hidden, c.num_heads, c.num_kv_heads, c.ffn_hidden));
  }
  c.head_dim = md.IntOr(a + "attention.key_length", c.hidden / c.num_heads);
  c.rope_dims = md.IntOr(a + "rope.dimension_count", c.head_dim);
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || c.rope_dims != c.head_dim) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF head size %d with %d rotary dims is not supported (needs an even head size, all "
        "dims rotated)",
        c.head_dim, c.rope_dims));
  }
  c.rope_style = c.architecture == "qwen2" ? RopeStyle::kNeox : RopeStyle::kNormal;
  const std::string scaling = md.StringOr(a + "rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.kind = RopeScaling::Kind::kLinear;
    c.rope_scaling.factor = static_cast<float>(md.FloatOr(a + "rope.scaling.factor", 1.0));
  } else if (scaling != "none" && !scaling.empty()) {
    return absl::UnimplementedError("GGUF rope scaling '" + scaling + "' is not supported");
  }
  c.qkv_bias = c.architecture == "qwen2";
  c.tied_embeddings = Find("output.weight") == nullptr;
  const WeightTensor* embd = Find("token_embd.weight");
  if (embd == nullptr || embd->shape.size() != 2 || embd->shape[0] != c.hidden) {
    return absl::InvalidArgumentError("GGUF file lacks token_embd.weight of shape [hidden, vocab]");
  }
  c.vocab_size = embd->shape[1];
  return absl::OkStatus();
}

absl::Status GgufModelFile::ReadTokenizer(const GgufContents& gguf) {
  const Metadata md(gguf);
  TokenizerSpec& t = tokenizer_;
  t.model = md.StringOr("tokenizer.ggml.model", "");
  t.pre = md.StringOr("tokenizer.ggml.pre", "default");
  const GgufValue* tokens = md.Find("tokenizer.ggml.tokens");
  if (t.model.empty() || tokens == nullptr || tokens->AsStrings() == nullptr) {
    return absl::InvalidArgumentError("GGUF file has no tokenizer (tokenizer.ggml.tokens)");
  }
  t.tokens = *tokens->AsStrings();
  if (const GgufValue* v = md.Find("tokenizer.ggml.scores"); v && v->AsFloats()) {
    t.scores.assign(v->AsFloats()->begin(), v->AsFloats()->end());
  }
  if (const GgufValue* v = md.Find("tokenizer.ggml.token_type"); v && v->AsInts()) {
    for (int64_t type : *v->AsInts()) t.token_types.push_back(static_cast<TokenType>(type));
  }
  if (const GgufValue* v = md.Find("tokenizer.ggml.merges"); v && v->AsStrings()) {
    t.merges = *v->AsStrings();
  }
  t.bos_id = static_cast<TokenId>(md.IntOr("tokenizer.ggml.bos_token_id", -1));
  t.eos_id = static_cast<TokenId>(md.IntOr("tokenizer.ggml.eos_token_id", -1));
  t.unk_id = static_cast<TokenId>(md.IntOr("tokenizer.ggml.unknown_token_id", -1));
  t.pad_id = static_cast<TokenId>(md.IntOr("tokenizer.ggml.padding_token_id", -1));
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (const int64_t id = md.IntOr(key, -1); id >= 0)
      t.eot_ids.push_back(static_cast<TokenId>(id));
  }
  t.add_bos = md.BoolOr("tokenizer.ggml.add_bos_token", t.model == "llama");
  t.add_eos = md.BoolOr("tokenizer.ggml.add_eos_token", false);
  t.add_space_prefix = md.BoolOr("tokenizer.ggml.add_space_prefix", t.model == "llama");
  chat_template_ = md.StringOr("tokenizer.chat_template", "");
  return absl::OkStatus();
}

// Checks that every tensor the Llama graph reads exists with the shape the config implies, so
// a bad file fails at load with the tensor's name rather than deep inside a forward pass.
absl::Status GgufModelFile::CheckTensors() const {
  const ModelConfig& c = config_;
  const int64_t q = c.num_heads * c.head_dim;
  const int64_t kv = c.num_kv_heads * c.head_dim;
  auto expect = [&](const std::string& name, std::vector<int64_t> shape) -> absl::Status {
    const WeightTensor* t = Find(name);
    if (t == nullptr) return absl::InvalidArgumentError("model file lacks tensor " + name);
    if (t->shape != shape) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor %s has shape [%s], expected [%s]",
                                                        name, absl::StrJoin(t->shape, ", "),
                                                        absl::StrJoin(shape, ", ")));
    }
    return absl::OkStatus();
  };
  SPW_RETURN_IF_ERROR(expect("output_norm.weight", {c.hidden}));
  if (const WeightTensor* f = Find("rope_freqs.weight"); f != nullptr) {
    SPW_RETURN_IF_ERROR(expect("rope_freqs.weight", {c.head_dim / 2}));
    if (f->type != GgmlType::kF32) {
      return absl::InvalidArgumentError("tensor rope_freqs.weight must be f32");
    }
  }
  if (!c.tied_embeddings) SPW_RETURN_IF_ERROR(expect("output.weight", {c.hidden, c.vocab_size}));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrFormat("blk.%d.", l);
    SPW_RETURN_IF_ERROR(expect(p + "attn_norm.weight", {c.hidden}));
    SPW_RETURN_IF_ERROR(expect(p + "attn_q.weight", {c.hidden, q}));
    SPW_RETURN_IF_ERROR(expect(p + "attn_k.weight", {c.hidden, kv}));
    SPW_RETURN_IF_ERROR(expect(p + "attn_v.weight", {c.hidden, kv}));
    SPW_RETURN_IF_ERROR(expect(p + "attn_output.weight", {q, c.hidden}));
    SPW_RETURN_IF_ERROR(expect(p + "ffn_norm.weight", {c.hidden}));
    SPW_RETURN_IF_ERROR(expect(p + "ffn_gate.weight", {c.hidden, c.ffn_hidden}));
    SPW_RETURN_IF_ERROR(expect(p + "ffn_up.weight", {c.hidden, c.ffn_hidden}));
    SPW_RETURN_IF_ERROR(expect(p + "ffn_down.weight", {c.ffn_hidden, c.hidden}));
    if (c.qkv_bias) {
      SPW_RETURN_IF_ERROR(expect(p + "attn_q.bias", {q}));
      SPW_RETURN_IF_ERROR(expect(p + "attn_k.bias", {kv}));
      SPW_RETURN_IF_ERROR(expect(p + "attn_v.bias", {kv}));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ModelFile>> GgufModelFile::Open(const std::string& path) {
  auto model = std::make_unique<GgufModelFile>();
  SPW_ASSIGN_OR_RETURN(model->file_, internal::MappedFile::Open(path));
  absl::StatusOr<GgufContents> gguf = ParseGguf(model->file_.data(), model->file_.size());
  if (!gguf.ok()) {
    return absl::Status(gguf.status().code(), path + ": " + std::string(gguf.status().message()));
  }
  for (const GgufTensorInfo& info : gguf->tensors) {
    WeightTensor t{.name = info.name,
                   .type = info.type,
                   .shape = info.shape,
                   .data = model->file_.data() + info.offset,
                   .nbytes = info.nbytes};
    if (!model->tensors_.emplace(info.name, std::move(t)).second) {
      return absl::InvalidArgumentError(path + ": tensor " + info.name + " appears twice");
    }
  }
  absl::Status status = model->ReadConfig(*gguf);
  if (status.ok()) status = model->ReadTokenizer(*gguf);
  if (status.ok()) status = model->CheckTensors();
  if (status.ok() &&
      static_cast<int64_t>(model->tokenizer_.tokens.size()) != model->config_.vocab_size) {
    status = absl::InvalidArgumentError(
        absl::StrFormat("the tokenizer has %d tokens but the embedding table has %d rows",
                        model->tokenizer_.tokens.size(), model->config_.vocab_size));
  }
  if (!status.ok()) {
    return absl::Status(status.code(), path + ": " + std::string(status.message()));
  }
  return std::unique_ptr<ModelFile>(std::move(model));
}

}  // namespace

int64_t WeightTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const WeightTensor* ModelFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<ModelFile>> OpenGguf(const std::string& path) {
  return GgufModelFile::Open(path);
}

absl::StatusOr<std::unique_ptr<ModelFile>> OpenModelFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return OpenHfDirectory(path);
  return OpenGguf(path);
}

}  // namespace spillway::engine
