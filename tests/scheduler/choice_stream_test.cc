// ChoiceStream: stop rules, UTF-8-safe deltas and stop-string hold-back, token by token.
#include "scheduler/choice_stream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/fakes/byte_tokenizer.h"

namespace spillway::scheduler {
namespace {

using testing::ByteTokens;
using testing::kByteEos;
using testing::kByteEot;

engine::SampleResult Sampled(TokenId token) {
  engine::SampleResult r;
  r.token = token;
  return r;
}

class ChoiceStreamTest : public ::testing::Test {
 protected:
  // Feeds `tokens` until the stream finishes; returns the events.
  std::vector<TokenEvent> Feed(const StopRules& rules, const std::vector<TokenId>& tokens,
                               int context_limit_at = -1) {
    ChoiceStream stream(*tokenizer_, rules, eog_, /*index=*/2, /*want_logprobs=*/true);
    std::vector<TokenEvent> events;
    for (size_t i = 0; i < tokens.size() && !stream.finished(); ++i) {
      events.push_back(
          stream.Accept(Sampled(tokens[i]), static_cast<int>(i) + 1 == context_limit_at));
    }
    return events;
  }
  static std::vector<std::string> Texts(const std::vector<TokenEvent>& events) {
    std::vector<std::string> out;
    for (const TokenEvent& e : events) out.push_back(e.text);
    return out;
  }

  std::unique_ptr<engine::Tokenizer> tokenizer_ = testing::MakeByteTokenizer();
  std::vector<TokenId> eog_ = {kByteEos, kByteEot};
};

TEST_F(ChoiceStreamTest, MaxTokensEndsWithLength) {
  const auto events = Feed({.max_tokens = 3}, ByteTokens("abcdef"));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(Texts(events), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(events[0].finish_reason, FinishReason::kNone);
  EXPECT_EQ(events[2].finish_reason, FinishReason::kLength);
  EXPECT_EQ(events[2].index, 2);
  EXPECT_EQ(events[1].token_ids, (std::vector<TokenId>{'b'}));
  ASSERT_EQ(events[1].logprobs.size(), 1u);
  EXPECT_EQ(events[1].logprobs[0].token, 'b');
}

TEST_F(ChoiceStreamTest, EosAndEotStopUnlessIgnoredAndAreNotEmitted) {
  auto events = Feed({.max_tokens = 10}, {'h', 'i', kByteEot, 'x'});
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].finish_reason, FinishReason::kStop);
  EXPECT_TRUE(events[2].token_ids.empty());
  EXPECT_FALSE(events[2].stop_token.has_value());
  EXPECT_EQ(events[2].text, "");

  events = Feed({.max_tokens = 4, .ignore_eos = true}, {'h', kByteEos, 'i', 'j'});
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[1].token_ids, (std::vector<TokenId>{kByteEos}));
  EXPECT_EQ(events[1].text, "");  // special tokens have no text
  EXPECT_EQ(events[3].finish_reason, FinishReason::kLength);
}

TEST_F(ChoiceStreamTest, StopTokenIdsApplyEvenWithIgnoreEosAndAreReported) {
  const auto events =
      Feed({.max_tokens = 10, .ignore_eos = true, .stop_token_ids = {'z'}}, ByteTokens("xyzw"));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].finish_reason, FinishReason::kStop);
  EXPECT_EQ(events[2].stop_token, 'z');
  EXPECT_TRUE(events[2].token_ids.empty());
}

TEST_F(ChoiceStreamTest, StopStringAcrossTokensIsHeldBackAndNeverEmitted) {
  const auto events =
      Feed({.max_tokens = 50, .stop_strings = {"STOP"}}, ByteTokens("Hi SO STOP now"));
  // "S" is held until "O" shows it is not "ST"; then "S", "T", "O", "P" are held and cut.
  EXPECT_EQ(Texts(events),
            (std::vector<std::string>{"H", "i", " ", "", "SO", " ", "", "", "", ""}));
  EXPECT_EQ(events.back().finish_reason, FinishReason::kStop);
  EXPECT_EQ(events.back().stop_string, "STOP");
  EXPECT_EQ(events.back().token_ids, (std::vector<TokenId>{'P'}));
}

TEST_F(ChoiceStreamTest, EarliestOfSeveralStopStringsWins) {
  const auto events = Feed({.max_tokens = 50, .stop_strings = {"cde", "d"}}, ByteTokens("abcdef"));
  std::string text;
  for (const TokenEvent& e : events) text += e.text;
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(events.back().stop_string, "d");
}

TEST_F(ChoiceStreamTest, HeldTextIsReleasedWhenTheChoiceEndsOtherwise) {
  auto events = Feed({.max_tokens = 3, .stop_strings = {"abc"}}, ByteTokens("xab"));
  EXPECT_EQ(Texts(events), (std::vector<std::string>{"x", "", "ab"}));
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  events = Feed({.max_tokens = 9, .stop_strings = {"abc"}}, {'a', kByteEos});
  EXPECT_EQ(Texts(events), (std::vector<std::string>{"", "a"}));
  EXPECT_EQ(events.back().finish_reason, FinishReason::kStop);
}

TEST_F(ChoiceStreamTest, MultiByteCharactersComeOutWhole) {
  // "é" is C3 A9, "€" is E2 82 AC: one byte per token.
  const auto events = Feed({.max_tokens = 6}, ByteTokens("é€!"));
  EXPECT_EQ(Texts(events), (std::vector<std::string>{"", "é", "", "", "€", "!"}));
}

TEST_F(ChoiceStreamTest, StopStringWithMultiByteCharacter) {
  const auto events = Feed({.max_tokens = 20, .stop_strings = {"é!"}}, ByteTokens("aé?é!b"));
  std::string text;
  for (const TokenEvent& e : events) text += e.text;
  EXPECT_EQ(text, "aé?");
  EXPECT_EQ(events.back().stop_string, "é!");
}

TEST_F(ChoiceStreamTest, MinTokensDelaysStopsAndMasksStopTokens) {
  const StopRules rules{
      .max_tokens = 10, .stop_token_ids = {'q'}, .stop_strings = {"a"}, .min_tokens = 3};
  ChoiceStream stream(*tokenizer_, rules, eog_, 0, false);
  std::vector<float> logits(258, 1.0f);
  stream.MaskStopTokens(logits);
  EXPECT_TRUE(std::isinf(logits[kByteEos]) && std::isinf(logits[kByteEot]) &&
              std::isinf(logits['q']));
  EXPECT_EQ(logits['a'], 1.0f);
  const TokenEvent first = stream.Accept(Sampled('a'), false);
  EXPECT_EQ(first.finish_reason, FinishReason::kNone);
  EXPECT_EQ(first.text, "a");  // before min_tokens a stop string is plain text
  EXPECT_EQ(stream.Accept(Sampled('q'), false).finish_reason, FinishReason::kNone);
  std::vector<float> later(258, 1.0f);
  stream.MaskStopTokens(later);
  EXPECT_TRUE(std::isinf(later['q']));  // as vLLM: masked while fewer than 3 were generated
  // A stop string may end the 3rd token.
  const TokenEvent third = stream.Accept(Sampled('a'), false);
  EXPECT_EQ(third.finish_reason, FinishReason::kStop);
  EXPECT_EQ(third.stop_string, "a");
  EXPECT_EQ(third.text, "");
}

TEST_F(ChoiceStreamTest, ContextLimitEndsWithLength) {
  const auto events = Feed({.max_tokens = 10}, ByteTokens("abcdef"), /*context_limit_at=*/2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].finish_reason, FinishReason::kLength);
}

}  // namespace
}  // namespace spillway::scheduler
