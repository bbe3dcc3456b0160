// PEFT adapter directories: adapter_config.json + adapter_model.safetensors, as written by
// Hugging Face peft's `save_pretrained` for a LoRA on a Llama-family causal LM. Used by the
// admin API (load/unload adapters) and by training jobs (the finished adapter).
//
// Tensor names: base_model.model.model.layers.<l>.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
// and base_model.model.model.layers.<l>.mlp.{gate,up,down}_proj.lora_{A,B}.weight; A is
// [r, in], B is [out, r] (PyTorch order). For a model with RopeStyle::kNormal (a GGUF Llama,
// whose q/k rows llama.cpp's converter permuted), the rows of q's and k's B are permuted on
// load and back on save, so the same directory works on the GGUF and the HF model.
// Stateless functions; any thread.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::lora {

// Reads the adapter in `dir` for a model of `model`. Errors name the file and tensor:
// NotFound for a missing file; InvalidArgument for a malformed config, an unknown target, a
// missing, extra or mis-shaped tensor; Unimplemented for PEFT options spillway does not apply
// (use_rslora, use_dora, bias other than "none", fan_in_fan_out, a regex target_modules).
absl::StatusOr<LoraAdapter> LoadPeftAdapter(const std::string& dir, const ModelConfig& model);

// Writes `adapter` to `dir` (created if missing; both files replaced atomically), F32 tensors.
[[nodiscard]] absl::Status SavePeftAdapter(const LoraAdapter& adapter, const ModelConfig& model,
                                           const std::string& dir);

// The safetensors name of a LoRA matrix ("...layers.3.self_attn.q_proj.lora_A.weight").
std::string PeftTensorName(int64_t layer, LoraModule m, bool is_b);

// Row `r` of the model's q/k output order holds Hugging Face row HfRowOfGgufRow(r, ...),
// for RopeStyle::kNormal models (llama.cpp convert_hf_to_gguf.py's permute()).
int64_t HfRowOfGgufRow(int64_t r, int64_t head_dim);

}  // namespace spillway::engine::lora
