// BackendLoraAdapter: a LoraAdapter loaded into a Backend for serving. Each adapted
// (layer, module) has its A ([r, in]) and B ([out, r]) as BackendWeights made by
// Backend::LoadWeight, so the adapter lives in the backend's memory like the base weights;
// LlamaModel passes them to Backend::AddLora for the rows of the chunks that use the adapter
// (BatchChunk::adapter). Immutable after Load; engine-loop thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/lora/lora_adapter.h"

namespace spillway::engine::lora {

class BackendLoraAdapter {
 public:
  // Copies `adapter` and loads its matrices into `backend` (which must outlive this).
  static absl::StatusOr<std::unique_ptr<BackendLoraAdapter>> Load(const LoraAdapter& adapter,
                                                                  Backend& backend);

  // A and B of (layer, m), or nullptr when the adapter leaves that projection alone.
  const BackendWeight* a(int64_t layer, LoraModule m) const { return Get(a_, layer, m); }
  const BackendWeight* b(int64_t layer, LoraModule m) const { return Get(b_, layer, m); }
  float scale() const { return adapter_.config.scale(); }
  const LoraAdapter& adapter() const { return adapter_; }
  // The adapter for Backend::AddLoraByRow (decode graphs), or null where the backend cannot
  // make one; its slot of (layer, m) is Slot(layer, m).
  const BackendLoraTable* table() const { return table_.get(); }
  static int64_t Slot(int64_t layer, LoraModule m) {
    return layer * kNumLoraModules + static_cast<int>(m);
  }
  // Bit m set when the adapter adapts module m in some layer.
  uint32_t module_mask() const { return module_mask_; }

 private:
  using Weights = std::vector<std::array<std::unique_ptr<BackendWeight>, kNumLoraModules>>;
  static const BackendWeight* Get(const Weights& w, int64_t layer, LoraModule m) {
    if (layer >= static_cast<int64_t>(w.size())) return nullptr;
    return w[layer][static_cast<int>(m)].get();
  }

  LoraAdapter adapter_;  // backend weights may point into adapter_.params (the CPU's do)
  Weights a_, b_;
  std::unique_ptr<BackendLoraTable> table_;
  uint32_t module_mask_ = 0;
};

}  // namespace spillway::engine::lora
