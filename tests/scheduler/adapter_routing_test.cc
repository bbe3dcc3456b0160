// LoRA adapters through the scheduler (issue #7, serving): a request's adapter reaches every
// batch chunk of every one of its sequences (prefill chunks, decodes, all n choices), base
// and adapter sequences share one batch, and the prefix cache keeps adapters apart (the same
// prompt under another adapter or the base model never reuses a block; under the same
// adapter it does). Within a batch, each adapter's chunks are adjacent (one LoRA segment).
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>

#include "common/check.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/lora/backend_adapter.h"
#include "engine/lora/lora_adapter.h"
#include "scheduler/scheduler.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/scheduler/sim.h"

namespace spillway::scheduler {
namespace {

using engine::lora::BackendLoraAdapter;
using testing::Prompt;
using testing::Sim;

// Two small real adapters (their pointers are what the scheduler routes).
class AdapterRoutingTest : public ::testing::Test {
 protected:
  AdapterRoutingTest() : config_(engine::testing::TinyRandomModel(1).config()), backend_(1) {
    for (int i = 0; i < 2; ++i) {
      engine::lora::LoraConfig rank2;
      rank2.rank = 2;
      auto a = engine::lora::NewLoraAdapter(config_, rank2, 7 + i);
      SPW_CHECK(a.ok());
      auto loaded = BackendLoraAdapter::Load(*a, backend_);
      SPW_CHECK(loaded.ok());
      adapters_[i] = AdapterRef{.id = 100 + i, .weights = std::move(*loaded)};
    }
  }

  RequestId Add(Sim& sim, std::vector<TokenId> prompt, int max_tokens, const AdapterRef& ref,
                int32_t n = 1) {
    Request r = sim.MakeRequest(std::move(prompt), {.max_tokens = max_tokens});
    r.adapter = ref;
    r.n = n;
    // MakeRequest sized the output for one choice.
    const_cast<testing::RequestOutput&>(sim.output(r.id)).choices.resize(n);
    const RequestId id = r.id;
    sim.scheduler().Add(std::move(r));
    return id;
  }

  engine::ModelConfig config_;
  engine::cpu::CpuBackend backend_;
  AdapterRef adapters_[2];
};

TEST_F(AdapterRoutingTest, EveryChunkOfASequenceCarriesItsAdapterInOneMixedBatch) {
  Sim sim({.num_blocks = 32, .max_batch_tokens = 16});
  const RequestId base = Add(sim, Prompt(20, 1), 4, AdapterRef{});
  const RequestId a0 = Add(sim, Prompt(20, 1), 4, adapters_[0], /*n=*/2);
  const RequestId a1 = Add(sim, Prompt(9, 2), 4, adapters_[1]);
  std::map<kvcache::SeqId, const BackendLoraAdapter*> want;
  for (kvcache::SeqId s : sim.scheduler().SeqIdsForTesting(base)) want[s] = nullptr;
  for (kvcache::SeqId s : sim.scheduler().SeqIdsForTesting(a0)) {
    want[s] = adapters_[0].weights.get();
  }
  for (kvcache::SeqId s : sim.scheduler().SeqIdsForTesting(a1)) {
    want[s] = adapters_[1].weights.get();
  }
  int mixed_steps = 0;
  std::map<kvcache::SeqId, int> chunks_seen;
  while (!sim.scheduler().idle()) {
    sim.Step();
    const BatchPlan& plan = sim.last_plan();
    ASSERT_EQ(plan.slices.size(), plan.batch.chunks.size());
    std::set<const BackendLoraAdapter*> in_batch;
    for (size_t i = 0; i < plan.slices.size(); ++i) {
      EXPECT_EQ(plan.batch.chunks[i].adapter, want.at(plan.slices[i].seq))
          << "seq " << plan.slices[i].seq;
      in_batch.insert(plan.batch.chunks[i].adapter);
      ++chunks_seen[plan.slices[i].seq];
    }
    if (in_batch.size() == 3) ++mixed_steps;  // base + both adapters in one forward
    // Each adapter's chunks side by side (one row segment each), the base model's first.
    size_t runs = 0;
    for (size_t i = 0; i < plan.batch.chunks.size(); ++i) {
      runs += i == 0 || plan.batch.chunks[i].adapter != plan.batch.chunks[i - 1].adapter;
    }
    EXPECT_EQ(runs, in_batch.size());
    if (in_batch.contains(nullptr)) {
      EXPECT_EQ(plan.batch.chunks[0].adapter, nullptr);
    }
  }
  EXPECT_GT(mixed_steps, 0);
  EXPECT_EQ(chunks_seen.size(), want.size());  // every sequence ran, incl. choice 1 of a0
  for (RequestId id : {base, a0, a1}) EXPECT_TRUE(sim.output(id).closed) << id;
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST_F(AdapterRoutingTest, PrefixCacheNeverSharesBlocksAcrossAdapters) {
  Sim sim({.num_blocks = 64, .max_batch_tokens = 64});
  const std::vector<TokenId> prompt = Prompt(3 * kvcache::kBlockTokens + 2, 5);
  auto run = [&](const AdapterRef& ref) {
    const RequestId id = Add(sim, prompt, 1, ref);
    sim.RunToEnd();
    return sim.output(id).usage.value().cached_tokens;
  };
  EXPECT_EQ(run(adapters_[0]), 0);
  EXPECT_EQ(run(adapters_[1]), 0);  // same tokens, other adapter: nothing shared
  EXPECT_EQ(run(AdapterRef{}), 0);  // nor with the base model
  EXPECT_EQ(run(adapters_[0]), 3 * kvcache::kBlockTokens);  // same adapter: its own blocks
  EXPECT_EQ(run(AdapterRef{}), 3 * kvcache::kBlockTokens);
  EXPECT_EQ(sim.kv().MatchPrefix(prompt, adapters_[1].id).num_cached_tokens,
            3 * kvcache::kBlockTokens);
  EXPECT_EQ(sim.kv().MatchPrefix(prompt, 999).num_cached_tokens, 0);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST_F(AdapterRoutingTest, ARequestKeepsItsAdapterAliveUntilItEnds) {
  Sim sim({.num_blocks = 32, .max_batch_tokens = 16});
  std::weak_ptr<const BackendLoraAdapter> weak = adapters_[0].weights;
  Add(sim, Prompt(10, 3), 3, adapters_[0]);
  adapters_[0] = AdapterRef{};  // "unloaded": only the request holds it now
  EXPECT_FALSE(weak.expired());
  sim.RunToEnd();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace spillway::scheduler
