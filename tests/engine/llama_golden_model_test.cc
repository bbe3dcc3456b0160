// The default model on the CPU backend against llama.cpp (tests/golden/model/make_goldens.py):
// greedy continuations must be the same tokens, and last-position logits must agree.
// Built a second time with SPW_GOLDEN_ON_CUDA (gpu_golden_model_test, and emu_golden_model_test
// under the CUDA emulation) for the CUDA backend, held to the same bounds; the model is then
// $SPILLWAY_GPU_MODEL when set (the GPU machine has no model cache), and the test skips
// without a GPU.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "engine/cpu/cpu_backend.h"
#if defined(SPW_GOLDEN_ON_CUDA)
#include "tests/gpu/gpu_test_util.h"
#endif
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "kvcache/kv_cache.h"
#include "tests/golden_json.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

struct GoldenStep {
  std::vector<TokenId> ids;    // llama.cpp's top 5 at this step, best first
  std::vector<double> logits;  // llama.cpp's logits of `ids`
  std::vector<double> exact;   // an exact float64 forward's logits of `ids`
};

struct GoldenCase {
  std::string prompt;
  std::vector<TokenId> prompt_ids, greedy_ids;
  std::vector<GoldenStep> steps;

  // The smallest gap between llama.cpp's first and second choice along its greedy path.
  double MinMargin() const {
    double m = 1e9;
    for (const GoldenStep& s : steps) m = std::min(m, s.logits[0] - s.logits[1]);
    return m;
  }
};

std::vector<GoldenCase> LoadGoldens() {
  const boost::json::value root = spillway::testing::ReadJsonFile("tests/golden/model/goldens.json");
  std::vector<GoldenCase> cases;
  for (const auto& c : root.at("cases").as_array()) {
    GoldenCase g;
    g.prompt = std::string(c.at("prompt").as_string());
    g.prompt_ids = spillway::testing::TokenIds(c.at("prompt_ids"));
    g.greedy_ids = spillway::testing::TokenIds(c.at("greedy_ids"));
    for (const auto& st : c.at("steps").as_array()) {
      GoldenStep step;
      step.ids = spillway::testing::TokenIds(st.at("ids"));
      for (const auto& x : st.at("logits").as_array()) step.logits.push_back(x.to_number<double>());
      for (const auto& x : st.at("exact").as_array()) step.exact.push_back(x.to_number<double>());
      g.steps.push_back(std::move(step));
    }
    cases.push_back(std::move(g));
  }
  return cases;
}

class LlamaGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(SPW_GOLDEN_ON_CUDA)
    SPW_SKIP_WITHOUT_GPU();
    const std::string path = testing::GpuModelPath();
    if (path.empty()) GTEST_SKIP() << "no model: set SPILLWAY_GPU_MODEL to the default model";
    auto file = OpenModelFile(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto backend = cuda::CudaBackend::Create();
    ASSERT_TRUE(backend.ok()) << backend.status();
#if defined(SPW_GOLDEN_WITHOUT_GEMV)
    // NOTE(emu): the decode GEMV's warp reductions are fiber switches under the emulation, which
    // made this test 70 s -> over 10 min; emu_kernels_test holds the GEMV to cuBLAS within
    // f32 summation order, and gpu_golden_model_test runs with it on the GPU.
    (*backend)->SetDecodeGemv(false);
#endif
    backend_ = *std::move(backend);
#else
    auto file = OpenModelFile(spillway::testing::DefaultModelPath());
    ASSERT_TRUE(file.ok()) << file.status();
    backend_ = std::make_unique<cpu::CpuBackend>(2);
#endif
    file_ = *std::move(file);
    auto model = LlamaModel::Create(*file_, *backend_, kBlocks);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    kv_ = std::make_unique<kvcache::KvCache>(kBlocks);
  }

  static constexpr int32_t kBlocks = 256;
  std::unique_ptr<ModelFile> file_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<kvcache::KvCache> kv_;
};

// NOTE(lead): how close is close enough. Both engines multiply the Q4_1/Q8_0 weights by
// activations rounded to 8 bits per 32 values, which moves every matmul's output by about 1%
// (measured on this model's weights), through 30 layers. A different order of float sums flips
// some of those roundings, so two such engines do not agree bit for bit, and neither agrees
// with an exact forward of the same weights: the goldens hold that exact forward too (float64
// Hugging Face transformers), and llama.cpp's own logits stray from it by up to about 1.1
// (mean about 0.17) on logits spanning ±35. So the test measures spillway against the exact
// forward and requires it to be about as accurate as llama.cpp: no value further off than 1.5×
// llama.cpp's worst, and a mean error at most 1.25× llama.cpp's. A real bug (a wrong RoPE, a
// misplaced block, a bad scale) moves logits by several units and fails at once.
constexpr double kWorstFactor = 1.5;
constexpr double kMeanFactor = 1.25;
// A step whose exact top-1 leads its second by more than this is no tie: spillway must pick it.
constexpr double kTieMargin = 1.0;

struct Deviation {
  double worst = 0, sum = 0;
  int64_t count = 0;
  void Add(double d) {
    worst = std::max(worst, d);
    sum += d;
    ++count;
  }
  double mean() const { return count ? sum / static_cast<double>(count) : 0; }
};

// Teacher-forced along llama.cpp's greedy path: 32 steps per prompt, each a real decode step
// over the paged cache.
TEST_F(LlamaGoldenTest, LogitsAlongTheGreedyPathAreAsAccurateAsLlamaCpp) {
  const std::vector<GoldenCase> cases = LoadGoldens();
  ASSERT_GE(cases.size(), 5u);
  Deviation ref, ours;
  for (const GoldenCase& c : cases) {
    for (const GoldenStep& g : c.steps) {
      for (size_t i = 0; i < g.ids.size(); ++i) ref.Add(std::abs(g.logits[i] - g.exact[i]));
    }
  }
  ASSERT_GT(ref.count, 0);
  ASSERT_LT(ref.worst, 2.0) << "the goldens look broken";
  int tie_free_steps = 0;
  for (const GoldenCase& c : cases) {
    std::vector<TokenId> context = c.prompt_ids;
    std::vector<float> logits;
    for (size_t step = 0; step < c.steps.size(); ++step) {
      const int32_t first = step == 0 ? 0 : static_cast<int32_t>(context.size()) - 1;
      const int32_t n = static_cast<int32_t>(context.size()) - first;
      ASSERT_TRUE(kv_->Grow(1, n).has_value());
      Batch batch{.tokens = std::vector<TokenId>(context.begin() + first, context.end()),
                  .chunks = {{.num_tokens = n,
                              .first_position = first,
                              .block_table = kv_->block_table(1),
                              .want_logits = true}}};
      ASSERT_TRUE(model_->Forward(batch, &logits).ok());
      const GoldenStep& g = c.steps[step];
      for (size_t i = 0; i < g.ids.size(); ++i) {
        const double d = std::abs(logits[g.ids[i]] - g.exact[i]);
        ours.Add(d);
        EXPECT_LE(d, kWorstFactor * ref.worst)
            << "prompt: " << c.prompt << " step " << step << " token " << g.ids[i];
      }
      const size_t exact_best = std::max_element(g.exact.begin(), g.exact.end()) - g.exact.begin();
      double runner_up = -1e30;
      for (size_t i = 0; i < g.exact.size(); ++i) {
        if (i != exact_best) runner_up = std::max(runner_up, g.exact[i]);
      }
      if (g.exact[exact_best] - runner_up > kTieMargin) {
        ++tie_free_steps;
        const TokenId pick =
            static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        EXPECT_EQ(pick, g.ids[exact_best]) << "prompt: " << c.prompt << " step " << step;
      }
      context.push_back(c.greedy_ids[step]);
    }
    kv_->Release(1);
  }
  EXPECT_LE(ours.mean(), kMeanFactor * ref.mean())
      << "spillway's mean error " << ours.mean() << " vs llama.cpp's " << ref.mean();
  EXPECT_GE(tie_free_steps, 200) << "too few clear steps to say anything";
  std::printf("mean |logit - exact|: spillway %.4f, llama.cpp %.4f; worst %.4f vs %.4f\n",
              ours.mean(), ref.mean(), ours.worst, ref.worst);
}

// Free-running greedy generation gives llama.cpp's tokens exactly wherever its path has no near
// tie (on a near tie either engine may go either way, and the texts part from there on).
TEST_F(LlamaGoldenTest, GreedyContinuationsEqualLlamaCppWithoutNearTies) {
  int checked = 0;
  for (const GoldenCase& c : LoadGoldens()) {
    GenerateRequest r{.prompt = c.prompt_ids,
                      .max_tokens = static_cast<int32_t>(c.greedy_ids.size()),
                      .ignore_eos = true};
    r.sampling.temperature = 0.0f;
    Generator g(*model_, *kv_);
    auto out = g.Run({&r, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    // Compare up to the first near tie on llama.cpp's path.
    size_t stable = 0;
    while (stable < c.steps.size() &&
           c.steps[stable].logits[0] - c.steps[stable].logits[1] > kTieMargin) {
      ++stable;
    }
    // A near tie is still decided the same way when ours agrees; count the common prefix
    // through it only if it is there.
    const std::vector<TokenId> want(c.greedy_ids.begin(),
                                    c.greedy_ids.begin() + stable + (stable < c.greedy_ids.size()));
    std::vector<TokenId> got((*out)[0].tokens.begin(), (*out)[0].tokens.begin() + stable);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << "prompt: " << c.prompt;
    checked += static_cast<int>(stable);
  }
  EXPECT_GE(checked, 30) << "too few tokens before the first near tie to say anything";
}

}  // namespace
}  // namespace spillway::engine
