// ApiError: the OpenAI error shape `{"error":{"message","type","param","code"}}` and the one
// table that maps absl status codes (gRPC's canonical codes, STYLE.md §6) to an HTTP status and
// an error `type`. Parsing and validation in server/openai return absl::Status; the parameter a
// bad request names travels with the status as a payload (InvalidParamError), so the HTTP front
// end can fill `param` without parsing messages. Plain functions, safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "server/http/http_message.h"

namespace spillway::server::openai {

struct ApiError {
  int http_status = 500;
  std::string type;     // "invalid_request_error", "rate_limit_error", ...
  std::string message;  // for people: what, which value, which limit
  std::optional<std::string> param = std::nullopt;  // the request field at fault
  std::optional<std::string> code =
      std::nullopt;  // machine-readable, e.g. "context_length_exceeded"
  std::optional<int> retry_after_s = std::nullopt;  // sent as Retry-After (429, 503)
};

// InvalidArgument whose message is `message` and whose `param` is `param`.
absl::Status InvalidParamError(std::string_view param, std::string_view message);
// NotFound for a model this server does not serve (param "model", code "model_not_found").
absl::Status ModelNotFoundError(std::string_view model);
// Returns `status` with `param` (and `code`, when not empty) attached. OK stays OK.
absl::Status WithParam(absl::Status status, std::string_view param, std::string_view code = "");
// The param / code attached to `status`, if any.
std::optional<std::string> ParamOf(const absl::Status& status);
std::optional<std::string> ErrorCodeOf(const absl::Status& status);

// ApiErrorFromStatus maps a failed `status` through the table in api_error.cc: message,
// param and code come from the status. REQUIRES: !status.ok().
ApiError ApiErrorFromStatus(const absl::Status& status);

// Errors the HTTP layer raises before any endpoint sees the request (no absl code fits them).
ApiError PathNotFoundError(std::string_view method, std::string_view path);
ApiError MethodNotAllowedError(std::string_view method, std::string_view path,
                               std::string_view allow);
ApiError BodyTooLargeError(int64_t limit_bytes);
ApiError MalformedHttpError(std::string_view detail);

// The JSON body `{"error":{...}}`; `param` and `code` are null when absent.
std::string ApiErrorJson(const ApiError& error);
// The whole HTTP response of `error`: its status, the JSON body, Retry-After when set.
http::HttpResponse ErrorResponse(const ApiError& error);
// A 200 (or `status`) application/json response.
http::HttpResponse JsonResponse(std::string body, int status = 200);

}  // namespace spillway::server::openai
