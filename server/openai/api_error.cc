#include "server/openai/api_error.h"

#include <array>
#include <boost/json.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/string_views.h"

namespace spillway::server::openai {
namespace {

constexpr std::string_view kParamPayload = "type.spillway.dev/openai.param";
constexpr std::string_view kCodePayload = "type.spillway.dev/openai.code";

struct StatusRow {
  absl::StatusCode code;
  int http_status;
  std::string_view type;
  std::string_view default_code;  // empty: null
  int retry_after_s;              // 0: no Retry-After header
};

// NOTE(http): the one table from absl (gRPC) codes to HTTP (STYLE.md §6). Types follow the
// OpenAI API where it has one (invalid_request_error, authentication_error, ...); 429 follows
// vLLM's admission control (queue full) and carries Retry-After; 499 is nginx's "client closed
// request", only ever logged because nobody is left to read it.
constexpr std::array<StatusRow, 16> kStatusTable = {{
    {absl::StatusCode::kInvalidArgument, 400, "invalid_request_error", "", 0},
    {absl::StatusCode::kOutOfRange, 400, "invalid_request_error", "", 0},
    {absl::StatusCode::kFailedPrecondition, 400, "invalid_request_error", "", 0},
    {absl::StatusCode::kUnauthenticated, 401, "authentication_error", "", 0},
    {absl::StatusCode::kPermissionDenied, 403, "permission_error", "", 0},
    {absl::StatusCode::kNotFound, 404, "invalid_request_error", "", 0},
    {absl::StatusCode::kAlreadyExists, 409, "invalid_request_error", "", 0},
    {absl::StatusCode::kAborted, 409, "invalid_request_error", "", 0},
    {absl::StatusCode::kResourceExhausted, 429, "rate_limit_error", "rate_limit_exceeded", 1},
    {absl::StatusCode::kCancelled, 499, "cancelled", "", 0},
    {absl::StatusCode::kUnimplemented, 501, "not_implemented_error", "", 0},
    {absl::StatusCode::kUnavailable, 503, "service_unavailable", "", 1},
    {absl::StatusCode::kDeadlineExceeded, 504, "timeout", "", 0},
    {absl::StatusCode::kInternal, 500, "server_error", "", 0},
    {absl::StatusCode::kDataLoss, 500, "server_error", "", 0},
    {absl::StatusCode::kUnknown, 500, "server_error", "", 0},
}};

std::optional<std::string> Payload(const absl::Status& status, std::string_view key) {
  auto p = status.GetPayload(AbslSv(key));
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

}  // namespace

absl::Status InvalidParamError(std::string_view param, std::string_view message) {
  return WithParam(absl::InvalidArgumentError(AbslSv(message)), param);
}

absl::Status ModelNotFoundError(std::string_view model) {
  return WithParam(
      absl::NotFoundError(absl::StrCat("The model `", AbslSv(model), "` does not exist.")), "model",
      "model_not_found");
}

absl::Status WithParam(absl::Status status, std::string_view param, std::string_view code) {
  if (status.ok()) return status;
  status.SetPayload(AbslSv(kParamPayload), absl::Cord(AbslSv(param)));
  if (!code.empty()) status.SetPayload(AbslSv(kCodePayload), absl::Cord(AbslSv(code)));
  return status;
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  return Payload(status, kParamPayload);
}

std::optional<std::string> ErrorCodeOf(const absl::Status& status) {
  return Payload(status, kCodePayload);
}

ApiError ApiErrorFromStatus(const absl::Status& status) {
  ApiError e{.http_status = 500, .type = "server_error", .message = std::string(status.message())};
  for (const StatusRow& row : kStatusTable) {
    if (row.code != status.code()) continue;
    e.http_status = row.http_status;
    e.type = std::string(row.type);
    if (!row.default_code.empty()) e.code = std::string(row.default_code);
    if (row.retry_after_s > 0) e.retry_after_s = row.retry_after_s;
    break;
  }
  if (e.message.empty()) e.message = absl::StatusCodeToString(status.code());
  e.param = ParamOf(status);
  if (std::optional<std::string> code = ErrorCodeOf(status)) e.code = std::move(code);
  return e;
}

ApiError PathNotFoundError(std::string_view method, std::string_view path) {
  return {.http_status = 404,
          .type = "invalid_request_error",
          .message = absl::StrCat("Invalid URL (", AbslSv(method), " ", AbslSv(path), ")"),
          .code = "unknown_url"};
}

ApiError MethodNotAllowedError(std::string_view method, std::string_view path,
                               std::string_view allow) {
  return {.http_status = 405,
          .type = "invalid_request_error",
          .message = absl::StrCat("Method ", AbslSv(method), " is not allowed on ", AbslSv(path),
                                  "; allowed: ", AbslSv(allow)),
          .code = "method_not_allowed"};
}

ApiError BodyTooLargeError(int64_t limit_bytes) {
  return {.http_status = 413,
          .type = "invalid_request_error",
          .message = absl::StrCat("Request body is larger than the limit of ", limit_bytes,
                                  " bytes (--max-body-bytes)"),
          .code = "request_too_large"};
}

ApiError MalformedHttpError(std::string_view detail) {
  return {.http_status = 400,
          .type = "invalid_request_error",
          .message = absl::StrCat("Malformed HTTP request: ", AbslSv(detail))};
}

std::string ApiErrorJson(const ApiError& error) {
  boost::json::object inner;
  inner["message"] = error.message;
  inner["type"] = error.type;
  inner["param"] = error.param ? boost::json::value(*error.param) : boost::json::value(nullptr);
  inner["code"] = error.code ? boost::json::value(*error.code) : boost::json::value(nullptr);
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return boost::json::serialize(outer);
}

http::HttpResponse ErrorResponse(const ApiError& error) {
  http::HttpResponse r{.status = error.http_status, .body = ApiErrorJson(error)};
  if (error.retry_after_s)
    r.headers.emplace_back("Retry-After", absl::StrCat(*error.retry_after_s));
  return r;
}

http::HttpResponse JsonResponse(std::string body, int status) {
  return {.status = status, .body = std::move(body)};
}

}  // namespace spillway::server::openai
