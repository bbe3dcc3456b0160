#include "server/cli/lora_options.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace spillway::server {

void AddLoraFlags(CLI::App& serve, LoraServeOptions& options) {
  serve
      .add_option("--lora-modules", options.modules,
                  "LoRA adapters to serve, as name=path (PEFT directories); `model` may name them")
      ->envname("SPILLWAY_LORA_MODULES")
      ->delimiter(' ');
  serve
      .add_option("--max-loras", options.max_loras,
                  "LoRA adapters loaded at once (start-up and /v1/load_lora_adapter)")
      ->envname("SPILLWAY_MAX_LORAS")
      ->check(CLI::Range(0, 1 << 16))
      ->capture_default_str();
  serve.add_option("--max-lora-rank", options.max_lora_rank, "the largest LoRA rank accepted")
      ->envname("SPILLWAY_MAX_LORA_RANK")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
}

absl::Status LoadLoraModules(const LoraServeOptions& options, adapters::AdapterRegistry& registry) {
  for (const std::string& module : options.modules) {
    const size_t eq = module.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == module.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--lora-modules: '", module, "' is not name=path"));
    }
    const std::string name = module.substr(0, eq);
    const std::string path = module.substr(eq + 1);
    absl::StatusOr<adapters::AdapterInfo> info = registry.AddPeftDir(name, path);
    if (!info.ok()) {
      return absl::Status(info.status().code(),
                          absl::StrCat("--lora-modules ", module, ": ", info.status().message()));
    }
    spdlog::info("LoRA adapter '{}' from {}: rank {}, alpha {}", name, path, info->rank,
                 info->alpha);
  }
  return absl::OkStatus();
}

}  // namespace spillway::server
