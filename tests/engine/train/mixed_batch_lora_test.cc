// LoRA in the inference model: one flat batch whose chunks use different adapters (or none)
// gives each chunk the logits the training model (an independent implementation,
// engine/train) computes for that sequence and adapter alone.
#include <gtest/gtest.h>

#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/llama/llama_model.h"
#include "engine/lora/backend_adapter.h"
#include "engine/train/train_model.h"
#include "kvcache/kv_cache.h"
#include "tests/engine/train/tiny_random_model.h"

namespace spillway::engine {
namespace {

using lora::LoraModule;

using testing::RandomAdapter;

TEST(MixedBatchLoraTest, EachChunkGetsItsOwnAdapter) {
  for (bool qwen_like : {false, true}) {
    testing::TinyRandomModel file(31, qwen_like);
    const ModelConfig& c = file.config();
    lora::LoraConfig all;
    all.rank = 4;
    all.alpha = 8.0f;
    all.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
    lora::LoraConfig some;
    some.rank = 2;
    some.alpha = 2.0f;
    some.targets = {LoraModule::kQ, LoraModule::kV, LoraModule::kDown};
    some.layers = {1};
    const std::vector<lora::LoraAdapter> adapters = {RandomAdapter(c, all, 1, 0.6f),
                                                     RandomAdapter(c, some, 2, 0.6f)};

    cpu::CpuBackend backend(2);
    constexpr int32_t kBlocks = 16;
    auto model = LlamaModel::Create(file, backend, kBlocks);
    ASSERT_TRUE(model.ok()) << model.status();
    std::vector<std::unique_ptr<lora::BackendLoraAdapter>> loaded;
    for (const auto& a : adapters) {
      auto l = lora::BackendLoraAdapter::Load(a, backend);
      ASSERT_TRUE(l.ok()) << l.status();
      loaded.push_back(*std::move(l));
    }
    // Four sequences: adapter 0, none, adapter 1, adapter 0 again (not adjacent to the first).
    const std::vector<std::vector<TokenId>> seqs = {
        {3, 17, 5, 29, 1}, {8, 8, 12, 39, 2, 6}, {21, 4, 33}, {3, 17, 5, 29, 1, 9, 10}};
    const std::vector<const lora::BackendLoraAdapter*> use = {loaded[0].get(), nullptr,
                                                              loaded[1].get(), loaded[0].get()};
    const std::vector<const lora::LoraAdapter*> ref = {&adapters[0], nullptr, &adapters[1],
                                                       &adapters[0]};
    kvcache::KvCache kv(kBlocks);
    Batch batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
      ASSERT_TRUE(
          kv.Grow(static_cast<int32_t>(i + 1), static_cast<int32_t>(seqs[i].size())).has_value());
      batch.tokens.insert(batch.tokens.end(), seqs[i].begin(), seqs[i].end());
      batch.chunks.push_back({.num_tokens = static_cast<int32_t>(seqs[i].size()),
                              .first_position = 0,
                              .block_table = kv.block_table(static_cast<int32_t>(i + 1)),
                              .want_logits = true,
                              .adapter = use[i]});
    }
    std::vector<float> logits;
    ASSERT_TRUE((*model)->Forward(batch, &logits).ok());

    cpu::ThreadPool pool(1);
    auto train = train::TrainModel<float>::Create(file, &pool);
    ASSERT_TRUE(train.ok());
    const lora::LoraLayout none;
    for (size_t i = 0; i < seqs.size(); ++i) {
      auto want = (*train)->LastLogits(seqs[i], ref[i] ? ref[i]->layout : none,
                                       ref[i] ? ref[i]->config.scale() : 0.0f,
                                       ref[i] ? ref[i]->params.data() : nullptr);
      ASSERT_TRUE(want.ok());
      for (int64_t j = 0; j < c.vocab_size; ++j) {
        ASSERT_NEAR(logits[i * c.vocab_size + j], (*want)[j], 5e-3)
            << "sequence " << i << " token " << j;
      }
    }
    // The adapters change the logits (so the comparison above saw them).
    auto base = (*train)->LastLogits(seqs[0], none, 0.0f, nullptr);
    ASSERT_TRUE(base.ok());
    double diff = 0;
    for (int64_t j = 0; j < c.vocab_size; ++j) diff += std::abs(logits[j] - (*base)[j]);
    EXPECT_GT(diff, 0.1);

    // A decode step: one token per sequence, mixed adapters again.
    Batch step;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int32_t len = static_cast<int32_t>(seqs[i].size());
      ASSERT_TRUE(kv.Grow(static_cast<int32_t>(i + 1), len + 1).has_value());
      step.tokens.push_back(7);
      step.chunks.push_back({.num_tokens = 1,
                             .first_position = len,
                             .block_table = kv.block_table(static_cast<int32_t>(i + 1)),
                             .want_logits = true,
                             .adapter = use[i]});
    }
    ASSERT_TRUE((*model)->Forward(step, &logits).ok());
    for (size_t i = 0; i < seqs.size(); ++i) {
      std::vector<TokenId> longer = seqs[i];
      longer.push_back(7);
      auto want = (*train)->LastLogits(longer, ref[i] ? ref[i]->layout : none,
                                       ref[i] ? ref[i]->config.scale() : 0.0f,
                                       ref[i] ? ref[i]->params.data() : nullptr);
      ASSERT_TRUE(want.ok());
      for (int64_t j = 0; j < c.vocab_size; ++j) {
        // K and V round-trip through the f16 cache; the decode step's logits carry that
        // rounding through both layers, hence a wider tolerance than the prefill's.
        ASSERT_NEAR(logits[i * c.vocab_size + j], (*want)[j], 2e-2) << "decode " << i;
      }
    }
  }
}

TEST(MixedBatchLoraTest, RejectsAnAdapterForAnotherModel) {
  testing::TinyRandomModel file(32);
  ModelConfig other = file.config();
  other.ffn_hidden = 32;
  lora::LoraConfig config;
  config.targets = {LoraModule::kUp};
  auto a = lora::NewLoraAdapter(other, config, 1);
  ASSERT_TRUE(a.ok());
  cpu::CpuBackend backend(1);
  auto model = LlamaModel::Create(file, backend, 4);
  ASSERT_TRUE(model.ok());
  auto loaded = lora::BackendLoraAdapter::Load(*a, backend);
  ASSERT_TRUE(loaded.ok());
  kvcache::KvCache kv(4);
  ASSERT_TRUE(kv.Grow(1, 2).has_value());
  Batch batch{.tokens = {1, 2},
              .chunks = {{.num_tokens = 2,
                          .first_position = 0,
                          .block_table = kv.block_table(1),
                          .want_logits = true,
                          .adapter = loaded->get()}}};
  std::vector<float> logits;
  EXPECT_EQ((*model)->Forward(batch, &logits).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spillway::engine
