// LoraAdapter: the weights of one LoRA adapter on a Llama-family model, as plain data. For a
// targeted projection W ([out, in]) of layer l, the adapted projection is
//   y = W x + (alpha / r) · B (A x),   A: [r, in], B: [out, r]
// (PEFT's LoraLayer without dropout at inference). All A and B matrices live in one flat f32
// vector laid out by LoraLayout, so that optimizers, checkpoints and gradient buffers treat
// the adapter as one array. Rows of B for q and k follow the *model's* row order: for a GGUF
// Llama (RopeStyle::kNormal) that is llama.cpp's permuted order, and engine/lora/peft_io.h
// converts to and from Hugging Face's order.
// Plain data: safe to read from any thread; writers need their own synchronisation.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::lora {

// The projections of a Llama block that LoRA may adapt (PEFT's target_modules names).
enum class LoraModule : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLoraModules = 7;
inline constexpr std::array<LoraModule, kNumLoraModules> kAllLoraModules = {
    LoraModule::kQ,    LoraModule::kK,  LoraModule::kV,   LoraModule::kO,
    LoraModule::kGate, LoraModule::kUp, LoraModule::kDown};

// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj".
std::string_view LoraModuleName(LoraModule m);
// Accepts the PEFT names above and the short ones ("q", "gate", ...). InvalidArgument otherwise.
absl::StatusOr<LoraModule> ParseLoraModule(std::string_view name);
// Input and output features of `m` in a model of `config`.
int64_t LoraModuleIn(const ModelConfig& config, LoraModule m);
int64_t LoraModuleOut(const ModelConfig& config, LoraModule m);
// The GGUF tensor of `m`'s weight in layer `layer` ("blk.<layer>.attn_q.weight", ...;
// [out, in] as LoraModuleOut/In say).
std::string LoraModuleTensor(int64_t layer, LoraModule m);

struct LoraConfig {
  int32_t rank = 8;
  float alpha = 16.0f;
  // PEFT's lora_dropout: training applies it to the LoRA branch's input
  // (engine/train/train_model.h LoraDropout); serving never does.
  float dropout = 0.0f;
  std::vector<LoraModule> targets = {LoraModule::kQ, LoraModule::kV};
  // Layers adapted; empty = every layer (PEFT's layers_to_transform).
  std::vector<int32_t> layers;
  std::string base_model;  // adapter_config.json's base_model_name_or_path

  float scale() const { return alpha / static_cast<float>(rank); }
  bool Targets(LoraModule m) const;
  bool AdaptsLayer(int64_t layer) const;
};

// Where each (layer, module)'s A and B sit in the flat parameter vector.
struct LoraSlot {
  int64_t a_offset = -1;  // -1: not adapted
  int64_t b_offset = -1;
  int64_t in = 0;
  int64_t out = 0;
  bool adapted() const { return a_offset >= 0; }
};

// One A or B matrix of an adapter: [rows, cols] floats at `offset` of the parameters.
struct LoraMatrix {
  int64_t layer = 0;
  LoraModule module = LoraModule::kQ;
  bool is_b = false;  // A: [rank, in]; B: [out, rank]
  int64_t offset = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};

class LoraLayout {
 public:
  LoraLayout() = default;
  LoraLayout(const ModelConfig& model, const LoraConfig& config);

  int64_t num_layers() const { return static_cast<int64_t>(slots_.size()); }
  int32_t rank() const { return rank_; }
  // The slot of (layer, m); an empty layout has no adapted slots.
  const LoraSlot& slot(int64_t layer, LoraModule m) const {
    static const LoraSlot kNone;
    if (layer >= num_layers()) return kNone;
    return slots_[layer][static_cast<int>(m)];
  }
  int64_t num_params() const { return num_params_; }
  // Every matrix, by layer, then module (kAllLoraModules order), A before B.
  std::vector<LoraMatrix> Matrices() const;
  // The lowest adapted layer (num_layers() if none): backward need not go below it.
  int64_t first_adapted_layer() const { return first_adapted_layer_; }

 private:
  std::vector<std::array<LoraSlot, kNumLoraModules>> slots_;
  int32_t rank_ = 0;
  int64_t num_params_ = 0;
  int64_t first_adapted_layer_ = 1 << 30;
};

struct LoraAdapter {
  LoraConfig config;
  LoraLayout layout;
  std::vector<float> params;  // [layout.num_params()]

  const float* a(int64_t layer, LoraModule m) const {
    return params.data() + layout.slot(layer, m).a_offset;
  }
  const float* b(int64_t layer, LoraModule m) const {
    return params.data() + layout.slot(layer, m).b_offset;
  }
};

// A fresh adapter as PEFT initialises one: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform
// with a = sqrt(5)), B = 0, so the adapted model starts equal to the base. Deterministic in
// `seed`. InvalidArgument for rank < 1, no targets or a layer out of range.
absl::StatusOr<LoraAdapter> NewLoraAdapter(const ModelConfig& model, const LoraConfig& config,
                                           uint64_t seed);

}  // namespace spillway::engine::lora
