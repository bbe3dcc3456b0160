#include "engine/lora/lora_adapter.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/check.h"

namespace spillway::engine::lora {

std::string_view LoraModuleName(LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return "q_proj";
    case LoraModule::kK:
      return "k_proj";
    case LoraModule::kV:
      return "v_proj";
    case LoraModule::kO:
      return "o_proj";
    case LoraModule::kGate:
      return "gate_proj";
    case LoraModule::kUp:
      return "up_proj";
    case LoraModule::kDown:
      return "down_proj";
  }
  SPW_CHECK(false) << "bad LoraModule " << static_cast<int>(m);
  return "";
}

absl::StatusOr<LoraModule> ParseLoraModule(std::string_view name) {
  for (LoraModule m : kAllLoraModules) {
    const std::string_view full = LoraModuleName(m);
    if (name == full || name == full.substr(0, full.size() - 5)) return m;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown LoRA target module '%s' (expected q, k, v, o, gate, up or down, or their "
      "*_proj names)",
      std::string(name)));
}

std::string LoraModuleTensor(int64_t layer, LoraModule m) {
  static constexpr std::array<const char*, kNumLoraModules> kNames = {
      "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  return absl::StrFormat("blk.%d.%s.weight", layer, kNames[static_cast<int>(m)]);
}

int64_t LoraModuleIn(const ModelConfig& c, LoraModule m) {
  switch (m) {
    case LoraModule::kO:
      return c.num_heads * c.head_dim;
    case LoraModule::kDown:
      return c.ffn_hidden;
    default:
      return c.hidden;
  }
}

int64_t LoraModuleOut(const ModelConfig& c, LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return c.num_heads * c.head_dim;
    case LoraModule::kK:
    case LoraModule::kV:
      return c.num_kv_heads * c.head_dim;
    case LoraModule::kGate:
    case LoraModule::kUp:
      return c.ffn_hidden;
    default:
      return c.hidden;
  }
}

bool LoraConfig::Targets(LoraModule m) const {
  return std::find(targets.begin(), targets.end(), m) != targets.end();
}

bool LoraConfig::AdaptsLayer(int64_t layer) const {
  return layers.empty() || std::find(layers.begin(), layers.end(), layer) != layers.end();
}

LoraLayout::LoraLayout(const ModelConfig& model, const LoraConfig& config)
    : slots_(model.num_layers), rank_(config.rank), first_adapted_layer_(model.num_layers) {
  for (int64_t l = 0; l < model.num_layers; ++l) {
    if (!config.AdaptsLayer(l)) continue;
    for (LoraModule m : kAllLoraModules) {
      if (!config.Targets(m)) continue;
      LoraSlot& s = slots_[l][static_cast<int>(m)];
      s.in = LoraModuleIn(model, m);
      s.out = LoraModuleOut(model, m);
      s.a_offset = num_params_;
      num_params_ += int64_t{config.rank} * s.in;
      s.b_offset = num_params_;
      num_params_ += s.out * config.rank;
      first_adapted_layer_ = std::min(first_adapted_layer_, l);
    }
  }
}

std::vector<LoraMatrix> LoraLayout::Matrices() const {
  std::vector<LoraMatrix> out;
  for (int64_t l = 0; l < num_layers(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const LoraSlot& s = slot(l, m);
      if (!s.adapted()) continue;
      out.push_back({.layer = l,
                     .module = m,
                     .is_b = false,
                     .offset = s.a_offset,
                     .rows = rank_,
                     .cols = s.in});
      out.push_back({.layer = l,
                     .module = m,
                     .is_b = true,
                     .offset = s.b_offset,
                     .rows = s.out,
                     .cols = rank_});
    }
  }
  return out;
}

absl::StatusOr<LoraAdapter> NewLoraAdapter(const ModelConfig& model, const LoraConfig& config,
                                           uint64_t seed) {
  if (config.rank < 1) return absl::InvalidArgumentError("LoRA rank must be at least 1");
  if (config.targets.empty()) return absl::InvalidArgumentError("LoRA needs a target module");
  for (int32_t l : config.layers) {
    if (l < 0 || l >= model.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrFormat("LoRA layer %d out of range (the model has %d)", l, model.num_layers));
    }
  }
  LoraAdapter a{.config = config, .layout = LoraLayout(model, config), .params = {}};
  a.params.assign(a.layout.num_params(), 0.0f);
  // splitmix64: a fixed stream, independent of the standard library's distributions.
  uint64_t state = seed;
  auto next_uniform = [&state]() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
  };
  for (const LoraMatrix& x : a.layout.Matrices()) {
    if (x.is_b) continue;
    const double bound = 1.0 / std::sqrt(static_cast<double>(x.cols));
    float* pa = a.params.data() + x.offset;
    for (int64_t i = 0; i < x.rows * x.cols; ++i) {
      pa[i] = static_cast<float>((2.0 * next_uniform() - 1.0) * bound);
    }
  }
  return a;
}

}  // namespace spillway::engine::lora
