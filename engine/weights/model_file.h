// ModelFile: an opened model (a GGUF file or a Hugging Face directory) as plain data: the
// architecture config, the weight tensors (memory-mapped, not copied), the tokenizer spec and
// the chat template. Readers validate every offset, size and count before exposing a tensor,
// so a ModelFile that opened without error never points outside its mapping.
// Built once at start-up; read-only afterwards, so safe to read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine {

enum class RopeStyle {
  kNormal,  // rotate adjacent pairs (x[2i], x[2i+1]); llama.cpp's LLAMA with permuted q/k
  kNeox,    // rotate halves (x[i], x[i + d/2]); Hugging Face layout, Qwen2
};

struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3 } kind = Kind::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  int64_t original_context = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;  // "llama" or "qwen2" (Mistral and SmolLM are "llama")
  std::string name;
  int64_t num_layers = 0;
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_hidden = 0;
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  int64_t rope_dims = 0;  // rotated dims per head (== head_dim for all supported models)
  RopeStyle rope_style = RopeStyle::kNormal;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;  // output.weight absent: the embedding table is the lm head
  bool qkv_bias = false;         // Qwen2
};

// One weight tensor. `shape` is in ggml order: shape[0] is the innermost (contiguous)
// dimension, so a linear layer's weight has shape {in_features, out_features} and its rows
// (one per output feature) are RowBytes(type, shape[0]) bytes each.
struct WeightTensor {
  std::string name;  // GGUF naming: "token_embd.weight", "blk.3.attn_q.weight", ...
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> shape = {};
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;

  int64_t num_elements() const;
};

class ModelFile {
 public:
  virtual ~ModelFile() = default;

  const ModelConfig& config() const { return config_; }
  const TokenizerSpec& tokenizer() const { return tokenizer_; }
  // Jinja source of the chat template; empty if the file has none.
  const std::string& chat_template() const { return chat_template_; }
  const std::map<std::string, WeightTensor>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr.
  const WeightTensor* Find(const std::string& name) const;

 protected:
  ModelConfig config_;
  TokenizerSpec tokenizer_;
  std::string chat_template_;
  std::map<std::string, WeightTensor> tensors_;
};

// Opens a GGUF file (v2 or v3).
absl::StatusOr<std::unique_ptr<ModelFile>> OpenGguf(const std::string& path);
// Opens a Hugging Face directory: config.json, model.safetensors or
// model.safetensors.index.json with shards, tokenizer.json, tokenizer_config.json.
absl::StatusOr<std::unique_ptr<ModelFile>> OpenHfDirectory(const std::string& path);
// A directory goes to OpenHfDirectory, anything else to OpenGguf.
absl::StatusOr<std::unique_ptr<ModelFile>> OpenModelFile(const std::string& path);

}  // namespace spillway::engine
