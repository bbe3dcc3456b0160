#include "server/adapters/lora_endpoints.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/openai/api_error.h"
#include "server/openai/json_fields.h"

namespace spillway::server::adapters {
namespace {

using openai::FieldReader;
using openai::InvalidParamError;
using openai::WithParam;

// NOTE(adapters): vLLM answers a name already loaded with 400 (not 409), and a full adapter
// table is a client error here (not 429: retrying does not help until someone unloads).
absl::Status AsLoadError(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kAlreadyExists:
      return WithParam(absl::InvalidArgumentError(st.message()), "lora_name");
    case absl::StatusCode::kResourceExhausted:
      return absl::FailedPreconditionError(st.message());
    case absl::StatusCode::kNotFound:
      return WithParam(st, "lora_path");
    case absl::StatusCode::kInvalidArgument:
      return WithParam(st, "lora_path");
    default:
      return st;
  }
}

absl::StatusOr<std::string> RequiredString(const FieldReader& r, std::string_view name,
                                           std::string_view missing) {
  SPW_ASSIGN_OR_RETURN(std::optional<std::string> v, r.String(name));
  if (!v.has_value() || v->empty()) return InvalidParamError(name, missing);
  return *std::move(v);
}

}  // namespace

absl::StatusOr<std::string> LoadLoraAdapter(std::string_view body, AdapterRegistry& registry) {
  SPW_ASSIGN_OR_RETURN(boost::json::object o, openai::ParseJsonBody(body));
  const FieldReader r(o);
  constexpr std::string_view kBoth = "Both 'lora_name' and 'lora_path' must be provided.";
  SPW_ASSIGN_OR_RETURN(std::string name, RequiredString(r, "lora_name", kBoth));
  SPW_ASSIGN_OR_RETURN(std::string path, RequiredString(r, "lora_path", kBoth));
  absl::StatusOr<AdapterInfo> info = registry.AddPeftDir(name, path);
  if (!info.ok()) return AsLoadError(info.status());
  spdlog::info("LoRA adapter '{}' loaded from {} (rank {}, id {})", info->name, path, info->rank,
               info->id);
  return absl::StrCat("Success: LoRA adapter '", name, "' added successfully.");
}

absl::StatusOr<std::string> UnloadLoraAdapter(std::string_view body, AdapterRegistry& registry) {
  SPW_ASSIGN_OR_RETURN(boost::json::object o, openai::ParseJsonBody(body));
  const FieldReader r(o);
  SPW_ASSIGN_OR_RETURN(
      std::string name,
      RequiredString(r, "lora_name", "'lora_name' needs to be provided to unload a LoRA adapter."));
  if (absl::Status st = registry.Remove(name); !st.ok()) return WithParam(st, "lora_name");
  spdlog::info("LoRA adapter '{}' unloaded", name);
  return absl::StrCat("Success: LoRA adapter '", name, "' removed successfully.");
}

void RegisterLoraEndpoints(http::Router& router, AdapterRegistry& registry) {
  auto reply = [](const absl::StatusOr<std::string>& text, const http::Exchange& e) {
    if (!text.ok()) {
      e.Reply(openai::ErrorResponse(openai::ApiErrorFromStatus(text.status())));
      return;
    }
    e.Reply(http::HttpResponse{.status = 200, .content_type = "text/plain", .body = *text});
  };
  // NOTE(adapters): loading reads the PEFT files and waits for the engine loop to copy the
  // weights into the backend, on this connection's strand: an admin call, rare and short.
  router.Add("POST", "/v1/load_lora_adapter",
             [&registry, reply](const http::HttpRequest& r, http::Exchange e) {
               reply(LoadLoraAdapter(r.body, registry), e);
             });
  router.Add("POST", "/v1/unload_lora_adapter",
             [&registry, reply](const http::HttpRequest& r, http::Exchange e) {
               reply(UnloadLoraAdapter(r.body, registry), e);
             });
}

}  // namespace spillway::server::adapters
