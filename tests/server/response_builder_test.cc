#include "server/openai/response_builder.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "absl/strings/str_split.h"
#include "tests/server/test_model.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;
using scheduler::FinishReason;
using scheduler::TokenEvent;
using testing::TestModel;

ResponseContext Context(const TestModel& t, Endpoint endpoint, bool stream, int32_t n = 1,
                        size_t num_prompts = 1) {
  return {.endpoint = endpoint,
          .stream = stream,
          .n = n,
          .num_prompts = num_prompts,
          .id = "id-1",
          .created_unix = 7,
          .model = "test-model",
          .tokenizer = t.tokenizer.get()};
}

TokenEvent Text(int32_t index, std::string text, FinishReason finish = FinishReason::kNone) {
  TokenEvent e;
  e.index = index;
  e.token_ids = spillway::testing::ByteTokens(text);
  e.text = std::move(text);
  e.finish_reason = finish;
  return e;
}

// The JSON payloads of an SSE byte string; "[DONE]" stays a string.
std::vector<json::value> SseEvents(const std::string& sse) {
  std::vector<json::value> out;
  EXPECT_TRUE(sse.empty() || sse.ends_with("\n\n")) << sse;
  for (absl::string_view line : absl::StrSplit(sse, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "data: ")) << line;
    absl::string_view payload = line.substr(6);
    if (payload == "[DONE]") {
      out.emplace_back("[DONE]");
    } else {
      out.push_back(json::parse(std::string_view(payload.data(), payload.size())));
    }
  }
  return out;
}

TEST(ResponseBuilder, CompletionJsonWithChoicesUsageAndStopReason) {
  TestModel t;
  ResponseBuilder b(Context(t, Endpoint::kCompletions, false, /*n=*/2));
  EXPECT_EQ(b.OnEvent(0, Text(1, "yo", FinishReason::kLength)), "");
  TokenEvent last = Text(0, "hi", FinishReason::kStop);
  last.stop_string = "!";
  last.usage = scheduler::Usage{.prompt_tokens = 3, .completion_tokens = 4, .cached_tokens = 2};
  b.OnEvent(0, Text(0, "a"));
  b.OnEvent(0, last);
  EXPECT_TRUE(b.all_finished());
  EXPECT_TRUE(b.error().ok());
  json::value v = json::parse(b.FinalJson());
  EXPECT_EQ(v.at("object"), "text_completion");
  EXPECT_EQ(v.at("id"), "id-1");
  EXPECT_EQ(v.at("model"), "test-model");
  const json::array& choices = v.at("choices").as_array();
  ASSERT_EQ(choices.size(), 2u);
  EXPECT_EQ(choices[0].at("text"), "ahi");
  EXPECT_EQ(choices[0].at("finish_reason"), "stop");
  EXPECT_EQ(choices[0].at("stop_reason"), "!");
  EXPECT_TRUE(choices[0].at("logprobs").is_null());
  EXPECT_EQ(choices[1].at("index"), 1);
  EXPECT_EQ(choices[1].at("text"), "yo");
  EXPECT_EQ(choices[1].at("finish_reason"), "length");
  const json::value& usage = v.at("usage");
  EXPECT_EQ(usage.at("prompt_tokens"), 3);
  EXPECT_EQ(usage.at("completion_tokens"), 4);
  EXPECT_EQ(usage.at("total_tokens"), 7);
  EXPECT_EQ(usage.at("prompt_tokens_details").at("cached_tokens"), 2);
}

TEST(ResponseBuilder, ChoicesOfSeveralPromptsAreIndexedPromptTimesN) {
  TestModel t;
  ResponseBuilder b(Context(t, Endpoint::kCompletions, false, /*n=*/2, /*num_prompts=*/2));
  b.OnEvent(1, Text(0, "p1c0", FinishReason::kLength));
  b.OnEvent(1, Text(1, "p1c1", FinishReason::kLength));
  EXPECT_FALSE(b.all_finished());
  b.OnEvent(0, Text(1, "p0c1", FinishReason::kLength));
  b.OnEvent(0, Text(0, "p0c0", FinishReason::kLength));
  json::value v = json::parse(b.FinalJson());
  const json::array& c = v.at("choices").as_array();
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].at("text"), "p0c0");
  EXPECT_EQ(c[1].at("text"), "p0c1");
  EXPECT_EQ(c[2].at("text"), "p1c0");
  EXPECT_EQ(c[3].at("text"), "p1c1");
  EXPECT_EQ(c[3].at("index"), 3);
}

TEST(ResponseBuilder, ChatStreamSendsRoleThenDeltasThenUsageThenDone) {
  TestModel t;
  ResponseContext ctx = Context(t, Endpoint::kChatCompletions, true);
  ctx.include_usage = true;
  ResponseBuilder b(ctx);
  std::vector<json::value> start = SseEvents(b.StreamStart());
  ASSERT_EQ(start.size(), 1u);
  EXPECT_EQ(start[0].at("object"), "chat.completion.chunk");
  EXPECT_EQ(start[0].at("choices").at(0).at("delta").at("role"), "assistant");
  EXPECT_TRUE(start[0].at("usage").is_null());

  std::vector<json::value> a = SseEvents(b.OnEvent(0, Text(0, "Hel")));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].at("choices").at(0).at("delta").at("content"), "Hel");
  EXPECT_TRUE(a[0].at("choices").at(0).at("finish_reason").is_null());
  EXPECT_EQ(b.OnEvent(0, Text(0, "")), "");  // nothing new: no chunk
  TokenEvent last = Text(0, "", FinishReason::kStop);
  last.usage = scheduler::Usage{.prompt_tokens = 5, .completion_tokens = 1};
  std::vector<json::value> f = SseEvents(b.OnEvent(0, last));
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].at("choices").at(0).at("finish_reason"), "stop");
  EXPECT_TRUE(f[0].at("choices").at(0).at("delta").as_object().empty());

  std::vector<json::value> end = SseEvents(b.StreamEnd());
  ASSERT_EQ(end.size(), 2u);
  EXPECT_TRUE(end[0].at("choices").as_array().empty());
  EXPECT_EQ(end[0].at("usage").at("total_tokens"), 6);
  EXPECT_EQ(end[1], "[DONE]");
}

TEST(ResponseBuilder, CompletionStreamWithEchoAndNoUsage) {
  TestModel t;
  ResponseContext ctx = Context(t, Endpoint::kCompletions, true);
  ctx.echo_texts = {"Q: "};
  ResponseBuilder b(ctx);
  std::vector<json::value> start = SseEvents(b.StreamStart());
  ASSERT_EQ(start.size(), 1u);
  EXPECT_EQ(start[0].at("choices").at(0).at("text"), "Q: ");
  EXPECT_FALSE(start[0].as_object().contains("usage"));
  std::vector<json::value> e = SseEvents(b.OnEvent(0, Text(0, "A", FinishReason::kLength)));
  EXPECT_EQ(e[0].at("object"), "text_completion");
  EXPECT_EQ(e[0].at("choices").at(0).at("text"), "A");
  EXPECT_EQ(e[0].at("choices").at(0).at("finish_reason"), "length");
  EXPECT_EQ(b.StreamEnd(), "data: [DONE]\n\n");
}

TEST(ResponseBuilder, LegacyCompletionLogprobs) {
  TestModel t;
  ResponseContext ctx = Context(t, Endpoint::kCompletions, false);
  ctx.logprobs = 1;
  ResponseBuilder b(ctx);
  TokenEvent e = Text(0, "ab");
  e.logprobs = {{.token = 97, .logprob = -0.5f, .top = {{98, -0.25f}, {99, -3.0f}}},
                {.token = 98, .logprob = -1.0f, .top = {{98, -1.0f}}}};
  b.OnEvent(0, e);
  TokenEvent f = Text(0, "", FinishReason::kLength);
  b.OnEvent(0, f);
  json::value v = json::parse(b.FinalJson());
  const json::value& lp = v.at("choices").at(0).at("logprobs");
  EXPECT_EQ(lp.at("tokens"), (json::array{"a", "b"}));
  EXPECT_EQ(lp.at("token_logprobs").at(0).as_double(), -0.5);
  EXPECT_EQ(lp.at("text_offset"), (json::array{0, 1}));
  // Top 1 alternative plus the sampled token.
  const json::object& top0 = lp.at("top_logprobs").at(0).as_object();
  EXPECT_EQ(top0.size(), 2u);
  EXPECT_EQ(top0.at("b").as_double(), -0.25);
  EXPECT_EQ(top0.at("a").as_double(), -0.5);
  EXPECT_EQ(lp.at("top_logprobs").at(1).as_object().size(), 1u);
}

TEST(ResponseBuilder, ChatLogprobsWithBytesAndTopLogprobs) {
  TestModel t;
  ResponseContext ctx = Context(t, Endpoint::kChatCompletions, true);
  ctx.logprobs = 2;
  ResponseBuilder b(ctx);
  TokenEvent e = Text(0, "a", FinishReason::kLength);
  e.logprobs = {{.token = 97,
                 .logprob = -std::numeric_limits<float>::infinity(),
                 .top = {{97, -0.1f}, {98, -2.0f}, {99, -4.0f}}}};
  std::vector<json::value> chunks = SseEvents(b.OnEvent(0, e));
  const json::value& content = chunks.at(0).at("choices").at(0).at("logprobs").at("content");
  ASSERT_EQ(content.as_array().size(), 1u);
  EXPECT_EQ(content.at(0).at("token"), "a");
  EXPECT_EQ(content.at(0).at("logprob").as_double(), -9999.0);  // -inf has no JSON
  EXPECT_EQ(content.at(0).at("bytes"), (json::array{97}));
  EXPECT_EQ(content.at(0).at("top_logprobs").as_array().size(), 2u);
  EXPECT_EQ(content.at(0).at("top_logprobs").at(1).at("token"), "b");
}

TEST(ResponseBuilder, AnEngineErrorBecomesTheResponseError) {
  TestModel t;
  ResponseBuilder plain(Context(t, Endpoint::kCompletions, false));
  TokenEvent e;
  e.finish_reason = FinishReason::kCancelled;
  e.error = absl::UnavailableError("server shutting down");
  plain.OnEvent(0, e);
  EXPECT_TRUE(plain.all_finished());
  EXPECT_EQ(plain.error().code(), absl::StatusCode::kUnavailable);

  ResponseBuilder streamed(Context(t, Endpoint::kChatCompletions, true));
  streamed.OnEvent(0, Text(0, "x"));
  TokenEvent err;
  err.finish_reason = FinishReason::kError;
  streamed.OnEvent(0, err);
  std::vector<json::value> end = SseEvents(streamed.StreamEnd());
  ASSERT_EQ(end.size(), 2u);
  EXPECT_EQ(end[0].at("error").at("type"), "server_error");
  EXPECT_EQ(end[1], "[DONE]");
}

}  // namespace
}  // namespace spillway::server::openai
