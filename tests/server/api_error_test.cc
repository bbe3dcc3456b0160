#include "server/openai/api_error.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

TEST(ApiError, MapsStatusCodesThroughTheTable) {
  struct Case {
    absl::Status status;
    int http;
    std::string type;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("x"), 400, "invalid_request_error"},
      {absl::OutOfRangeError("x"), 400, "invalid_request_error"},
      {absl::FailedPreconditionError("x"), 400, "invalid_request_error"},
      {absl::NotFoundError("x"), 404, "invalid_request_error"},
      {absl::ResourceExhaustedError("x"), 429, "rate_limit_error"},
      {absl::UnavailableError("x"), 503, "service_unavailable"},
      {absl::DeadlineExceededError("x"), 504, "timeout"},
      {absl::InternalError("x"), 500, "server_error"},
      {absl::UnknownError("x"), 500, "server_error"},
      {absl::UnauthenticatedError("x"), 401, "authentication_error"},
  };
  for (const Case& c : cases) {
    ApiError e = ApiErrorFromStatus(c.status);
    EXPECT_EQ(e.http_status, c.http) << c.status;
    EXPECT_EQ(e.type, c.type) << c.status;
    EXPECT_EQ(e.message, "x");
  }
}

TEST(ApiError, QueueFullIs429WithRetryAfter) {
  ApiError e = ApiErrorFromStatus(absl::ResourceExhaustedError("queue full"));
  ASSERT_TRUE(e.retry_after_s.has_value());
  http::HttpResponse r = ErrorResponse(e);
  EXPECT_EQ(r.status, 429);
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Retry-After");
  EXPECT_EQ(r.headers[0].second, "1");
}

TEST(ApiError, ParamAndCodeTravelWithTheStatus) {
  absl::Status s = InvalidParamError("top_p", "'top_p' must be in (0, 1], got 2");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParamOf(s), "top_p");
  EXPECT_EQ(ErrorCodeOf(s), std::nullopt);
  ApiError e = ApiErrorFromStatus(s);
  EXPECT_EQ(e.param, "top_p");
  EXPECT_EQ(e.code, std::nullopt);

  ApiError m = ApiErrorFromStatus(ModelNotFoundError("gpt-4"));
  EXPECT_EQ(m.http_status, 404);
  EXPECT_EQ(m.param, "model");
  EXPECT_EQ(m.code, "model_not_found");
  EXPECT_NE(m.message.find("gpt-4"), std::string::npos);
  EXPECT_TRUE(WithParam(absl::OkStatus(), "x").ok());
}

TEST(ApiError, JsonHasTheOpenAiShape) {
  json::value v = json::parse(ApiErrorJson(ApiErrorFromStatus(InvalidParamError("n", "bad n"))));
  const json::object& e = v.at("error").as_object();
  EXPECT_EQ(e.at("message"), "bad n");
  EXPECT_EQ(e.at("type"), "invalid_request_error");
  EXPECT_EQ(e.at("param"), "n");
  EXPECT_TRUE(e.at("code").is_null());
  EXPECT_EQ(e.size(), 4u);
}

TEST(ApiError, HttpLayerErrors) {
  EXPECT_EQ(PathNotFoundError("GET", "/x").http_status, 404);
  ApiError m = MethodNotAllowedError("GET", "/v1/completions", "POST");
  EXPECT_EQ(m.http_status, 405);
  EXPECT_NE(m.message.find("POST"), std::string::npos);
  ApiError b = BodyTooLargeError(1024);
  EXPECT_EQ(b.http_status, 413);
  EXPECT_NE(b.message.find("1024"), std::string::npos);
  EXPECT_EQ(MalformedHttpError("bad").http_status, 400);
}

}  // namespace
}  // namespace spillway::server::openai
