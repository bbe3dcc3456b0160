// LoRA serving options of `spillway serve` (docs/fine-tuning.md "Serving adapters"), vLLM's
// flags: --lora-modules name=path [name=path ...] (PEFT directories loaded at start-up),
// --max-loras and --max-lora-rank; each also read from SPILLWAY_<NAME>. Main thread, at
// start-up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "server/adapters/adapter_registry.h"

namespace spillway::server {

struct LoraServeOptions {
  std::vector<std::string> modules;  // "name=path" (vLLM's --lora-modules)
  int32_t max_loras = 8;
  int32_t max_lora_rank = 64;
};

// Adds the flags to `serve`.
void AddLoraFlags(CLI::App& serve, LoraServeOptions& options);

// Registers every --lora-modules entry in `registry`. InvalidArgument for an entry that is not
// name=path; otherwise the registry's error, naming the entry. REQUIRES: the engine loop runs.
[[nodiscard]] absl::Status LoadLoraModules(const LoraServeOptions& options,
                                           adapters::AdapterRegistry& registry);

}  // namespace spillway::server
