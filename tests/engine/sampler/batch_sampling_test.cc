// Sampler::DescribeRow (batch_sampling.h) against Sampler::Sample: the row it describes, read
// by the reference semantics of the device kernel (sample_row_reference.h), gives the same
// processed logits, the same seeded tokens and the same logprobs. The device itself is
// compared with the same reference in tests/gpu/sampling_test.cc.
#include "engine/sampler/batch_sampling.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "engine/sampler/sampler.h"
#include "tests/engine/sampler/sample_row_reference.h"

namespace spillway::engine {
namespace {

using testing::NormalLogits;
using testing::ReferenceSampleRow;

void Mask(std::vector<float>& logits, const std::vector<TokenId>& masked) {
  for (TokenId t : masked) {
    if (t >= 0 && t < static_cast<TokenId>(logits.size())) {
      logits[t] = -std::numeric_limits<float>::infinity();
    }
  }
}

SamplingParams PenalisedParams() {
  return {.temperature = 0.8f,
          .repetition_penalty = 1.3f,
          .presence_penalty = 0.4f,
          .frequency_penalty = 0.25f,
          .logit_bias = {{3, 1.5f}, {10, -2.0f}, {20, 0.5f}},
          .seed = 7,
          .logprobs = 5};
}

Sampler PenalisedSampler() {
  Sampler s(PenalisedParams(), std::vector<TokenId>{9, 1, 3, 3, 5});
  for (TokenId t : {3, 4, 4, 10, 12}) s.Accept(t);
  return s;
}

TEST(DescribeRowTest, MergesEditsOnePerTokenSorted) {
  Sampler s = PenalisedSampler();
  BatchSampling b;
  b.edits.push_back({.token = 99});  // an earlier row's edit stays in place
  s.DescribeRow(std::vector<TokenId>{2, 4, 200, 2, -1}, 64, &b);
  ASSERT_EQ(b.rows.size(), 1u);
  const SampleRow& row = b.rows[0];
  EXPECT_EQ(row.edits_begin, 1);
  EXPECT_EQ(row.edits_end, static_cast<int32_t>(b.edits.size()));
  std::vector<std::tuple<TokenId, uint32_t, float, int32_t>> got;
  for (int32_t i = row.edits_begin; i < row.edits_end; ++i) {
    const TokenEdit& e = b.edits[i];
    got.emplace_back(e.token, e.flags, e.bias, e.count);
  }
  constexpr uint32_t kM = TokenEdit::kMasked, kR = TokenEdit::kRepeated;
  // Masked twice, token 2 is one entry; 200 and -1 are outside the vocabulary and dropped.
  EXPECT_THAT(got,
              ::testing::ElementsAre(std::tuple(1, kR, 0.0f, 0), std::tuple(2, kM, 0.0f, 0),
                                     std::tuple(3, kR, 1.5f, 1), std::tuple(4, kM | kR, 0.0f, 2),
                                     std::tuple(5, kR, 0.0f, 0), std::tuple(9, kR, 0.0f, 0),
                                     std::tuple(10, kR, -2.0f, 1), std::tuple(12, kR, 0.0f, 1),
                                     std::tuple(20, 0u, 0.5f, 0)));
  EXPECT_EQ(row.temperature, 0.8f);
  EXPECT_EQ(row.repetition_penalty, 1.3f);
  EXPECT_EQ(row.logprobs, 5);
  EXPECT_GE(row.uniform, 0.0);
  EXPECT_LT(row.uniform, 1.0);
}

TEST(DescribeRowTest, EditsGiveSamplersProcessedLogitsTokenAndLogprobs) {
  const std::vector<TokenId> masked = {2, 4, 200};
  for (uint32_t seed = 0; seed < 50; ++seed) {
    std::vector<float> logits = NormalLogits(64, 2.0f, seed);
    // Positive and negative logits on penalised tokens, so both repetition branches run.
    logits[3] = 1.0f;
    logits[9] = -1.0f;
    Sampler host = PenalisedSampler();
    Sampler device = host;
    BatchSampling b;
    device.DescribeRow(masked, 64, &b);
    const auto ref = ReferenceSampleRow(logits, b.rows[0], b.edits);

    std::vector<float> processed = logits;
    Mask(processed, masked);
    const SampleResult want = host.Sample(processed);
    ASSERT_EQ(ref.processed, processed) << "seed " << seed;  // bit for bit
    ASSERT_EQ(ref.token, want.token) << "seed " << seed;
    EXPECT_NEAR(ref.logprob, want.logprob, 1e-6);
    ASSERT_EQ(ref.top.size(), want.top.size());
    for (size_t i = 0; i < want.top.size(); ++i) {
      EXPECT_EQ(ref.top[i].token, want.top[i].token);
      EXPECT_NEAR(ref.top[i].logprob, want.top[i].logprob, 1e-6);
    }
  }
}

// With top_p = 1 the host walks its candidates in id order, as the device does, so a seeded
// sequence draws the same tokens from the same generator stream, draw after draw.
TEST(DescribeRowTest, SeededDrawsFollowTheSamplersStream) {
  struct Config {
    float temperature;
    int32_t top_k;
    float min_p;
  };
  const Config configs[] = {
      {1.0f, 0, 0.0f}, {0.7f, 50, 0.0f}, {1.3f, 0, 0.05f}, {0.5f, 200, 0.01f}, {2.0f, 1, 0.0f}};
  const int64_t vocab = 1000;
  for (const Config& c : configs) {
    for (uint64_t seed = 0; seed < 100; ++seed) {
      const std::vector<float> logits = NormalLogits(vocab, 2.0f, static_cast<uint32_t>(seed));
      Sampler host({.temperature = c.temperature, .top_k = c.top_k, .min_p = c.min_p, .seed = seed},
                   {});
      Sampler device = host;
      for (int draw = 0; draw < 3; ++draw) {
        std::vector<float> scratch = logits;
        const TokenId want = host.Sample(scratch).token;
        BatchSampling b;
        device.DescribeRow({}, vocab, &b);
        ASSERT_EQ(ReferenceSampleRow(logits, b.rows[0], b.edits).token, want)
            << "T " << c.temperature << " top_k " << c.top_k << " min_p " << c.min_p << " seed "
            << seed << " draw " << draw;
      }
    }
  }
}

// top_p < 1: the host walks its kept set in a selection order, not id order, so a seeded draw
// may pick another token (docs/gpu.md), but always one of the same kept set.
TEST(DescribeRowTest, TopPKeepsTheSamplersSet) {
  const int64_t vocab = 500;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const std::vector<float> logits = NormalLogits(vocab, 3.0f, static_cast<uint32_t>(seed));
    const SamplingParams params{.temperature = 0.9f, .top_p = 0.8f, .top_k = 100, .seed = seed};
    Sampler host(params, {});
    Sampler device = host;
    std::vector<float> scratch = logits;
    const TokenId got = host.Sample(scratch).token;
    BatchSampling b;
    device.DescribeRow({}, vocab, &b);
    const auto ref = ReferenceSampleRow(logits, b.rows[0], b.edits);
    EXPECT_TRUE(ref.kept[got]) << "seed " << seed << " token " << got;
    EXPECT_TRUE(ref.kept[ref.token]);
  }
}

TEST(DescribeRowTest, GreedyRowsDrawNothing) {
  Sampler host({.temperature = 0.0f, .seed = 1}, {});
  BatchSampling b;
  host.DescribeRow({}, 8, &b);
  EXPECT_EQ(b.rows[0].uniform, 0.0);
  EXPECT_TRUE(b.edits.empty());
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.0f, 2.0f, 1.9f};
  EXPECT_EQ(ReferenceSampleRow(logits, b.rows[0], b.edits).token, 1);  // ties: lowest id
}

}  // namespace
}  // namespace spillway::engine
