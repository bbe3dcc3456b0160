// Sampling on the device (CudaBackend::SampleRows, kernels/sampling.cu) against the CPU
// Sampler on random logits: vocabularies of 49152 and 128256 and an odd 32003, batches of 1,
// 7 and 64 rows, each row with its own mode (greedy, temperature, top-k, top-p, min-p, all
// together, with penalties, logit_bias, a stop mask and logprobs on some rows).
//
// What must hold, and the tolerances:
//   * greedy: the CPU's token exactly (ties: lowest id).
//   * penalties and logit_bias: applied bit for bit as on the CPU (PenaltiesAreExact puts a
//     competitor exactly at the CPU's penalised value, on either side in id order, and the
//     greedy winner shows the device's value is that same float).
//   * random rows: the token the reference semantics (tests/engine/sampler/
//     sample_row_reference.h, itself checked against Sampler in the unit tier) draw with the
//     row's uniform, walking the kept tokens in id order. A different token is accepted only
//     when the target lies within 1e-6 × the kept weight of the boundary between the two
//     tokens (CUDA's expf is within 2 ulp of std::exp, and the device sums in another
//     order). The token is always in the CPU's
//     kept set (top_k, top_p, min_p). With top_p = 1 this is also the Sampler's own seeded
//     token; with top_p < 1 the Sampler walks its kept set in another order (docs/gpu.md).
//   * the drawn distribution: 2560 seeded draws per case within 5 sigma of the CPU's
//     probabilities for every kept token, none outside the kept set (Statistics).
//   * logprobs: the chosen token's and the top-N within 5e-5 absolute of the CPU's (f32 expf
//     summed in f64 on both sides, in other orders), the same top-N tokens in the same order.
// Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "common/check.h"
#include "engine/sampler/batch_sampling.h"
#include "engine/sampler/sampler.h"
#include "tests/engine/sampler/sample_row_reference.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

constexpr int64_t kMaxRows = 64;
constexpr int64_t kMaxVocab = 128256;
constexpr double kLogprobTolerance = 5e-5;
constexpr double kBoundaryTolerance = 1e-6;

// One row of a test batch: the sampler as the host has it, a copy for the device, the stop
// tokens to mask.
struct Row {
  SamplingParams params;
  std::vector<TokenId> prompt = {}, outputs = {}, masked = {};
};

class SamplingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SPW_SKIP_WITHOUT_GPU();
    absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> g = cuda::CudaBackend::Create();
    ASSERT_TRUE(g.ok()) << g.status();
    gpu_ = *std::move(g);
    buffer_ = gpu_->Scratch(kMaxRows, kMaxVocab);
  }

  std::vector<SampleResult> RunOnDevice(const std::vector<float>& logits, int64_t rows,
                                        int64_t vocab, const BatchSampling& b) {
    SPW_CHECK(rows <= kMaxRows && vocab <= kMaxVocab);
    Activation a{.data = buffer_.data, .rows = rows, .cols = vocab};
    gpu_->CopyFromHost(logits.data(), a.data, rows * vocab);
    std::vector<SampleResult> out;
    gpu_->SampleRows(a, b, &out);
    return out;
  }

  // Samples `rows` on the CPU and on the device from `logits` ([rows.size(), vocab]) and
  // checks every row as the file comment says.
  void CompareBatch(const std::vector<Row>& rows, int64_t vocab, const std::vector<float>& logits) {
    const auto n = static_cast<int64_t>(rows.size());
    BatchSampling b;
    std::vector<SampleResult> cpu;
    for (int64_t r = 0; r < n; ++r) {
      Sampler host(rows[r].params, rows[r].prompt);
      for (TokenId t : rows[r].outputs) host.Accept(t);
      Sampler device = host;
      std::vector<float> x(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      for (TokenId t : rows[r].masked) x[t] = -std::numeric_limits<float>::infinity();
      cpu.push_back(host.Sample(x));
      device.DescribeRow(rows[r].masked, vocab, &b);
    }
    const std::vector<SampleResult> gpu = RunOnDevice(logits, n, vocab, b);
    ASSERT_EQ(gpu.size(), rows.size());
    for (int64_t r = 0; r < n; ++r) {
      SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " row " << r << " of " << n);
      const SamplingParams& p = rows[r].params;
      const std::span<const float> x(logits.data() + r * vocab, vocab);
      const ReferenceSample ref = ReferenceSampleRow(x, b.rows[r], b.edits);
      const TokenId got = gpu[r].token;
      ASSERT_GE(got, 0);
      ASSERT_LT(got, vocab);
      if (p.temperature < kGreedyTemperature) {
        EXPECT_EQ(got, cpu[r].token);
      } else {
        EXPECT_TRUE(ref.kept[got]) << "token " << got << " outside the kept set";
        if (got != ref.token) {
          ExpectBoundaryRounding(ref, got);
        }
        if (p.top_p >= 1.0f) {
          EXPECT_EQ(ref.token, cpu[r].token);
        }
      }
      if (p.logprobs >= 0) {
        double log_normalizer = 0.0;  // from the CPU's logprob of its own token
        log_normalizer = static_cast<double>(ref.raw[cpu[r].token]) - cpu[r].logprob;
        EXPECT_NEAR(gpu[r].logprob, ref.raw[got] - log_normalizer, kLogprobTolerance);
        ASSERT_EQ(gpu[r].top.size(), cpu[r].top.size());
        for (size_t i = 0; i < cpu[r].top.size(); ++i) {
          EXPECT_EQ(gpu[r].top[i].token, cpu[r].top[i].token) << "top " << i;
          EXPECT_NEAR(gpu[r].top[i].logprob, cpu[r].top[i].logprob, kLogprobTolerance);
        }
      } else {
        EXPECT_TRUE(gpu[r].top.empty());
      }
    }
  }

  // The device drew `got` where the reference drew another token: only right when the target
  // lies, up to rounding, in got's cumulative interval (in id order).
  static void ExpectBoundaryRounding(const ReferenceSample& ref, TokenId got) {
    double before = 0.0;
    for (TokenId t = 0; t < got; ++t) before += ref.kept[t] ? ref.weight[t] : 0.0f;
    const double after = before + ref.weight[got];
    const double slack = kBoundaryTolerance * ref.kept_weight;
    EXPECT_TRUE(ref.target >= before - slack && ref.target < after + slack)
        << "device token " << got << " [" << before << ", " << after << ") reference token "
        << ref.token << " target " << ref.target;
  }

  std::unique_ptr<cuda::CudaBackend> gpu_;
  Activation buffer_;
};

// Row r's mode: greedy, temperature, top-k, top-p, min-p, or all; penalties, bias and a stop
// mask on every fourth row; logprobs (0..20 of them) on every third.
Row MakeRow(int64_t r, int64_t vocab, std::mt19937& gen) {
  Row row;
  SamplingParams& p = row.params;
  p.seed = 1000 + r;
  switch (r % 6) {
    case 0:
      p.temperature = 0.0f;
      break;
    case 1:
      p.temperature = 0.8f;
      break;
    case 2:
      p.top_k = r % 12 == 2 ? 1 : 40;
      break;
    case 3:
      p.temperature = 0.7f;
      p.top_p = 0.9f;
      break;
    case 4:
      p.temperature = 1.2f;
      p.min_p = 0.05f;
      break;
    default:
      p.temperature = 0.9f;
      p.top_k = 100;
      p.top_p = 0.95f;
      p.min_p = 0.02f;
      break;
  }
  std::uniform_int_distribution<TokenId> token(0, static_cast<TokenId>(vocab - 1));
  if (r % 4 == 1 || r % 6 == 5) {
    p.repetition_penalty = 1.2f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.3f;
    p.logit_bias = {{token(gen), 2.0f}, {static_cast<TokenId>(vocab - 1), -1.5f}};
    for (int i = 0; i < 30; ++i) row.prompt.push_back(token(gen));
    for (int i = 0; i < 20; ++i) row.outputs.push_back(token(gen) % 64);  // repeats
    row.masked = {0, 7, token(gen)};
  }
  if (r % 3 == 0) p.logprobs = static_cast<int32_t>(r % (kMaxDeviceTopLogprobs + 1));
  return row;
}

TEST_F(SamplingTest, EveryModeMatchesTheCpu) {
  for (int64_t vocab : {int64_t{49152}, kMaxVocab, int64_t{32003}}) {
    for (int64_t n : {1, 7, 64}) {
      std::mt19937 gen(static_cast<uint32_t>(vocab + n));
      std::vector<Row> rows;
      for (int64_t r = 0; r < n; ++r) rows.push_back(MakeRow(r, vocab, gen));
      CompareBatch(rows, vocab, NormalLogits(n * vocab, 3.0f, static_cast<uint32_t>(vocab * n)));
    }
  }
}

// Logits on a grid of 0.25, so that many tokens tie at the top_k threshold and at the top_p
// cut: ties with the k-th stay, and the top_p cut keeps the lowest ids among its ties.
TEST_F(SamplingTest, TiesAtTheCutsFollowTheCpu) {
  const int64_t vocab = 49152, n = 64;
  std::vector<float> logits = NormalLogits(n * vocab, 2.0f, 5);
  for (float& x : logits) x = std::round(x * 4.0f) / 4.0f;
  std::vector<Row> rows(n);
  for (int64_t r = 0; r < n; ++r) {
    SamplingParams& p = rows[r].params;
    p.seed = r;
    p.temperature = 0.5f + 0.02f * static_cast<float>(r);
    p.top_k = r % 2 == 0 ? static_cast<int32_t>(1 + r * 7) : 0;
    p.top_p = r % 3 == 0 ? 1.0f : 0.3f + 0.01f * static_cast<float>(r);
    p.logprobs = r % 5 == 0 ? 20 : -1;  // ties in the top-N: lower id first
  }
  CompareBatch(rows, vocab, logits);
}

// A competitor placed exactly at the CPU's penalised value of a token, once below and once
// above it in id order: greedy picks the lower id of the two only when the device's value is
// that same float, so the two rows together pin it bit for bit (positive logits divided by
// the repetition penalty, negative ones multiplied; frequency, presence and bias added).
TEST_F(SamplingTest, PenaltiesAreExact) {
  const int64_t vocab = 32003;
  for (float raw : {8.0f, -3.0f}) {
    const SamplingParams params{.temperature = 0.0f,
                                .repetition_penalty = 1.3f,
                                .presence_penalty = 0.4f,
                                .frequency_penalty = 0.25f,
                                .logit_bias = {{500, 0.3f}}};
    for (bool competitor_first : {true, false}) {
      const TokenId penalised = 500, competitor = competitor_first ? 499 : 501;
      Row row{.params = params, .prompt = {penalised}, .outputs = {penalised, penalised}};
      std::vector<float> x(vocab);
      std::mt19937 gen(1);
      std::uniform_real_distribution<float> low(-20.0f, -10.0f);
      for (float& v : x) v = low(gen);
      x[penalised] = raw;
      Sampler host(params, row.prompt);
      for (TokenId t : row.outputs) host.Accept(t);
      std::vector<float> processed = x;
      host.Sample(processed);
      x[competitor] = processed[penalised];
      ASSERT_GT(x[competitor], -10.0f);
      CompareBatch({row}, vocab, x);  // greedy: the CPU's token, the lower id of the tie
    }
  }
}

// 2560 seeded draws (40 batches of 64 rows, one seed each) from one peaked distribution:
// every kept token's count within 5 sigma of N × its CPU probability, nothing else drawn.
// SPW_GPU_TEST_SMALL (the emu tier sets it: each row is 1,024 emulated threads) takes 320
// draws, still 20 or more expected of every kept token.
TEST_F(SamplingTest, Statistics) {
  const int64_t vocab = 49152, n = 64;
  const int64_t batches = std::getenv("SPW_GPU_TEST_SMALL") != nullptr ? 5 : 40;
  const std::vector<double> probs = {0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07};
  std::vector<float> row_logits(vocab, -30.0f);
  std::vector<TokenId> ids;
  for (size_t i = 0; i < probs.size(); ++i) {
    const auto id = static_cast<TokenId>(7 + 6000 * i);  // spread over the tiles
    ids.push_back(id);
    row_logits[id] = static_cast<float>(std::log(probs[i]));
  }
  struct Case {
    float top_p;
    int32_t top_k;
    float min_p;
    std::vector<double> kept;  // probability of ids[i] after the filters
  };
  const std::vector<double> top3 = {0.3 / 0.65, 0.2 / 0.65, 0.15 / 0.65, 0, 0, 0, 0};
  const std::vector<Case> cases = {
      {1.0f, 0, 0.0f, probs},
      {0.6f, 0, 0.0f, top3},
      {1.0f, 2, 0.0f, {0.6, 0.4, 0, 0, 0, 0, 0}},
      {1.0f, 0, 0.45f, top3},  // keeps p >= 0.45 × 0.3
  };
  std::vector<float> logits;
  for (int64_t r = 0; r < n; ++r) logits.insert(logits.end(), row_logits.begin(), row_logits.end());
  for (const Case& c : cases) {
    std::vector<int64_t> counts(vocab, 0);
    for (int64_t batch = 0; batch < batches; ++batch) {
      BatchSampling b;
      for (int64_t r = 0; r < n; ++r) {
        const SamplingParams p{.temperature = 1.0f,
                               .top_p = c.top_p,
                               .top_k = c.top_k,
                               .min_p = c.min_p,
                               .seed = static_cast<uint64_t>(batch * n + r)};
        Sampler s(p, {});
        s.DescribeRow({}, vocab, &b);
      }
      for (const SampleResult& res : RunOnDevice(logits, n, vocab, b)) ++counts[res.token];
    }
    const double total = static_cast<double>(n * batches);
    int64_t accounted = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const double q = c.kept[i];
      const double mean = total * q, sigma = std::sqrt(total * q * (1 - q));
      if (q == 0) {
        EXPECT_EQ(counts[ids[i]], 0) << "token " << ids[i] << " is filtered out";
      } else {
        EXPECT_NEAR(static_cast<double>(counts[ids[i]]), mean, 5 * sigma) << "token " << ids[i];
      }
      accounted += counts[ids[i]];
    }
    // The other 49145 tokens hold e^-30 / 0.07 ≈ 1e-12 of the mass each: expect none.
    EXPECT_EQ(accounted, n * batches);
  }
}

}  // namespace
}  // namespace spillway::engine::testing
