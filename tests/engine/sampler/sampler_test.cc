#include "engine/sampler/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace spillway::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// ---------------------------------------------------------------------------------------------
// Helpers

// Logits whose softmax is `probs` (which need not sum to 1: softmax renormalises).
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<float> RandomLogits(int64_t vocab, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = normal(gen);
  return logits;
}

TokenId ArgmaxOf(const std::vector<float>& logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Samples `num_samples` times from the same logits (fresh copy each time, no Accept) and
// counts each token.
std::vector<int64_t> Histogram(Sampler& sampler, const std::vector<float>& logits,
                               int num_samples) {
  std::vector<int64_t> counts(logits.size(), 0);
  std::vector<float> scratch(logits.size());
  for (int i = 0; i < num_samples; ++i) {
    scratch = logits;
    ++counts[sampler.Sample(scratch).token];
  }
  return counts;
}

// Checks a histogram of `num_samples` draws against the probabilities `probs`:
//   * a token with probability 0 (outside the kept set) must never appear;
//   * every other count is Binomial(N, q); it must lie within 5 standard deviations,
//     sqrt(N q (1 - q)), of N q.
// Why 5 sigma: every kept token in these tests has N q >= 100, where the normal approximation
// to the binomial is good, and a correct sampler falls outside +-5 sigma with probability
// ~5.7e-7 per check; with fewer than 200 checks in this file, the chance that a correct
// implementation fails for an arbitrary seed is below 1e-4 (and the seeds are fixed, so a pass
// is reproducible). It stays sharp: at N = 20000, 5 sigma is at most 354 draws, 1.8 points of
// probability, while keeping one token too many or too few, or skipping a renormalisation,
// moves some frequency by 5 points or more in every distribution below.
void ExpectFrequencies(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                       int num_samples) {
  ASSERT_EQ(counts.size(), probs.size());
  for (size_t t = 0; t < probs.size(); ++t) {
    const double q = probs[t];
    if (q == 0.0) {
      EXPECT_EQ(counts[t], 0) << "token " << t << " is outside the kept set";
      continue;
    }
    const double expected = num_samples * q;
    const double sigma = std::sqrt(num_samples * q * (1.0 - q));
    EXPECT_NEAR(static_cast<double>(counts[t]), expected, 5.0 * sigma)
        << "token " << t << " with probability " << q;
  }
}

// Normalises `weights` restricted to `kept` tokens; everything else gets probability 0.
std::vector<double> Restrict(const std::vector<double>& weights, const std::vector<int>& kept) {
  std::vector<double> probs(weights.size(), 0.0);
  double total = 0.0;
  for (int t : kept) total += weights[t];
  for (int t : kept) probs[t] = weights[t] / total;
  return probs;
}

// An independent, obviously-correct reference of temperature -> top_k -> top_p -> min_p over
// already processed logits, in double with a full sort. Returns the final distribution and, in
// `top_p_margin`, how far (as a fraction of the mass) the top_p target is from the nearest
// cumulative sum, so tests can assert that float rounding cannot move the cut.
std::vector<double> ReferenceProbs(const std::vector<float>& logits, const SamplingParams& p,
                                   double* top_p_margin = nullptr) {
  const int n = static_cast<int>(logits.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double max_logit = logits[order[0]];
  std::vector<double> w(n);
  for (int t = 0; t < n; ++t) w[t] = std::exp((logits[t] - max_logit) / p.temperature);

  std::vector<int> kept = order;
  if (p.top_k > 0 && p.top_k < n) {
    const float kth = logits[order[p.top_k - 1]];
    std::erase_if(kept, [&](int t) { return logits[t] < kth; });
  }
  if (top_p_margin != nullptr) *top_p_margin = 1.0;
  if (p.top_p < 1.0f) {
    double total = 0.0;
    for (int t : kept) total += w[t];
    const double target = p.top_p * total;
    double cumulative = 0.0;
    size_t cut = kept.size();
    for (size_t i = 0; i < kept.size(); ++i) {
      if (top_p_margin != nullptr) {
        *top_p_margin = std::min(*top_p_margin, std::abs(cumulative - target) / total);
      }
      if (cumulative >= target) {
        cut = i;
        break;
      }
      cumulative += w[kept[i]];
    }
    kept.resize(cut);
  }
  if (p.min_p > 0.0f) {
    double max_w = 0.0;
    for (int t : kept) max_w = std::max(max_w, w[t]);
    std::erase_if(kept, [&](int t) { return w[t] < p.min_p * max_w; });
  }
  return Restrict(w, kept);
}

std::vector<double> LogSoftmax(const std::vector<float>& logits) {
  double max_logit = -std::numeric_limits<double>::infinity();
  for (float x : logits) max_logit = std::max<double>(max_logit, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  std::vector<double> out;
  for (float x : logits) out.push_back(static_cast<double>(x) - max_logit - std::log(sum));
  return out;
}

// A hand-built distribution whose ids are not in probability order.
//                                             id:   0     1     2     3     4
const std::vector<double> kShuffledProbs = {0.10, 0.50, 0.05, 0.20, 0.15};
constexpr int kNumSamples = 20000;

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerTest, GreedyPicksArgmax) {
  Sampler sampler({.temperature = 0.0f}, {});
  for (int i = 0; i < 5; ++i) {
    std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
    EXPECT_EQ(sampler.Sample(logits).token, 1);
  }
  std::vector<float> logits = RandomLogits(49152, 3.0f, 1);
  const TokenId expected = ArgmaxOf(logits);
  EXPECT_EQ(sampler.Sample(logits).token, expected);
}

TEST(SamplerTest, GreedyTieGoesToLowestId) {
  Sampler sampler({.temperature = 0.0f}, {});
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> logits = {kNegInf, 1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(sampler.Sample(logits).token, 2);
}

TEST(SamplerTest, TemperatureBelowEpsilonIsGreedy) {
  // Below kGreedyTemperature the sampler must not draw at all: even exact ties resolve to the
  // lowest id every time.
  Sampler sampler({.temperature = kGreedyTemperature / 2, .seed = 7}, {});
  for (int i = 0; i < 100; ++i) {
    std::vector<float> logits = {0.0f, 5.0f, 5.0f, 1.0f};
    EXPECT_EQ(sampler.Sample(logits).token, 1);
  }
}

TEST(SamplerTest, TemperatureTowardZeroConvergesToArgmax) {
  std::vector<float> logits = RandomLogits(1000, 1.0f, 2);
  const TokenId argmax = ArgmaxOf(logits);
  // Make the gap to the runner-up at least 0.1 so the limit is reached at T = 1e-3
  // (runner-up weight <= exp(-100)).
  logits[argmax] += 0.1f;
  double previous_share = 0.0;
  for (float temperature : {1.0f, 0.3f, 0.1f, 0.03f}) {
    Sampler sampler({.temperature = temperature, .seed = 3}, {});
    const std::vector<int64_t> counts = Histogram(sampler, logits, 2000);
    const double share = counts[argmax] / 2000.0;
    EXPECT_GE(share, previous_share) << "temperature " << temperature;
    previous_share = share;
  }
  Sampler sampler({.temperature = 1e-3f, .seed = 3}, {});
  EXPECT_EQ(Histogram(sampler, logits, 1000)[argmax], 1000);
}

// ---------------------------------------------------------------------------------------------
// top_k, top_p, min_p

TEST(SamplerTest, TopK1EqualsGreedy) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(1000, 2.0f, 100 + seed);
    Sampler sampler({.top_k = 1, .seed = seed}, {});
    EXPECT_EQ(Histogram(sampler, logits, 50)[ArgmaxOf(logits)], 50);
  }
}

TEST(SamplerTest, TopKKeepsTheKMostLikely) {
  Sampler sampler({.top_k = 3, .seed = 11}, {});
  const auto counts = Histogram(sampler, LogitsOf(kShuffledProbs), kNumSamples);
  // Kept: ids 1 (0.50), 3 (0.20), 4 (0.15), renormalised over 0.85.
  ExpectFrequencies(counts, Restrict(kShuffledProbs, {1, 3, 4}), kNumSamples);
}

TEST(SamplerTest, TopKKeepsTokensTiedWithTheKth) {
  // As vLLM: everything >= the k-th largest logit stays.
  const std::vector<float> logits = {2.0f, 1.0f, 1.0f, 0.0f};
  Sampler sampler({.top_k = 2, .seed = 12}, {});
  const auto counts = Histogram(sampler, logits, kNumSamples);
  const std::vector<double> weights = {std::exp(2.0), std::exp(1.0), std::exp(1.0), 1.0};
  ExpectFrequencies(counts, Restrict(weights, {0, 1, 2}), kNumSamples);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetWithEnoughMass) {
  // Sorted: id1 0.50, id3 0.20, id4 0.15, id0 0.10, id2 0.05; cumulative 0.50 0.70 0.85 0.95 1.
  struct Case {
    float top_p;
    std::vector<int> kept;
  };
  const Case cases[] = {
      {0.30f, {1}},           // 0.50 >= 0.30 already
      {0.65f, {1, 3}},        // 0.70 >= 0.65
      {0.80f, {1, 3, 4}},     // 0.85 >= 0.80
      {0.90f, {1, 3, 4, 0}},  // 0.95 >= 0.90
      {0.99f, {1, 3, 4, 0, 2}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "top_p " << c.top_p);
    Sampler sampler({.top_p = c.top_p, .seed = 13}, {});
    const auto counts = Histogram(sampler, LogitsOf(kShuffledProbs), kNumSamples);
    ExpectFrequencies(counts, Restrict(kShuffledProbs, c.kept), kNumSamples);
  }
}

TEST(SamplerTest, TopPAppliesAfterTemperatureAndTopK) {
  // T = 2 flattens {0.5, 0.2, 0.15, 0.1, 0.05} to weights sqrt(p): 0.707 0.447 0.387 0.316
  // 0.224 (total 2.081). top_k = 4 drops id 2; over the remaining 1.857, top_p = 0.6 needs
  // 0.707 + 0.447 = 1.154 >= 1.114, so ids 1 and 3 stay.
  const SamplingParams params = {.temperature = 2.0f, .top_p = 0.6f, .top_k = 4, .seed = 14};
  std::vector<double> weights;
  for (double p : kShuffledProbs) weights.push_back(std::sqrt(p));
  Sampler sampler(params, {});
  const auto counts = Histogram(sampler, LogitsOf(kShuffledProbs), kNumSamples);
  ExpectFrequencies(counts, Restrict(weights, {1, 3}), kNumSamples);
}

TEST(SamplerTest, TopPCutDeepInALargeVocabularyMatchesReference) {
  // 170 likely tokens at scattered ids, gently decreasing, and 830 unlikely ones: the cut
  // lands past the first sorted chunks, exercising the chunked partial sort.
  constexpr int kVocab = 1000;
  std::vector<int> ids(kVocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(15));
  std::vector<float> logits(kVocab, -6.0f);
  for (int rank = 0; rank < 170; ++rank) logits[ids[rank]] = -0.002f * rank;
  const SamplingParams params = {.top_p = 0.85f, .seed = 16};
  double margin = 0.0;
  const std::vector<double> expected = ReferenceProbs(logits, params, &margin);
  ASSERT_GT(margin, 1e-4) << "the cut is too close to call in float";
  const int num_kept = static_cast<int>(
      std::count_if(expected.begin(), expected.end(), [](double q) { return q > 0; }));
  ASSERT_GT(num_kept, 100);
  ASSERT_LT(num_kept, 170);
  Sampler sampler(params, {});
  ExpectFrequencies(Histogram(sampler, logits, kNumSamples), expected, kNumSamples);
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheMostLikely) {
  struct Case {
    float min_p;
    std::vector<int> kept;
  };
  const Case cases[] = {
      {0.25f, {1, 3, 4}},  // threshold 0.125: drops 0.10 and 0.05
      {0.35f, {1, 3}},     // threshold 0.175
      {0.90f, {1}},        // threshold 0.45
      {0.05f, {0, 1, 2, 3, 4}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "min_p " << c.min_p);
    Sampler sampler({.min_p = c.min_p, .seed = 17}, {});
    const auto counts = Histogram(sampler, LogitsOf(kShuffledProbs), kNumSamples);
    ExpectFrequencies(counts, Restrict(kShuffledProbs, c.kept), kNumSamples);
  }
}

TEST(SamplerTest, CombinedFiltersMatchReference) {
  const std::vector<float> logits = RandomLogits(500, 1.5f, 18);
  const SamplingParams params = {
      .temperature = 0.8f, .top_p = 0.9f, .top_k = 40, .min_p = 0.05f, .seed = 19};
  double margin = 0.0;
  const std::vector<double> expected = ReferenceProbs(logits, params, &margin);
  ASSERT_GT(margin, 1e-4);
  Sampler sampler(params, {});
  const auto counts = Histogram(sampler, logits, kNumSamples);
  // Only the kept set is checked exactly here; tokens with N q < 100 get the loose bound of
  // never exceeding the kept set.
  for (size_t t = 0; t < expected.size(); ++t) {
    if (expected[t] == 0.0) {
      EXPECT_EQ(counts[t], 0) << "token " << t;
    } else if (expected[t] * kNumSamples >= 100) {
      const double sigma = std::sqrt(kNumSamples * expected[t] * (1 - expected[t]));
      EXPECT_NEAR(counts[t], kNumSamples * expected[t], 5 * sigma) << "token " << t;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Logit bias and penalties. Sample() leaves the processed logits (bias and penalties applied)
// in its argument, so their exact effect is visible.

std::vector<float> Processed(Sampler& sampler, std::vector<float> logits) {
  sampler.Sample(logits);
  return logits;
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  // Prompt {0, 1}, output {2, 0}: id 0 is in both and is penalised once.
  const std::vector<TokenId> prompt = {1, 0, 1};
  Sampler sampler({.temperature = 0.0f, .repetition_penalty = 2.0f}, prompt);
  sampler.Accept(2);
  sampler.Accept(0);
  EXPECT_THAT(Processed(sampler, {2.0f, -2.0f, 1.0f, -1.0f, 0.5f}),
              ElementsAre(1.0f, -4.0f, 0.5f, -1.0f, 0.5f));
}

TEST(SamplerTest, FrequencyPenaltyCountsOutputOccurrencesOnly) {
  Sampler sampler({.temperature = 0.0f, .frequency_penalty = 0.5f}, std::vector<TokenId>{0});
  for (TokenId t : {2, 2, 2, 4}) sampler.Accept(t);
  EXPECT_THAT(Processed(sampler, {2.0f, -2.0f, 1.0f, -1.0f, 0.5f}),
              ElementsAre(2.0f, -2.0f, -0.5f, -1.0f, 0.0f));
}

TEST(SamplerTest, PresencePenaltyAppliesOncePerOutputToken) {
  Sampler sampler({.temperature = 0.0f, .presence_penalty = 0.5f}, std::vector<TokenId>{0});
  for (TokenId t : {2, 2, 2, 4}) sampler.Accept(t);
  EXPECT_THAT(Processed(sampler, {2.0f, -2.0f, 1.0f, -1.0f, 0.5f}),
              ElementsAre(2.0f, -2.0f, 0.5f, -1.0f, 0.0f));
}

TEST(SamplerTest, NegativePenaltiesRaiseLogits) {
  Sampler sampler({.temperature = 0.0f, .presence_penalty = -1.0f, .frequency_penalty = -0.5f}, {});
  for (TokenId t : {1, 1}) sampler.Accept(t);
  EXPECT_THAT(Processed(sampler, {0.0f, 0.0f}), ElementsAre(0.0f, 2.0f));
}

TEST(SamplerTest, PenaltiesApplyRepetitionThenFrequencyThenPresence) {
  // 3.0 / 2 = 1.5, - 2 * 0.25 = 1.0, - 0.5 = 0.5. (Frequency first would give 1.0.)
  Sampler sampler({.temperature = 0.0f,
                   .repetition_penalty = 2.0f,
                   .presence_penalty = 0.5f,
                   .frequency_penalty = 0.25f},
                  {});
  for (TokenId t : {0, 0}) sampler.Accept(t);
  EXPECT_THAT(Processed(sampler, {3.0f, 1.0f}), ElementsAre(0.5f, 1.0f));
}

TEST(SamplerTest, LogitBiasIsAddedBeforePenalties) {
  // ids 1 and 2 are in the prompt. id 2: bias first gives (-1 + 1.5) / 2 = 0.25; penalty first
  // would give -1 * 2 + 1.5 = -0.5. id 3 (not in the prompt) only gets its bias.
  Sampler sampler({.temperature = 0.0f,
                   .repetition_penalty = 2.0f,
                   .logit_bias = {{1, 3.0f}, {2, 1.5f}, {3, -0.5f}}},
                  std::vector<TokenId>{1, 2});
  EXPECT_THAT(Processed(sampler, {0.0f, -1.0f, -1.0f, 0.0f}),
              ElementsAre(0.0f, 1.0f, 0.25f, -0.5f));
}

TEST(SamplerTest, LogitBiasForcesAndBansTokens) {
  const std::vector<float> logits = RandomLogits(1000, 2.0f, 20);
  Sampler forced({.logit_bias = {{7, 100.0f}}, .seed = 21}, {});
  EXPECT_EQ(Histogram(forced, logits, 200)[7], 200);

  const TokenId argmax = ArgmaxOf(logits);
  std::vector<float> without_argmax = logits;
  without_argmax[argmax] = -std::numeric_limits<float>::infinity();
  Sampler banned({.temperature = 0.0f, .logit_bias = {{argmax, -100.0f}}}, {});
  std::vector<float> scratch = logits;
  EXPECT_EQ(banned.Sample(scratch).token, ArgmaxOf(without_argmax));
}

TEST(SamplerTest, OnlyAcceptedTokensArePenalised) {
  Sampler sampler({.temperature = 0.0f, .presence_penalty = 2.0f}, {});
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f};
  EXPECT_EQ(Processed(sampler, logits), logits);  // Sample alone records nothing
  EXPECT_EQ(Processed(sampler, logits), logits);
  sampler.Accept(2);  // forced, never sampled
  EXPECT_THAT(Processed(sampler, logits), ElementsAre(1.0f, 2.0f, -2.0f));
  EXPECT_EQ(sampler.num_output_tokens(), 1);
}

// ---------------------------------------------------------------------------------------------
// Seeds

std::vector<TokenId> Generate(const SamplingParams& params, int num_tokens) {
  const std::vector<float> logits = RandomLogits(1000, 1.0f, 22);
  Sampler sampler(params, std::vector<TokenId>{5, 6, 7});
  std::vector<TokenId> tokens;
  for (int i = 0; i < num_tokens; ++i) {
    std::vector<float> scratch = logits;
    tokens.push_back(sampler.Sample(scratch).token);
    sampler.Accept(tokens.back());
  }
  return tokens;
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  SamplingParams params = {.top_p = 0.95f, .repetition_penalty = 1.1f, .seed = 42};
  const std::vector<TokenId> first = Generate(params, 100);
  EXPECT_EQ(Generate(params, 100), first);
  params.seed = 43;
  EXPECT_NE(Generate(params, 100), first);
  params.seed.reset();  // from std::random_device
  EXPECT_NE(Generate(params, 100), Generate(params, 100));
}

// ---------------------------------------------------------------------------------------------
// Logprobs

TEST(SamplerTest, LogprobsAreLogSoftmaxOfTheRawLogits) {
  // Every processing step is on, and none of them may leak into the logprobs.
  Sampler sampler({.temperature = 0.7f,
                   .top_p = 0.9f,
                   .top_k = 50,
                   .min_p = 0.01f,
                   .repetition_penalty = 1.3f,
                   .presence_penalty = 0.5f,
                   .frequency_penalty = 0.3f,
                   .logit_bias = {{3, 5.0f}},
                   .seed = 23,
                   .logprobs = 5},
                  std::vector<TokenId>{1, 2, 3});
  for (int step = 0; step < 20; ++step) {
    const std::vector<float> raw = RandomLogits(2000, 2.0f, 300 + step);
    const std::vector<double> expected = LogSoftmax(raw);
    std::vector<int> order(raw.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
    std::vector<float> scratch = raw;
    const SampleResult result = sampler.Sample(scratch);
    auto tolerance = [](double x) { return 1e-5 + 1e-6 * std::abs(x); };
    EXPECT_NEAR(result.logprob, expected[result.token], tolerance(expected[result.token]));
    ASSERT_EQ(result.top.size(), 5u);
    for (size_t i = 0; i < result.top.size(); ++i) {
      EXPECT_EQ(result.top[i].token, order[i]);
      EXPECT_NEAR(result.top[i].logprob, expected[order[i]], tolerance(expected[order[i]]));
      if (i > 0) {
        EXPECT_GE(result.top[i - 1].logprob, result.top[i].logprob);
      }
    }
    sampler.Accept(result.token);
  }
}

TEST(SamplerTest, GreedyLogprobsAreRawToo) {
  Sampler sampler({.temperature = 0.0f, .logit_bias = {{0, 10.0f}}, .logprobs = 1}, {});
  const std::vector<float> raw = {0.0f, 1.0f, 2.0f};
  const std::vector<double> expected = LogSoftmax(raw);
  std::vector<float> scratch = raw;
  const SampleResult result = sampler.Sample(scratch);
  EXPECT_EQ(result.token, 0);
  EXPECT_NEAR(result.logprob, expected[0], 1e-6);
  ASSERT_EQ(result.top.size(), 1u);
  EXPECT_EQ(result.top[0].token, 2);
  EXPECT_NEAR(result.top[0].logprob, expected[2], 1e-6);
}

TEST(SamplerTest, TopLogprobsOrderTiesByLowerId) {
  Sampler sampler({.temperature = 0.0f, .logprobs = 4}, {});
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  const SampleResult result = sampler.Sample(logits);
  std::vector<TokenId> tokens;
  for (const TokenLogprob& t : result.top) tokens.push_back(t.token);
  EXPECT_THAT(tokens, ElementsAreArray({1, 2, 4, 3}));
}

TEST(SamplerTest, LogprobsZeroGivesOnlyTheChosenToken) {
  Sampler sampler({.temperature = 0.0f, .logprobs = 0}, {});
  std::vector<float> logits = {0.0f, 1.0f};
  const SampleResult result = sampler.Sample(logits);
  EXPECT_TRUE(result.top.empty());
  EXPECT_NEAR(result.logprob, -std::log1p(std::exp(-1.0)), 1e-6);
}

TEST(SamplerTest, NoLogprobsByDefault) {
  Sampler sampler({.temperature = 0.0f}, {});
  std::vector<float> logits = {0.0f, 1.0f};
  const SampleResult result = sampler.Sample(logits);
  EXPECT_TRUE(result.top.empty());
  EXPECT_EQ(result.logprob, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Large vocabularies

TEST(SamplerTest, SamplesFromAQwenSizedVocabulary) {
  // 152064 tokens, all filters on: a smoke test that the partial-sort paths stay correct at
  // full size (speed is for a benchmark, not this test).
  const std::vector<float> logits = RandomLogits(152064, 3.0f, 24);
  const SamplingParams params = {.temperature = 0.9f, .top_p = 0.9f, .top_k = 0, .seed = 25};
  Sampler sampler(params, {});
  double margin = 0.0;
  const std::vector<double> expected = ReferenceProbs(logits, params, &margin);
  for (int i = 0; i < 5; ++i) {
    std::vector<float> scratch = logits;
    const TokenId token = sampler.Sample(scratch).token;
    EXPECT_GT(expected[token], 0.0) << "token " << token << " is outside the top_p set";
  }
}

}  // namespace
}  // namespace spillway::engine
