// `spillway make-model`: a random-weight GGUF of a named shape (engine/weights/random_model.h).
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_join.h"
#include "engine/weights/random_model.h"
#include "server/cli/commands.h"

namespace spillway::server {

int RunMakeModel(const MakeModelOptions& o) {
  std::optional<engine::ModelShape> shape = engine::FindModelShape(o.shape);
  if (!shape.has_value()) {
    spdlog::error("unknown --shape '{}'; known: {}", o.shape,
                  absl::StrJoin(engine::ModelShapeNames(), ", "));
    return 1;
  }
  if (o.layers > 0) shape->num_layers = o.layers;
  const engine::GgmlType dtype = o.dtype == "f32"   ? engine::GgmlType::kF32
                                 : o.dtype == "f16" ? engine::GgmlType::kF16
                                                    : engine::GgmlType::kBF16;
  const auto start = std::chrono::steady_clock::now();
  spdlog::info("writing {} ({} layers, hidden {}, vocab {}, {}) to {}", shape->name,
               shape->num_layers, shape->hidden, shape->vocab_size, o.dtype, o.out);
  const absl::Status s = engine::WriteRandomModel(
      {.shape = *shape, .dtype = dtype, .seed = o.seed, .threads = o.threads}, o.out);
  if (!s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(o.out, ec);
  spdlog::info("wrote {} MiB in {:.1f} s", ec ? 0 : bytes >> 20,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace spillway::server
