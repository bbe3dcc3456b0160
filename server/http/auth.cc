#include "server/http/auth.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_format.h"

namespace spillway::server::http {
namespace {

// NOTE(ops): absl's string_view is not std::string_view in this build, so small local helpers.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // NOTE(ops): loop over the longer length, reading a zero past the end of the shorter, and
  // fold the length difference in; no early exit, so timing reveals only the longer length.
  const size_t n = std::max(a.size(), b.size());
  volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | (x ^ y);
  }
  return diff == 0;
}

std::string_view BearerToken(std::string_view authorization) {
  const std::string_view v = Trim(authorization);
  constexpr std::string_view kScheme = "bearer ";
  if (v.size() <= kScheme.size() || !EqualsIgnoreCase(v.substr(0, kScheme.size()), kScheme)) {
    return {};
  }
  return Trim(v.substr(kScheme.size()));
}

std::string_view FindHeader(const HttpRequest& request, std::string_view name) {
  for (const auto& [n, v] : request.headers) {
    if (EqualsIgnoreCase(n, name)) return v;
  }
  return {};
}

bool IsValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), IsIdChar);
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%016x%016x", rng(), rng());
}

AccessScope AccessPolicy::ScopeOf(std::string_view path) const {
  if (path == "/health" || path == "/ready") return AccessScope::kOpen;
  if (path == "/metrics")
    return options_.protect_metrics ? AccessScope::kInference : AccessScope::kOpen;
  if (path.starts_with("/admin/") || path.starts_with("/v1/admin/") ||
      path == "/v1/load_lora_adapter" || path == "/v1/unload_lora_adapter" ||
      // NOTE(ftapi): OpenAI's Files and Fine-tuning APIs change server state: admin scope.
      path == "/v1/files" || path.starts_with("/v1/files/") || path == "/v1/fine_tuning" ||
      path.starts_with("/v1/fine_tuning/")) {
    return AccessScope::kAdmin;
  }
  return AccessScope::kInference;
}

bool AccessPolicy::Allows(AccessScope scope, std::string_view authorization) const {
  if (scope == AccessScope::kOpen) return true;
  const std::string& key = scope == AccessScope::kAdmin && !options_.admin_api_key.empty()
                               ? options_.admin_api_key
                               : options_.api_key;
  if (key.empty()) return true;
  return ConstantTimeEquals(BearerToken(authorization), key);
}

}  // namespace spillway::server::http
