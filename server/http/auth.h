// Access control and request identity for the front ends (HTTP and gRPC): API-key checks
// compared in constant time, the path -> scope table (`--api-key` guards inference paths,
// `--admin-api-key` guards admin paths, /health, /ready and /metrics stay open unless
// `--protect-metrics`), and X-Request-Id validation / generation. Keys are never logged.
// Plain functions and an immutable class: safe from any thread.
#pragma once

#include <string>
#include <string_view>

#include "server/http/http_message.h"

namespace spillway::server::http {

// True when `a` and `b` are equal. The time taken depends only on max(a.size(), b.size()),
// never on where they differ (every byte of both is read).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, surrounding
// spaces trimmed); empty when the value is not a bearer credential.
std::string_view BearerToken(std::string_view authorization);

// The value of header `name` (case-insensitive) in `request`, or empty.
std::string_view FindHeader(const HttpRequest& request, std::string_view name);

// A client-supplied request id is used when it is 1..64 characters of [A-Za-z0-9._-].
bool IsValidRequestId(std::string_view id);
// A fresh random request id (32 hex digits).
std::string NewRequestId();

enum class AccessScope {
  kOpen,       // /health, /ready, and /metrics unless protected
  kInference,  // /v1/*, /tokenize, /detokenize, /metrics when protected, anything else
  kAdmin,      // /admin/* and /v1/admin/*
};

struct AccessOptions {
  std::string api_key;        // empty: inference paths are open
  std::string admin_api_key = {};  // empty: admin paths need api_key (if set)
  bool protect_metrics = false;
};

class AccessPolicy {
 public:
  explicit AccessPolicy(AccessOptions options) : options_(std::move(options)) {}

  AccessScope ScopeOf(std::string_view path) const;
  // True when `authorization` (the Authorization header or gRPC metadata value) grants
  // `scope`. Admin scope accepts only the admin key when one is set, else the API key.
  bool Allows(AccessScope scope, std::string_view authorization) const;
  bool Allows(const HttpRequest& request) const {
    return Allows(ScopeOf(request.path), FindHeader(request, "authorization"));
  }

 private:
  AccessOptions options_;
};

}  // namespace spillway::server::http
