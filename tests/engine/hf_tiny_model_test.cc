// Hugging Face directories end to end: tiny random Llama (tied, llama3 RoPE scaling; F32 and
// BF16) and Qwen2 (q/k/v biases, own lm_head) models that tests/golden/hf/make_tiny_models.py
// writes into the build tree at setup, read by OpenHfDirectory and run by the CPU backend,
// against Hugging Face transformers' logits, greedy tokens and tokenizer ids (logits.json).
// Label `model`: it needs the generated directories.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "engine/cpu/cpu_backend.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kvcache/kv_cache.h"
#include "tests/golden_json.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

boost::json::object LoadGoldens() {
  return testing::ReadJsonFile("tests/golden/hf/logits.json").as_object();
}

// NOTE(lead): weights are F32 (or BF16 widened to F32) and multiplied in f32, but the KV cache
// holds f16 (relative rounding 2^-11), so logits of order 10 move by about 0.005; 0.02 leaves
// room for float sums in another order, and stays far below the smallest greedy margin (0.08).
constexpr double kLogitTolerance = 0.02;

class HfTinyModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTinyModelTest, MatchesTransformers) {
  const boost::json::object goldens = LoadGoldens();
  const boost::json::object& m = goldens.at("models").at(GetParam()).as_object();
  auto file = OpenModelFile(testing::BinaryPath("tiny_models/" + GetParam()));
  ASSERT_TRUE(file.ok()) << file.status() << " (scripts/setup.sh generates these)";
  cpu::CpuBackend backend(2);
  constexpr int32_t kBlocks = 64;
  auto model = LlamaModel::Create(**file, backend, kBlocks);
  ASSERT_TRUE(model.ok()) << model.status();
  kvcache::KvCache kv(kBlocks);
  for (const auto& cv : m.at("cases").as_array()) {
    const boost::json::object& c = cv.as_object();
    const std::vector<TokenId> ids = testing::TokenIds(c.at("input_ids"));
    ASSERT_TRUE(kv.Grow(1, static_cast<int32_t>(ids.size())).has_value());
    Batch batch{.tokens = ids,
                .chunks = {{.num_tokens = static_cast<int32_t>(ids.size()),
                            .first_position = 0,
                            .block_table = kv.block_table(1),
                            .want_logits = true}}};
    std::vector<float> logits;
    ASSERT_TRUE((*model)->Forward(batch, &logits).ok());
    kv.Release(1);
    const auto& want = c.at("last_logits").as_array();
    ASSERT_EQ(logits.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(logits[i], want[i].to_number<double>(), kLogitTolerance) << "token " << i;
    }
    GenerateRequest r{.prompt = ids,
                      .max_tokens = static_cast<int32_t>(c.at("greedy").as_array().size()),
                      .ignore_eos = true};
    r.sampling.temperature = 0.0f;
    Generator g(**model, kv);
    auto out = g.Run({&r, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)[0].tokens, testing::TokenIds(c.at("greedy")));
  }
  auto tokenizer = Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const auto& tv : m.at("tokenize").as_array()) {
    const std::string text(tv.at("text").as_string());
    EXPECT_EQ((*tokenizer)->Encode(text, /*add_special=*/false, /*parse_special=*/true),
              testing::TokenIds(tv.at("ids")))
        << text;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, HfTinyModelTest,
                         ::testing::Values("llama-tiny", "llama-tiny-bf16", "qwen2-tiny"));

}  // namespace
}  // namespace spillway::engine
