// The HTTP front end over a real socket on 127.0.0.1, with the OpenAI endpoints in front of a
// fake engine: keep-alive, pipelining, streaming, disconnects, 413, 429, malformed requests.
#include "server/http/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "server/openai/openai_api.h"
#include "tests/server/test_model.h"

namespace spillway::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

// Answers every choice with "hello" (finish_reason length) at once, or holds requests until
// they are cancelled; can refuse everything as a full queue would.
class FakeEngine final : public openai::GenerationEngine {
 public:
  absl::Status Submit(scheduler::Request r) override {
    absl::MutexLock lock(&mu_);
    if (queue_full_) return absl::ResourceExhaustedError("queue full");
    submitted_.push_back(r.id);
    if (hold_) {
      held_.emplace(r.id, std::move(r));
      return absl::OkStatus();
    }
    for (int32_t i = 0; i < r.n; ++i) {
      scheduler::TokenEvent e{
          .index = i, .text = "hello", .finish_reason = scheduler::FinishReason::kLength};
      if (i == r.n - 1) e.usage = scheduler::Usage{.prompt_tokens = 1, .completion_tokens = r.n};
      r.channel->Push(std::move(e));
    }
    r.channel->Close();
    return absl::OkStatus();
  }
  void Cancel(scheduler::RequestId id) override {
    absl::MutexLock lock(&mu_);
    cancelled_.push_back(id);
    auto it = held_.find(id);
    if (it == held_.end()) return;
    it->second.channel->Push({.finish_reason = scheduler::FinishReason::kCancelled,
                              .error = absl::CancelledError("cancelled")});
    it->second.channel->Close();
    held_.erase(it);
  }
  scheduler::RequestId NextRequestId() override { return ++next_id_; }
  scheduler::EngineStats stats() const override {
    absl::MutexLock lock(&mu_);
    return {.running_seqs = static_cast<int32_t>(held_.size())};
  }

  void set_hold(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_ = hold;
  }
  void set_queue_full(bool full) {
    absl::MutexLock lock(&mu_);
    queue_full_ = full;
  }
  std::vector<scheduler::RequestId> cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }
  size_t num_held() const {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }

 private:
  mutable absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  bool queue_full_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<scheduler::RequestId> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<scheduler::RequestId> cancelled_ ABSL_GUARDED_BY(mu_);
  std::map<scheduler::RequestId, scheduler::Request> held_ ABSL_GUARDED_BY(mu_);
  std::atomic<scheduler::RequestId> next_id_{0};
};

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() : api_(model_.model, engine_), router_(openai::OpenAiApi::ErrorPages()) {
    api_.Register(router_);
    server_ = std::make_unique<http::HttpServer>(
        router_, http::HttpServerOptions{.port = 0, .num_threads = 2, .max_body_bytes = 4096});
    EXPECT_TRUE(server_->Start().ok());
  }
  ~HttpServerTest() override {
    server_->Stop();
    server_->Join();
  }

  tcp::socket Connect() {
    tcp::socket s(ioc_);
    s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
    return s;
  }

  bhttp::response<bhttp::string_body> Call(tcp::socket& s, bhttp::verb verb,
                                           const std::string& target, std::string body = "") {
    bhttp::request<bhttp::string_body> req(verb, target, 11);
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    bhttp::write(s, req);
    bhttp::response<bhttp::string_body> res;
    bhttp::read(s, buffer_, res);
    return res;
  }

  openai::testing::TestModel model_;
  FakeEngine engine_;
  openai::OpenAiApi api_;
  http::Router router_;
  std::unique_ptr<http::HttpServer> server_;
  net::io_context ioc_;
  beast::flat_buffer buffer_;
};

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  tcp::socket s = Connect();
  for (int i = 0; i < 3; ++i) {
    auto res = Call(s, bhttp::verb::get, "/health");
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_TRUE(res.keep_alive());
    EXPECT_EQ(boost::json::parse(res.body()).at("status"), "ok");
  }
  auto models = Call(s, bhttp::verb::get, "/v1/models?x=1");
  EXPECT_EQ(boost::json::parse(models.body()).at("data").at(0).at("id"), "test-model");
}

TEST_F(HttpServerTest, CompletionAnswersWithJson) {
  tcp::socket s = Connect();
  auto res = Call(s, bhttp::verb::post, "/v1/completions", R"({"prompt": "hi", "n": 2})");
  ASSERT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(res[bhttp::field::content_type], "application/json");
  boost::json::value v = boost::json::parse(res.body());
  EXPECT_EQ(v.at("choices").at(1).at("text"), "hello");
  EXPECT_EQ(v.at("usage").at("completion_tokens"), 2);
}

TEST_F(HttpServerTest, StreamIsChunkedSseEndingWithDone) {
  tcp::socket s = Connect();
  auto res = Call(s, bhttp::verb::post, "/v1/chat/completions",
                  R"({"messages": [{"role": "user", "content": "hi"}], "stream": true})");
  ASSERT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(res[bhttp::field::content_type], "text/event-stream");
  EXPECT_TRUE(res.chunked());
  EXPECT_NE(res.body().find("\"content\":\"hello\""), std::string::npos) << res.body();
  EXPECT_TRUE(res.body().ends_with("data: [DONE]\n\n")) << res.body();
  // The connection is still usable.
  EXPECT_EQ(Call(s, bhttp::verb::get, "/health").result_int(), 200);
}

TEST_F(HttpServerTest, ClientThatGoesAwayCancelsItsRequest) {
  engine_.set_hold(true);
  {
    tcp::socket s = Connect();
    bhttp::request<bhttp::string_body> req(bhttp::verb::post, "/v1/completions", 11);
    req.body() = R"({"prompt": "hi", "stream": true})";
    req.prepare_payload();
    bhttp::write(s, req);
    bhttp::response_parser<bhttp::string_body> parser;
    bhttp::read_header(s, buffer_, parser);
    EXPECT_EQ(parser.get().result_int(), 200);
    EXPECT_EQ(engine_.num_held(), 1u);
  }  // closes the socket mid-stream
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (engine_.cancelled().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine_.cancelled().size(), 1u);
  EXPECT_EQ(engine_.num_held(), 0u);
}

TEST_F(HttpServerTest, NonStreamingClientThatGoesAwayCancelsToo) {
  engine_.set_hold(true);
  {
    tcp::socket s = Connect();
    bhttp::request<bhttp::string_body> req(bhttp::verb::post, "/v1/completions", 11);
    req.body() = R"({"prompt": ["a", "b"]})";
    req.prepare_payload();
    bhttp::write(s, req);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (engine_.num_held() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (engine_.cancelled().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine_.cancelled().size(), 2u);
}

TEST_F(HttpServerTest, FullQueueIs429WithRetryAfter) {
  engine_.set_queue_full(true);
  tcp::socket s = Connect();
  auto res = Call(s, bhttp::verb::post, "/v1/completions", R"({"prompt": "hi"})");
  EXPECT_EQ(res.result_int(), 429);
  EXPECT_EQ(res[bhttp::field::retry_after], "1");
  EXPECT_EQ(boost::json::parse(res.body()).at("error").at("code"), "rate_limit_exceeded");
  engine_.set_queue_full(false);
  EXPECT_EQ(Call(s, bhttp::verb::post, "/v1/completions", R"({"prompt": "hi"})").result_int(), 200);
}

TEST_F(HttpServerTest, BodyOverTheLimitIs413) {
  tcp::socket s = Connect();
  auto res = Call(s, bhttp::verb::post, "/v1/completions", std::string(100000, 'x'));
  EXPECT_EQ(res.result_int(), 413);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_NE(res.body().find("4096"), std::string::npos);
}

TEST_F(HttpServerTest, WrongMethodAndUnknownPath) {
  tcp::socket s = Connect();
  auto wrong = Call(s, bhttp::verb::get, "/v1/chat/completions");
  EXPECT_EQ(wrong.result_int(), 405);
  EXPECT_EQ(wrong[bhttp::field::allow], "POST");
  auto missing = Call(s, bhttp::verb::post, "/v1/nothing", "{}");
  EXPECT_EQ(missing.result_int(), 404);
  auto bad = Call(s, bhttp::verb::post, "/v1/completions", "{\"prompt\": \"a\", \"n\": -1}");
  EXPECT_EQ(bad.result_int(), 400);
  EXPECT_EQ(boost::json::parse(bad.body()).at("error").at("param"), "n");
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  tcp::socket s = Connect();
  const std::string fixed =
      "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /detokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 21\r\n\r\n"
      "{\"tokens\": [104,105]}";
  net::write(s, net::buffer(fixed));
  bhttp::response<bhttp::string_body> a, b;
  bhttp::read(s, buffer_, a);
  bhttp::read(s, buffer_, b);
  EXPECT_EQ(a.result_int(), 200);
  EXPECT_EQ(b.result_int(), 200);
  EXPECT_EQ(boost::json::parse(b.body()).at("prompt"), "hi");
}

TEST_F(HttpServerTest, MalformedHttpIs400) {
  tcp::socket s = Connect();
  net::write(s, net::buffer(std::string("NOT HTTP AT ALL\r\n\r\n")));
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buffer_, res);
  EXPECT_EQ(res.result_int(), 400);
}

}  // namespace
}  // namespace spillway::server
