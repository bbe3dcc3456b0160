// The pieces of the Hugging Face directory reader, OpenHfDirectory() (declared in
// model_file.h), that make sense on their own: config.json -> ModelConfig and the mapping of
// Hugging Face tensor names to the GGUF names the engine uses. Exposed for tests and tools;
// the engine calls OpenHfDirectory/OpenModelFile. Pure functions, safe from any thread.
//
// A Hugging Face directory holds:
//   config.json                          architecture and sizes (ParseHfConfig)
//   model.safetensors                    all weights, or
//   model.safetensors.index.json         {"weight_map": {tensor name: shard file}} + shards
//   tokenizer.json, tokenizer_config.json   (engine/weights/tokenizer_json.h)
//   generation_config.json               optional: extra end-of-turn ids (eos_token_id list)
//   chat_template.jinja                  optional: the chat template of newer checkpoints
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/weights/model_file.h"

namespace spillway::engine {

// Parses config.json. model_type "llama", "mistral" -> architecture "llama"; "qwen2" ->
// "qwen2" with qkv_bias = true. HF checkpoints use the rotate-half RoPE layout, so
// rope_style = kNeox and rope_dims = head_dim. num_key_value_heads defaults to
// num_attention_heads, head_dim to hidden_size / num_attention_heads. rope_scaling may be
// null, "default", "linear" {factor} or "llama3" {factor, low_freq_factor, high_freq_factor,
// original_max_position_embeddings}. tied_embeddings is set from tie_word_embeddings (the
// directory reader then reconciles it with the presence of lm_head.weight).
// Errors: InvalidArgument for bad JSON, a missing required field or a value of the wrong
// type or range (named in the message); Unimplemented for an unknown model_type, an
// activation other than silu, or another rope_scaling type. `name` goes into config.name.
absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view config_json, std::string_view name);

// The GGUF name of a Hugging Face tensor ("model.layers.3.self_attn.q_proj.weight" ->
// "blk.3.attn_q.weight"), or nullopt if spillway has no use for it.
std::optional<std::string> HfTensorNameToGguf(std::string_view hf_name);

// One tensor the engine needs for `config`: GGUF name and shape in ggml order (innermost
// first; a linear layer is {in_features, out_features}). output.weight is listed unless
// config.tied_embeddings; the q/k/v biases only when config.qkv_bias.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

}  // namespace spillway::engine
