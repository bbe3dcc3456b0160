#include "server/openai/openai_api.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <random>

#include "absl/strings/str_format.h"
#include "server/openai/api_error.h"
#include "server/openai/generation.h"
#include "server/openai/info_endpoints.h"
#include "server/openai/request_parser.h"

namespace spillway::server::openai {
namespace {

http::HttpResponse StatusResponse(const absl::StatusOr<std::string>& body) {
  if (!body.ok()) return ErrorResponse(ApiErrorFromStatus(body.status()));
  return JsonResponse(*body);
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

OpenAiApi::OpenAiApi(const ServedModel& model, GenerationEngine& engine)
    : model_(model), engine_(engine), id_salt_(std::random_device{}()) {}

http::ErrorPages OpenAiApi::ErrorPages() {
  return {
      .not_found =
          [](std::string_view method, std::string_view path) {
            return ErrorResponse(PathNotFoundError(method, path));
          },
      .method_not_allowed =
          [](std::string_view method, std::string_view path, std::string_view allow) {
            return ErrorResponse(MethodNotAllowedError(method, path, allow));
          },
      .body_too_large = [](int64_t limit) { return ErrorResponse(BodyTooLargeError(limit)); },
      .malformed =
          [](std::string_view detail) { return ErrorResponse(MalformedHttpError(detail)); },
  };
}

void OpenAiApi::Register(http::Router& router) {
  router.Add("POST", "/v1/completions", [this](const http::HttpRequest& r, http::Exchange e) {
    HandleGeneration(Endpoint::kCompletions, r, e);
  });
  router.Add("POST", "/v1/chat/completions", [this](const http::HttpRequest& r, http::Exchange e) {
    HandleGeneration(Endpoint::kChatCompletions, r, e);
  });
  router.Add("GET", "/v1/models", [this](const http::HttpRequest&, http::Exchange e) {
    e.Reply(JsonResponse(ModelsJson(model_)));
  });
  router.Add("GET", "/health", [this](const http::HttpRequest&, http::Exchange e) {
    e.Reply(JsonResponse(HealthJson(model_, engine_.stats(), num_active_generations())));
  });
  router.Add("POST", "/tokenize", [this](const http::HttpRequest& r, http::Exchange e) {
    e.Reply(StatusResponse(Tokenize(r.body, model_)));
  });
  router.Add("POST", "/detokenize", [this](const http::HttpRequest& r, http::Exchange e) {
    e.Reply(StatusResponse(Detokenize(r.body, model_)));
  });
}

std::string OpenAiApi::NewId(Endpoint endpoint) {
  return absl::StrFormat("%s-%08x%08x",
                         endpoint == Endpoint::kChatCompletions ? "chatcmpl" : "cmpl",
                         id_salt_ & 0xffffffffu, next_id_.fetch_add(1));
}

void OpenAiApi::HandleGeneration(Endpoint endpoint, const http::HttpRequest& request,
                                 const http::Exchange& exchange) {
  absl::StatusOr<GenerationSpec> spec = endpoint == Endpoint::kChatCompletions
                                            ? ParseChatRequest(request.body, model_)
                                            : ParseCompletionRequest(request.body, model_);
  if (!spec.ok()) {
    ApiError error = ApiErrorFromStatus(spec.status());
    spdlog::debug("{} {}: {} {}", request.method, request.path, error.http_status, error.message);
    exchange.Reply(ErrorResponse(error));
    return;
  }
  ResponseContext context = ContextOf(*spec);
  context.id = NewId(endpoint);
  context.created_unix = UnixNow();
  context.model = spec->model_name;
  context.tokenizer = model_.tokenizer;
  Generation::Start(std::move(*spec), std::move(context), engine_, exchange, &num_active_);
}

}  // namespace spillway::server::openai
