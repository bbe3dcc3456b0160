#include "engine/lora/backend_adapter.h"

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace spillway::engine::lora {

absl::StatusOr<std::unique_ptr<BackendLoraAdapter>> BackendLoraAdapter::Load(
    const LoraAdapter& adapter, Backend& backend) {
  std::unique_ptr<BackendLoraAdapter> out(new BackendLoraAdapter());
  out->adapter_ = adapter;
  const LoraLayout& layout = out->adapter_.layout;
  out->a_.resize(layout.num_layers());
  out->b_.resize(layout.num_layers());
  const int64_t r = layout.rank();
  for (int64_t l = 0; l < layout.num_layers(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const LoraSlot& s = layout.slot(l, m);
      if (!s.adapted()) continue;
      const float* p = out->adapter_.params.data();
      // GGUF shape order: shape[0] is the row length (input features).
      const WeightTensor a{
          .name = absl::StrFormat("lora.%d.%s.A", l, std::string(LoraModuleName(m))),
          .type = GgmlType::kF32,
          .shape = {s.in, r},
          .data = reinterpret_cast<const uint8_t*>(p + s.a_offset),
          .nbytes = 4 * r * s.in};
      const WeightTensor b{
          .name = absl::StrFormat("lora.%d.%s.B", l, std::string(LoraModuleName(m))),
          .type = GgmlType::kF32,
          .shape = {r, s.out},
          .data = reinterpret_cast<const uint8_t*>(p + s.b_offset),
          .nbytes = 4 * r * s.out};
      const int i = static_cast<int>(m);
      SPW_ASSIGN_OR_RETURN(out->a_[l][i], backend.LoadWeight(a));
      SPW_ASSIGN_OR_RETURN(out->b_[l][i], backend.LoadWeight(b));
      out->module_mask_ |= 1u << i;
    }
  }
  std::vector<LoraSlotWeights> slots(layout.num_layers() * kNumLoraModules);
  for (int64_t l = 0; l < layout.num_layers(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      slots[Slot(l, m)] = {.a = out->a(l, m), .b = out->b(l, m)};
    }
  }
  SPW_ASSIGN_OR_RETURN(out->table_, backend.MakeLoraTable(slots, out->scale()));
  return out;
}

}  // namespace spillway::engine::lora
