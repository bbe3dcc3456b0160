#include "engine/sampler/sampling_params.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace spillway::engine {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kVocab = 100;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Expects InvalidArgument whose message contains every one of `parts`.
void ExpectRejected(const SamplingParams& params, std::initializer_list<std::string> parts) {
  const absl::Status status = Validate(params, kVocab);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  for (const std::string& part : parts) EXPECT_THAT(status.message(), HasSubstr(part));
}

TEST(ValidateTest, AcceptsDefaults) { EXPECT_TRUE(Validate(SamplingParams{}, kVocab).ok()); }

TEST(ValidateTest, AcceptsEveryBoundaryValue) {
  for (SamplingParams p : {
           SamplingParams{.temperature = 0.0f},
           SamplingParams{.temperature = 100.0f},
           SamplingParams{.top_p = 1.0f},
           SamplingParams{.top_p = 1e-6f},
           SamplingParams{.top_k = -1},
           SamplingParams{.top_k = 0},
           SamplingParams{.top_k = 1},
           SamplingParams{.top_k = 1'000'000},
           SamplingParams{.min_p = 0.0f},
           SamplingParams{.min_p = 1.0f},
           SamplingParams{.repetition_penalty = 1e-3f},
           SamplingParams{.presence_penalty = -2.0f},
           SamplingParams{.presence_penalty = 2.0f},
           SamplingParams{.frequency_penalty = -2.0f},
           SamplingParams{.frequency_penalty = 2.0f},
           SamplingParams{.logit_bias = {{0, -100.0f}, {kVocab - 1, 100.0f}}},
           SamplingParams{.seed = 0},
           SamplingParams{.logprobs = -1},
           SamplingParams{.logprobs = 0},
           SamplingParams{.logprobs = kVocab},
       }) {
    EXPECT_TRUE(Validate(p, kVocab).ok()) << Validate(p, kVocab);
  }
}

TEST(ValidateTest, RejectsTemperature) {
  ExpectRejected({.temperature = -1.0f}, {"temperature must be >= 0, got -1"});
  ExpectRejected({.temperature = kNaN}, {"temperature", ">= 0", "nan"});
  ExpectRejected({.temperature = kInf}, {"temperature", ">= 0", "inf"});
}

TEST(ValidateTest, RejectsTopP) {
  ExpectRejected({.top_p = 0.0f}, {"top_p must be in (0, 1], got 0"});
  ExpectRejected({.top_p = 1.5f}, {"top_p must be in (0, 1], got 1.5"});
  ExpectRejected({.top_p = -0.5f}, {"top_p", "(0, 1]"});
  ExpectRejected({.top_p = kNaN}, {"top_p", "(0, 1]"});
}

TEST(ValidateTest, RejectsTopK) {
  ExpectRejected({.top_k = -2}, {"top_k must be -1 or 0 (off) or >= 1, got -2"});
}

TEST(ValidateTest, RejectsMinP) {
  ExpectRejected({.min_p = -0.1f}, {"min_p must be in [0, 1], got -0.1"});
  ExpectRejected({.min_p = 1.1f}, {"min_p", "[0, 1]"});
  ExpectRejected({.min_p = kNaN}, {"min_p", "[0, 1]"});
}

TEST(ValidateTest, RejectsRepetitionPenalty) {
  ExpectRejected({.repetition_penalty = 0.0f}, {"repetition_penalty must be > 0", "got 0"});
  ExpectRejected({.repetition_penalty = -1.0f}, {"repetition_penalty", "> 0", "got -1"});
  ExpectRejected({.repetition_penalty = kInf}, {"repetition_penalty", "finite"});
  ExpectRejected({.repetition_penalty = kNaN}, {"repetition_penalty", "> 0"});
}

TEST(ValidateTest, RejectsPresenceAndFrequencyPenalties) {
  ExpectRejected({.presence_penalty = 2.5f}, {"presence_penalty must be in [-2, 2], got 2.5"});
  ExpectRejected({.presence_penalty = -2.5f}, {"presence_penalty", "[-2, 2]"});
  ExpectRejected({.presence_penalty = kNaN}, {"presence_penalty", "[-2, 2]"});
  ExpectRejected({.frequency_penalty = 3.0f}, {"frequency_penalty must be in [-2, 2], got 3"});
  ExpectRejected({.frequency_penalty = -3.0f}, {"frequency_penalty", "[-2, 2]"});
  ExpectRejected({.frequency_penalty = kNaN}, {"frequency_penalty", "[-2, 2]"});
}

TEST(ValidateTest, RejectsLogitBias) {
  ExpectRejected({.logit_bias = {{kVocab, 1.0f}}}, {"logit_bias token", "[0, 100)", "got 100"});
  ExpectRejected({.logit_bias = {{-1, 1.0f}}}, {"logit_bias token", "[0, 100)", "got -1"});
  ExpectRejected({.logit_bias = {{3, kInf}}}, {"logit_bias", "token 3", "finite"});
  ExpectRejected({.logit_bias = {{3, kNaN}}}, {"logit_bias", "token 3", "finite"});
  ExpectRejected({.logit_bias = {{3, 1.0f}, {5, 1.0f}, {3, 2.0f}}},
                 {"logit_bias", "at most once", "3"});
}

TEST(ValidateTest, RejectsLogprobs) {
  ExpectRejected({.logprobs = -2}, {"logprobs must be -1 (off) or in [0, 100]", "got -2"});
  ExpectRejected({.logprobs = kVocab + 1}, {"logprobs", "[0, 100]", "got 101"});
}

TEST(ValidateTest, ReportsTheFirstBadFieldOnly) {
  const absl::Status status = Validate({.temperature = -1.0f, .top_p = 0.0f}, kVocab);
  EXPECT_THAT(status.message(), HasSubstr("temperature"));
  EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("top_p")));
}

}  // namespace
}  // namespace spillway::engine
