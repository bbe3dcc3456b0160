#include "server/openai/request_parser.h"

#include <gtest/gtest.h>

#include "server/openai/api_error.h"
#include "tests/server/test_model.h"

namespace spillway::server::openai {
namespace {

using testing::TestModel;

struct BadCase {
  std::string body;
  int http_status;
  std::string param;  // "" = null
  std::string message_part = "";
};

void ExpectRefused(const absl::Status& s, const BadCase& c) {
  ASSERT_FALSE(s.ok()) << c.body;
  ApiError e = ApiErrorFromStatus(s);
  EXPECT_EQ(e.http_status, c.http_status) << c.body << " -> " << e.message;
  EXPECT_EQ(e.param.value_or(""), c.param) << c.body << " -> " << e.message;
  EXPECT_NE(e.message.find(c.message_part), std::string::npos) << e.message;
}

TEST(ParseCompletionRequest, RefusesEveryKindOfBadInput) {
  TestModel t;
  const BadCase cases[] = {
      {"{bad json", 400, "", "not valid JSON"},
      {"", 400, "", "not valid JSON"},
      {"[1]", 400, "", "JSON object"},
      {"{\"prompt\": \"\xFF\"}", 400, "", "UTF-8"},
      {R"({"max_tokens": 4})", 400, "prompt", "required"},
      {R"({"prompt": 5})", 400, "prompt"},
      {R"({"prompt": []})", 400, "prompt", "empty"},
      {R"({"prompt": ""})", 400, "prompt", "empty"},
      {R"({"prompt": [[]]})", 400, "prompt", "empty"},
      {R"({"prompt": [1, "a"]})", 400, "prompt"},
      {R"({"prompt": ["a", 1]})", 400, "prompt"},
      {R"({"prompt": [300]})", 400, "prompt", "out of range"},
      {R"({"prompt": [-1]})", 400, "prompt", "out of range"},
      {R"({"prompt": "a", "model": "gpt-4"})", 404, "model", "gpt-4"},
      {R"({"prompt": "a", "model": 3})", 400, "model"},
      {R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": -5})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1.5})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": "16"})", 400, "max_tokens", "integer"},
      {R"({"prompt": "a", "temperature": -1})", 400, "temperature"},
      {R"({"prompt": "a", "temperature": "hot"})", 400, "temperature", "number"},
      {R"({"prompt": "a", "top_p": 0})", 400, "top_p"},
      {R"({"prompt": "a", "top_p": 1.01})", 400, "top_p"},
      {R"({"prompt": "a", "top_k": -2})", 400, "top_k"},
      {R"({"prompt": "a", "min_p": 2})", 400, "min_p"},
      {R"({"prompt": "a", "presence_penalty": 3})", 400, "presence_penalty"},
      {R"({"prompt": "a", "frequency_penalty": -2.5})", 400, "frequency_penalty"},
      {R"({"prompt": "a", "repetition_penalty": 0})", 400, "repetition_penalty"},
      {R"({"prompt": "a", "n": 0})", 400, "n"},
      {R"({"prompt": "a", "n": 17})", 400, "n"},
      {R"({"prompt": "a", "n": true})", 400, "n"},
      {R"({"prompt": "a", "best_of": 3})", 400, "best_of"},
      {R"({"prompt": "a", "stop": 5})", 400, "stop"},
      {R"({"prompt": "a", "stop": ["a", 5]})", 400, "stop"},
      {R"({"prompt": "a", "stop_token_ids": [999]})", 400, "stop_token_ids"},
      {R"({"prompt": "a", "seed": "x"})", 400, "seed"},
      {R"({"prompt": "a", "seed": 1e30})", 400, "seed"},
      {R"({"prompt": "a", "logit_bias": {"x": 1}})", 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"999": 1}})", 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": {"5": "1"}})", 400, "logit_bias"},
      {R"({"prompt": "a", "logit_bias": [1]})", 400, "logit_bias"},
      {R"({"prompt": "a", "logprobs": 21})", 400, "logprobs"},
      {R"({"prompt": "a", "logprobs": -1})", 400, "logprobs"},
      {R"({"prompt": "a", "echo": "yes"})", 400, "echo"},
      {R"({"prompt": "a", "echo": true, "logprobs": 1})", 400, "echo"},
      {R"({"prompt": "a", "stream": 1})", 400, "stream"},
      {R"({"prompt": "a", "stream_options": {"include_usage": true}})", 400, "stream_options"},
      {R"({"prompt": "a", "stream": true, "stream_options": {"include_usage": 1}})", 400,
       "stream_options"},
      {R"({"prompt": "a", "ignore_eos": "no"})", 400, "ignore_eos"},
      {R"({"prompt": "a", "min_tokens": 5, "max_tokens": 2})", 400, "min_tokens"},
      {R"({"prompt": "a", "user": 7})", 400, "user"},
      {R"({"prompt": "a", "suffix": "z"})", 400, "suffix"},
      {R"({"prompt": "a", "max_tokens": 64})", 400, "prompt",
       "maximum context length is 64 tokens. However, you requested 65 tokens (1 in the "
       "prompt, 64 in the completion)"},
      {R"({"prompt": ")" + std::string(64, 'x') + R"("})", 400, "prompt",
       "your request has 64 input tokens"},
  };
  for (const BadCase& c : cases) {
    ExpectRefused(ParseCompletionRequest(c.body, t.model).status(), c);
  }
}

TEST(ParseCompletionRequest, DefaultsFollowVllm) {
  TestModel t;
  absl::StatusOr<GenerationSpec> spec = ParseCompletionRequest(R"({"prompt": "hi"})", t.model);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->requests.size(), 1u);
  const scheduler::Request& r = spec->requests[0];
  EXPECT_EQ(r.prompt, spillway::testing::ByteTokens("hi"));
  EXPECT_EQ(r.stop.max_tokens, 16);
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.logprobs, -1);
  EXPECT_FALSE(spec->stream);
  EXPECT_EQ(spec->endpoint, Endpoint::kCompletions);
}

TEST(ParseCompletionRequest, MapsEveryField) {
  TestModel t;
  absl::StatusOr<GenerationSpec> spec = ParseCompletionRequest(R"({
      "model": "test-model", "prompt": "ab", "max_tokens": 5, "temperature": 0.5,
      "top_p": 0.9, "top_k": 3, "min_p": 0.1, "n": 2, "stop": ["x", "", "yz"], "seed": -1,
      "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.2,
      "logit_bias": {"97": 500, "98": -3}, "logprobs": 2, "ignore_eos": true,
      "min_tokens": 2, "user": "u", "stream": true, "stream_options": {"include_usage": true},
      "stop_token_ids": [257], "priority": -3, "unknown_field": {"ignored": [1]}})",
                                                               t.model);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const scheduler::Request& r = spec->requests[0];
  EXPECT_EQ(r.stop.max_tokens, 5);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.stop.stop_strings, (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(r.sampling.seed, static_cast<uint64_t>(-1));
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.2f);
  ASSERT_EQ(r.sampling.logit_bias.size(), 2u);
  EXPECT_EQ(r.sampling.logit_bias[0], (std::pair<engine::TokenId, float>{97, 100.0f}));  // clamped
  EXPECT_EQ(r.sampling.logit_bias[1], (std::pair<engine::TokenId, float>{98, -3.0f}));
  EXPECT_EQ(r.sampling.logprobs, 2);
  EXPECT_EQ(spec->logprobs, 2);
  EXPECT_TRUE(r.stop.ignore_eos);
  EXPECT_EQ(r.stop.min_tokens, 2);
  EXPECT_EQ(r.stop.stop_token_ids, (std::vector<engine::TokenId>{257}));
  EXPECT_EQ(r.priority, -3);
  EXPECT_TRUE(spec->stream);
  EXPECT_TRUE(spec->include_usage);
  EXPECT_EQ(spec->n, 2);
}

TEST(ParseCompletionRequest, EveryPromptFormGivesOneRequestPerPrompt) {
  TestModel t;
  auto prompts = [&](const std::string& body) {
    std::vector<std::vector<engine::TokenId>> out;
    absl::StatusOr<GenerationSpec> spec = ParseCompletionRequest(body, t.model);
    EXPECT_TRUE(spec.ok()) << spec.status();
    if (spec.ok()) {
      for (const auto& r : spec->requests) out.push_back(r.prompt);
    }
    return out;
  };
  using V = std::vector<std::vector<engine::TokenId>>;
  EXPECT_EQ(prompts(R"({"prompt": "ab"})"), (V{{97, 98}}));
  EXPECT_EQ(prompts(R"({"prompt": ["a", "bc"]})"), (V{{97}, {98, 99}}));
  EXPECT_EQ(prompts(R"({"prompt": [97, 98]})"), (V{{97, 98}}));
  EXPECT_EQ(prompts(R"({"prompt": [[97], [98, 99.0]]})"), (V{{97}, {98, 99}}));
}

TEST(ParseCompletionRequest, EchoKeepsThePromptText) {
  TestModel t;
  absl::StatusOr<GenerationSpec> spec =
      ParseCompletionRequest(R"({"prompt": [[104, 105], [111]], "echo": true})", t.model);
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->echo);
  EXPECT_EQ(spec->echo_texts, (std::vector<std::string>{"hi", "o"}));
}

TEST(ParseChatRequest, RefusesEveryKindOfBadInput) {
  TestModel t;
  const std::string m = R"("messages": [{"role": "user", "content": "hi"}])";
  const BadCase cases[] = {
      {R"({"max_tokens": 4})", 400, "messages", "required"},
      {R"({"messages": []})", 400, "messages"},
      {R"({"messages": "hi"})", 400, "messages"},
      {R"({"messages": [5]})", 400, "messages[0]"},
      {R"({"messages": [{"content": "x"}]})", 400, "messages[0].role"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", 400, "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400,
       "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]})", 400,
       "messages[0].content"},
      {"{" + m + R"(, "model": "other"})", 404, "model"},
      {"{" + m + R"(, "max_completion_tokens": 0})", 400, "max_completion_tokens"},
      {"{" + m + R"(, "max_tokens": "x"})", 400, "max_tokens"},
      {"{" + m + R"(, "logprobs": 1})", 400, "logprobs"},
      {"{" + m + R"(, "top_logprobs": 2})", 400, "top_logprobs", "logprobs"},
      {"{" + m + R"(, "logprobs": true, "top_logprobs": 21})", 400, "top_logprobs"},
      {"{" + m + R"(, "tools": [{"type": "function"}]})", 400, "tools"},
      {"{" + m + R"(, "response_format": {"type": "json_object"}})", 400, "response_format"},
      {"{" + m + R"(, "temperature": -0.5})", 400, "temperature"},
      {"{" + m + R"(, "max_tokens": 60})", 400, "messages",
       "in the messages, 60 in the completion"},
      {R"({"messages": [{"role": "user", "content": ")" + std::string(60, 'x') + R"("}]})", 400,
       "messages", "input tokens"},
  };
  for (const BadCase& c : cases) ExpectRefused(ParseChatRequest(c.body, t.model).status(), c);
}

TEST(ParseChatRequest, RendersTheTemplateWithTextParts) {
  TestModel t;
  t.model.context_tokens = 1000;
  absl::StatusOr<GenerationSpec> spec = ParseChatRequest(
      R"({"messages": [{"role": "developer", "content": "s"},
                       {"role": "user", "content": [{"type": "text", "text": "a"},
                                                    {"type": "text", "text": "b"}]},
                       {"role": "assistant", "content": null}],
          "logprobs": true, "top_logprobs": 3})",
      t.model);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const std::string text =
      "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\na\nb<|im_end|>\n"
      "<|im_start|>assistant\n<|im_end|>\n<|im_start|>assistant\n";
  ASSERT_EQ(spec->requests.size(), 1u);
  EXPECT_EQ(spec->requests[0].prompt, spillway::testing::ByteTokens(text));
  EXPECT_EQ(spec->logprobs, 3);
}

TEST(ParseChatRequest, MaxTokensDefaultsToTheRestOfTheContext) {
  TestModel t;
  t.model.context_tokens = 100;
  absl::StatusOr<GenerationSpec> spec =
      ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", t.model);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const int32_t prompt = static_cast<int32_t>(spec->requests[0].prompt.size());
  EXPECT_EQ(spec->requests[0].stop.max_tokens, 100 - prompt);
  EXPECT_EQ(spec->logprobs, -1);
  spec = ParseChatRequest(
      R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
          "max_completion_tokens": 7})",
      t.model);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->requests[0].stop.max_tokens, 7);
}

TEST(ParseChatRequest, ModelWithoutTemplateRefusesChat) {
  TestModel t;
  t.model.chat_template = nullptr;
  ExpectRefused(
      ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", t.model).status(),
      {"", 400, "messages", "no chat template"});
}

}  // namespace
}  // namespace spillway::server::openai
