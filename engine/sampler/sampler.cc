#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "common/check.h"

namespace spillway::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// KthLargest keeps a heap of the k largest when k is at most this, else uses nth_element.
constexpr size_t kHeapSelectMaxK = 512;

// Top-p first looks for the highest of these weight thresholds (relative to the most likely
// token's weight, which is 1) whose tokens already hold the needed mass; for a peaked
// distribution that leaves a few dozen candidates after two passes over the vocabulary.
constexpr float kTopPProbeWeights[] = {1e-1f, 1e-2f, 1e-3f, 1e-4f, 1e-6f, 1e-9f};

// Top-p then narrows the cut down by halving until this few candidates are left, and sorts them.
constexpr size_t kTopPSortBelow = 64;

uint64_t SeedFor(const SamplingParams& params) {
  if (params.seed.has_value()) return *params.seed;
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
}

// The processed-logit order: larger logit first, then lower token id (so every result that
// depends on an order is deterministic).
template <typename C>
bool ByRank(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.token < b.token);
}

// The largest element. Eight running maxima break the dependency chain of a serial std::max
// (several times faster at vocab 152064); the result is the same.
float MaxOf(std::span<const float> xs) {
  constexpr size_t kLanes = 8;
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, kNegInf);
  size_t i = 0;
  for (; i + kLanes <= xs.size(); i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lanes[j] = std::max(lanes[j], xs[i + j]);
  }
  for (; i < xs.size(); ++i) lanes[0] = std::max(lanes[0], xs[i]);
  return *std::max_element(lanes, lanes + kLanes);
}

// Sum of exp(x - max_x) in double, over four chains (one chain is latency-bound).
double SumExp(std::span<const float> xs, float max_x) {
  double sums[4] = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < xs.size(); ++i) sums[i % 4] += std::exp(xs[i] - max_x);
  return (sums[0] + sums[1]) + (sums[2] + sums[3]);
}

// The k-th largest element of `xs` (counting duplicates). `scratch` is reused storage.
// REQUIRES: 1 <= k <= xs.size().
float KthLargest(std::span<const float> xs, size_t k, std::vector<float>& scratch) {
  if (k <= kHeapSelectMaxK) {
    // Min-heap of the k largest so far: one pass, and few pushes for large random vocabularies.
    scratch.assign(xs.begin(), xs.begin() + k);
    std::make_heap(scratch.begin(), scratch.end(), std::greater<>());
    for (size_t i = k; i < xs.size(); ++i) {
      if (xs[i] > scratch.front()) {
        std::pop_heap(scratch.begin(), scratch.end(), std::greater<>());
        scratch.back() = xs[i];
        std::push_heap(scratch.begin(), scratch.end(), std::greater<>());
      }
    }
    return scratch.front();
  }
  scratch.assign(xs.begin(), xs.end());
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<>());
  return scratch[k - 1];
}

// Argmax; on ties the lowest id wins.
TokenId Argmax(std::span<const float> logits) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  SPW_CHECK(std::isfinite(logits[best]))
      << "no finite logit to sample from; max is " << logits[best];
  return static_cast<TokenId>(best);
}

}  // namespace

Sampler::Sampler(SamplingParams params, std::span<const TokenId> prompt_tokens)
    : params_(std::move(params)),
      has_penalties_(params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                     params_.frequency_penalty != 0.0f),
      rng_(SeedFor(params_)) {
  const absl::Status status = Validate(params_, std::numeric_limits<int64_t>::max());
  SPW_CHECK(status.ok()) << status;
  // The prompt matters only to the repetition penalty.
  if (params_.repetition_penalty != 1.0f) {
    prompt_tokens_.assign(prompt_tokens.begin(), prompt_tokens.end());
    std::sort(prompt_tokens_.begin(), prompt_tokens_.end());
    prompt_tokens_.erase(std::unique(prompt_tokens_.begin(), prompt_tokens_.end()),
                         prompt_tokens_.end());
    SPW_CHECK(prompt_tokens_.empty() || prompt_tokens_.front() >= 0)
        << "negative prompt token " << prompt_tokens_.front();
  }
}

SampleResult Sampler::Sample(std::span<float> logits) {
  SPW_CHECK(!logits.empty());
  const bool wants_logprobs = params_.logprobs >= 0;
  std::span<const float> raw_logits = logits;
  if (wants_logprobs && (has_penalties_ || !params_.logit_bias.empty())) {
    raw_logits_.assign(logits.begin(), logits.end());
    raw_logits = raw_logits_;
  }
  ApplyLogitBias(logits);
  ApplyPenalties(logits);

  SampleResult result;
  result.token = params_.temperature < kGreedyTemperature ? Argmax(logits) : SampleRandom(logits);
  if (wants_logprobs) FillLogprobs(raw_logits, result);
  return result;
}

void Sampler::Accept(TokenId token) {
  SPW_CHECK(token >= 0) << "token " << token;
  ++num_output_tokens_;
  if (!has_penalties_) return;
  auto it = std::lower_bound(output_counts_.begin(), output_counts_.end(), token,
                             [](const auto& entry, TokenId t) { return entry.first < t; });
  if (it != output_counts_.end() && it->first == token) {
    ++it->second;
  } else {
    output_counts_.insert(it, {token, 1});
  }
}

void Sampler::DescribeRow(std::span<const TokenId> masked, int64_t vocab_size, BatchSampling* out) {
  SPW_CHECK(params_.logprobs <= kMaxDeviceTopLogprobs) << params_.logprobs;
  edits_.clear();
  for (TokenId t : masked) {
    if (t >= 0 && t < vocab_size) edits_.push_back({.token = t, .flags = TokenEdit::kMasked});
  }
  for (const auto& [token, bias] : params_.logit_bias) {
    SPW_CHECK(token >= 0 && token < vocab_size) << "logit_bias token " << token;
    edits_.push_back({.token = token, .bias = bias});
  }
  for (TokenId t : prompt_tokens_) edits_.push_back({.token = t, .flags = TokenEdit::kRepeated});
  for (const auto& [token, count] : output_counts_) {
    edits_.push_back({.token = token, .flags = TokenEdit::kRepeated, .count = count});
  }
  std::sort(edits_.begin(), edits_.end(),
            [](const TokenEdit& a, const TokenEdit& b) { return a.token < b.token; });
  const auto begin = static_cast<int32_t>(out->edits.size());
  for (const TokenEdit& e : edits_) {
    SPW_CHECK(e.token < vocab_size)
        << "token " << e.token << " outside a vocabulary of " << vocab_size;
    if (out->edits.size() > static_cast<size_t>(begin) && out->edits.back().token == e.token) {
      TokenEdit& merged = out->edits.back();  // one entry per token: the sources are disjoint
      merged.flags |= e.flags;
      merged.bias += e.bias;
      merged.count += e.count;
    } else {
      out->edits.push_back(e);
    }
  }
  const bool greedy = params_.temperature < kGreedyTemperature;
  out->rows.push_back({.temperature = params_.temperature,
                       .top_p = params_.top_p,
                       .min_p = params_.min_p,
                       .repetition_penalty = params_.repetition_penalty,
                       .presence_penalty = params_.presence_penalty,
                       .frequency_penalty = params_.frequency_penalty,
                       .top_k = params_.top_k,
                       .logprobs = params_.logprobs,
                       .uniform = greedy ? 0.0 : UniformDouble(),
                       .edits_begin = begin,
                       .edits_end = static_cast<int32_t>(out->edits.size())});
}

void Sampler::ApplyLogitBias(std::span<float> logits) const {
  for (const auto& [token, bias] : params_.logit_bias) {
    SPW_CHECK(static_cast<size_t>(token) < logits.size())
        << "logit_bias token " << token << " outside a vocabulary of " << logits.size();
    logits[token] += bias;
  }
}

// Walks the union of prompt and output tokens once (both lists are sorted), so a token in both
// gets the repetition penalty once. Per token, as vLLM: repetition, then frequency, then
// presence.
void Sampler::ApplyPenalties(std::span<float> logits) const {
  if (!has_penalties_) return;
  const float repetition = params_.repetition_penalty;
  auto prompt = prompt_tokens_.begin();
  auto output = output_counts_.begin();
  while (prompt != prompt_tokens_.end() || output != output_counts_.end()) {
    TokenId token;
    int32_t count = 0;
    if (output == output_counts_.end() ||
        (prompt != prompt_tokens_.end() && *prompt < output->first)) {
      token = *prompt++;
    } else {
      token = output->first;
      count = output->second;
      if (prompt != prompt_tokens_.end() && *prompt == token) ++prompt;
      ++output;
    }
    SPW_CHECK(static_cast<size_t>(token) < logits.size())
        << "token " << token << " outside a vocabulary of " << logits.size();
    float& logit = logits[token];
    if (repetition != 1.0f) logit = logit > 0.0f ? logit / repetition : logit * repetition;
    if (count > 0) {
      logit -= params_.frequency_penalty * static_cast<float>(count);
      logit -= params_.presence_penalty;
    }
  }
}

TokenId Sampler::SampleRandom(std::span<const float> logits) {
  // The most likely token survives every filter, so the global max is the max of what stays.
  const float max_logit = MaxOf(logits);
  SPW_CHECK(std::isfinite(max_logit)) << "no finite logit to sample from; max is " << max_logit;
  // top_k: as vLLM, keep every token >= the k-th largest logit (ties with it stay).
  const int32_t top_k = params_.top_k;
  const bool use_top_k = top_k > 0 && static_cast<size_t>(top_k) < logits.size();
  size_t n =
      FillCandidates(logits, use_top_k ? KthLargest(logits, top_k, float_scratch_) : kNegInf);
  const double total_weight = ComputeWeights(n, max_logit);
  const size_t num_weighted = n;
  n = KeepTopP(n, total_weight);
  n = KeepMinP(n);

  double kept_weight = total_weight;
  if (n != num_weighted) {
    kept_weight = 0.0;
    for (size_t i = 0; i < n; ++i) kept_weight += candidates_[i].weight;
  }
  const double target = UniformDouble() * kept_weight;
  double cumulative = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cumulative += candidates_[i].weight;
    if (target < cumulative) return candidates_[i].token;
  }
  // Only rounding gets here (target within an ulp of kept_weight): the last candidate that
  // can be drawn at all.
  for (size_t i = n; i-- > 0;) {
    if (candidates_[i].weight > 0.0f) return candidates_[i].token;
  }
  SPW_CHECK(false) << "no candidate with positive weight";
  return 0;
}

size_t Sampler::FillCandidates(std::span<const float> logits, float min_logit) {
  candidates_.resize(logits.size());
  size_t n = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] >= min_logit) candidates_[n++] = {logits[i], 0.0f, static_cast<TokenId>(i)};
  }
  return n;
}

double Sampler::ComputeWeights(size_t n, float max_logit) {
  const float temperature = params_.temperature;
  double sums[4] = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < n; ++i) {
    Candidate& c = candidates_[i];
    c.weight = std::exp((c.logit - max_logit) / temperature);
    sums[i % 4] += c.weight;
  }
  return (sums[0] + sums[1]) + (sums[2] + sums[3]);
}

// Keeps the smallest set of top-ranked candidates whose weight is >= top_p * total_weight: a
// candidate stays when the mass ranked above it is < top_p (vLLM drops tokens whose ascending
// cumulative probability is <= 1 - top_p; the most likely token always stays).
//
// NOTE(sampler): no sort of the vocabulary. Weight thresholds (kTopPProbeWeights) first cut
// the candidates to a rank prefix that surely holds the cut; then each round splits [lo, hi) at
// its rank median with nth_element and narrows into the half that holds the cut, about two
// passes however many tokens stay (a flat distribution can keep tens of thousands); only the
// last kTopPSortBelow candidates are sorted. The kept set ends up in front, in no fixed order.
size_t Sampler::KeepTopP(size_t n, double total_weight) {
  if (params_.top_p >= 1.0f) return n;
  // Invariant: [0, lo) outrank [lo, hi) and are kept, with mass target - needed; [hi, n) are
  // dropped; the cut lies in [lo, hi).
  double needed = static_cast<double>(params_.top_p) * total_weight;
  size_t lo = 0;
  size_t hi = NarrowByWeight(n, needed);
  const auto first = candidates_.begin();
  while (hi - lo > kTopPSortBelow) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(first + lo, first + mid, first + hi, ByRank<Candidate>);
    double upper_mass = 0.0;
    for (size_t i = lo; i < mid; ++i) upper_mass += candidates_[i].weight;
    if (upper_mass >= needed) {
      hi = mid;
    } else {
      needed -= upper_mass;
      lo = mid;
    }
  }
  std::sort(first + lo, first + hi, ByRank<Candidate>);
  double cumulative = 0.0;
  for (size_t i = lo; i < hi; ++i) {
    cumulative += candidates_[i].weight;
    if (cumulative >= needed) return i + 1;
  }
  return hi;  // rounding only: [lo, hi) was found to hold the needed mass as a whole
}

// Moves the candidates with weight >= the highest probe threshold whose candidates hold
// `needed` mass to the front and returns their number (n if no threshold does). Weights rise
// with logits, so that set is a prefix of the rank order.
size_t Sampler::NarrowByWeight(size_t n, double needed) {
  constexpr size_t kNumProbes = std::size(kTopPProbeWeights);
  double mass_at_or_above[kNumProbes + 1] = {};  // [b]: weights in [probe[b], probe[b - 1])
  for (size_t i = 0; i < n; ++i) {
    const float w = candidates_[i].weight;
    size_t bucket = 0;
    for (float probe : kTopPProbeWeights) bucket += w < probe;
    mass_at_or_above[bucket] += w;
  }
  double cumulative = 0.0;
  for (size_t b = 0; b < kNumProbes; ++b) {
    cumulative += mass_at_or_above[b];
    if (cumulative >= needed) {
      const float probe = kTopPProbeWeights[b];
      const auto end = std::partition(candidates_.begin(), candidates_.begin() + n,
                                      [probe](const Candidate& c) { return c.weight >= probe; });
      return static_cast<size_t>(end - candidates_.begin());
    }
  }
  return n;
}

// Keeps candidates whose probability is >= min_p times the largest. Renormalising after top_k
// and top_p scales every probability alike, so comparing unnormalised weights is exact.
size_t Sampler::KeepMinP(size_t n) {
  if (params_.min_p <= 0.0f) return n;
  float max_weight = 0.0f;
  for (size_t i = 0; i < n; ++i) max_weight = std::max(max_weight, candidates_[i].weight);
  const float threshold = params_.min_p * max_weight;
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (candidates_[i].weight >= threshold) candidates_[kept++] = candidates_[i];
  }
  return kept;
}

double Sampler::UniformDouble() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

void Sampler::FillLogprobs(std::span<const float> raw_logits, SampleResult& result) {
  const float max_logit = MaxOf(raw_logits);
  const double log_normalizer =
      static_cast<double>(max_logit) + std::log(SumExp(raw_logits, max_logit));
  auto logprob = [&](TokenId token) {
    return static_cast<float>(static_cast<double>(raw_logits[token]) - log_normalizer);
  };
  result.logprob = logprob(result.token);

  const size_t num_top = std::min<size_t>(params_.logprobs, raw_logits.size());
  result.top.clear();
  if (num_top == 0) return;
  const size_t n = FillCandidates(raw_logits, KthLargest(raw_logits, num_top, float_scratch_));
  const auto first = candidates_.begin();
  std::partial_sort(first, first + num_top, first + n, ByRank<Candidate>);
  result.top.reserve(num_top);
  for (size_t i = 0; i < num_top; ++i) {
    result.top.push_back({candidates_[i].token, logprob(candidates_[i].token)});
  }
}

}  // namespace spillway::engine
