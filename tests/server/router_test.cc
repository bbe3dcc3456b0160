#include "server/http/router.h"

#include <gtest/gtest.h>

#include "server/openai/openai_api.h"

namespace spillway::server::http {
namespace {

TEST(Router, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  Router router(openai::OpenAiApi::ErrorPages());
  router.Add("POST", "/v1/completions", [](const HttpRequest&, Exchange) {});
  router.Add("GET", "/health", [](const HttpRequest&, Exchange) {});
  router.Add("POST", "/health", [](const HttpRequest&, Exchange) {});

  EXPECT_EQ(router.RouteErrorForTesting("POST", "/v1/completions").status, 0);
  HttpResponse missing = router.RouteErrorForTesting("GET", "/v2/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("/v2/nothing"), std::string::npos);
  EXPECT_TRUE(missing.headers.empty());

  HttpResponse wrong = router.RouteErrorForTesting("GET", "/v1/completions");
  EXPECT_EQ(wrong.status, 405);
  ASSERT_EQ(wrong.headers.size(), 1u);
  EXPECT_EQ(wrong.headers[0], (std::pair<std::string, std::string>{"Allow", "POST"}));

  HttpResponse both = router.RouteErrorForTesting("DELETE", "/health");
  EXPECT_EQ(both.headers[0].second, "GET, POST");
}

TEST(RouterDeathTest, AddingARouteTwiceIsABug) {
  Router router(openai::OpenAiApi::ErrorPages());
  router.Add("GET", "/x", [](const HttpRequest&, Exchange) {});
  EXPECT_DEATH(router.Add("GET", "/x", [](const HttpRequest&, Exchange) {}), "");
}

}  // namespace
}  // namespace spillway::server::http
