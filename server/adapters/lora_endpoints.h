// vLLM's runtime LoRA endpoints over an AdapterRegistry, on an http::Router:
//   POST /v1/load_lora_adapter   {"lora_name": str, "lora_path": str (a PEFT directory)}
//   POST /v1/unload_lora_adapter {"lora_name": str}
// Success: 200 text/plain "Success: LoRA adapter '<name>' added successfully." / "... removed
// successfully." (vLLM's words); failures in the OpenAI error shape: 400 for a missing field,
// a name already loaded, --max-loras reached or an adapter that does not fit the model; 404
// for a path with no adapter or an unknown name (unload); 501 on a backend without LoRA.
// Access: both paths are admin-scoped (server/http/auth.cc), unlike vLLM, which guards them
// with VLLM_ALLOW_RUNTIME_LORA_UPDATING.
// Thread safety: handlers run on connection strands; the registry is thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/adapters/adapter_registry.h"
#include "server/http/router.h"

namespace spillway::server::adapters {

// The handlers' logic, without HTTP: the success text, or the error (with `param`).
absl::StatusOr<std::string> LoadLoraAdapter(std::string_view body, AdapterRegistry& registry);
absl::StatusOr<std::string> UnloadLoraAdapter(std::string_view body, AdapterRegistry& registry);

// Adds both endpoints to `router`; `registry` must outlive it.
void RegisterLoraEndpoints(http::Router& router, AdapterRegistry& registry);

}  // namespace spillway::server::adapters
