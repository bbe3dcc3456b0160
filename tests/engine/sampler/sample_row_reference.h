// A plain CPU statement of what one SampleRow (engine/sampler/batch_sampling.h) means — the
// semantics kernels/sampling.cu implements — written with sorts and serial sums so that it is
// easy to check by eye. Tests compare it with Sampler::Sample (unit tier,
// tests/engine/sampler/batch_sampling_test.cc) and with the device (tests/gpu/sampling_test.cc).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "engine/sampler/batch_sampling.h"

namespace spillway::engine::testing {

// Random logits, normal with `stddev`, reproducible from `seed`.
inline std::vector<float> NormalLogits(int64_t n, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

struct ReferenceSample {
  TokenId token = -1;
  std::vector<float> raw;        // the input with the stop mask
  std::vector<float> processed;  // raw with bias and penalties
  // Random rows: each token's weight exp((l - max) / T) (0 below the top_k threshold) and
  // whether top_k, top_p and min_p keep it; the kept weight; the draw's target.
  std::vector<float> weight;
  std::vector<char> kept;
  double kept_weight = 0.0;
  double target = 0.0;
  // Logprobs (row.logprobs >= 0): of the token, and the top N (value desc, id asc).
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

inline ReferenceSample ReferenceSampleRow(std::span<const float> logits, const SampleRow& row,
                                          std::span<const TokenEdit> all_edits) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const auto vocab = static_cast<int64_t>(logits.size());
  const std::span<const TokenEdit> edits =
      all_edits.subspan(row.edits_begin, row.edits_end - row.edits_begin);
  ReferenceSample r;
  r.raw.assign(logits.begin(), logits.end());
  for (const TokenEdit& e : edits) {
    if (e.flags & TokenEdit::kMasked) r.raw[e.token] = kNegInf;
  }
  r.processed = r.raw;
  for (const TokenEdit& e : edits) {
    float l = r.raw[e.token] + e.bias;
    if ((e.flags & TokenEdit::kRepeated) && row.repetition_penalty != 1.0f) {
      l = l > 0.0f ? l / row.repetition_penalty : l * row.repetition_penalty;
    }
    if (e.count > 0) {
      l -= row.frequency_penalty * static_cast<float>(e.count);
      l -= row.presence_penalty;
    }
    r.processed[e.token] = l;
  }
  const std::vector<float>& x = r.processed;
  auto outranks = [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  std::vector<int64_t> order(vocab);  // rank order
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), outranks);
  if (!std::isfinite(x[order[0]])) return r;
  if (row.temperature < kGreedyTemperature) {
    r.token = static_cast<TokenId>(order[0]);
  } else {
    const float max_logit = x[order[0]];
    const float min_logit = row.top_k > 0 && row.top_k < vocab ? x[order[row.top_k - 1]] : kNegInf;
    r.weight.assign(vocab, 0.0f);
    r.kept.assign(vocab, 0);
    double sums[4] = {0, 0, 0, 0};  // Sampler::ComputeWeights' four chains, in id order
    int64_t n = 0;
    for (int64_t t = 0; t < vocab; ++t) {
      if (x[t] < min_logit) continue;
      r.weight[t] = std::exp((x[t] - max_logit) / row.temperature);
      r.kept[t] = 1;
      sums[n++ % 4] += r.weight[t];
    }
    const double total = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    bool dropped = false;
    if (row.top_p < 1.0f) {
      const double needed = static_cast<double>(row.top_p) * total;
      double above = 0.0;
      for (int64_t t : order) {
        if (!r.kept[t]) continue;
        if (above >= needed) {
          r.kept[t] = 0;
          dropped = true;
        }
        above += r.weight[t];
      }
    }
    if (row.min_p > 0.0f) {
      for (int64_t t = 0; t < vocab; ++t) {
        if (r.kept[t] && r.weight[t] < row.min_p) {
          r.kept[t] = 0;
          dropped = true;
        }
      }
    }
    r.kept_weight = total;
    if (dropped) {
      r.kept_weight = 0.0;
      for (int64_t t = 0; t < vocab; ++t) r.kept_weight += r.kept[t] ? r.weight[t] : 0.0f;
    }
    r.target = row.uniform * r.kept_weight;
    double cumulative = 0.0;
    for (int64_t t = 0; t < vocab && r.token < 0; ++t) {
      if (!r.kept[t]) continue;
      cumulative += r.weight[t];
      if (r.target < cumulative) r.token = static_cast<TokenId>(t);
    }
    for (int64_t t = vocab; t-- > 0 && r.token < 0;) {
      if (r.kept[t] && r.weight[t] > 0.0f) r.token = static_cast<TokenId>(t);
    }
  }
  if (row.logprobs >= 0) {
    const float raw_max = *std::max_element(r.raw.begin(), r.raw.end());
    double sum = 0.0;
    for (float v : r.raw) sum += std::exp(v - raw_max);
    const double log_normalizer = static_cast<double>(raw_max) + std::log(sum);
    r.logprob = static_cast<float>(static_cast<double>(r.raw[r.token]) - log_normalizer);
    std::vector<int64_t> raw_order(vocab);
    std::iota(raw_order.begin(), raw_order.end(), 0);
    const auto& w = r.raw;
    std::stable_sort(raw_order.begin(), raw_order.end(),
                     [&](int64_t a, int64_t b) { return w[a] > w[b]; });
    for (int64_t i = 0; i < std::min<int64_t>(row.logprobs, vocab); ++i) {
      const int64_t t = raw_order[i];
      r.top.push_back({static_cast<TokenId>(t),
                       static_cast<float>(static_cast<double>(w[t]) - log_normalizer)});
    }
  }
  return r;
}

}  // namespace spillway::engine::testing
