// Scheduler over a KvCache with lower tiers (host, SSD) and the FakeModel, whose KV goes down
// and comes back through FakeKvBlockIo (sim.h): a preempted sequence resumes from its swapped
// blocks instead of recomputing them, a returning prompt's prefix is loaded from the host or
// prefetched from the SSD while later requests go past it, and every output is the one the
// model gives without tiers.
#include <gtest/gtest.h>

#include <filesystem>

#include "scheduler/scheduler.h"
#include "tests/scheduler/sim.h"
#include "tests/test_paths.h"

namespace spillway::scheduler {
namespace {

using kvcache::Tier;
using testing::Prompt;
using testing::Row;
using testing::Sim;
using testing::SimOptions;
using Rows = std::vector<Row>;

std::string FreshDir(const std::string& name) {
  const std::string dir = spillway::testing::BinaryPath("tests/tmp/" + name);
  std::filesystem::remove_all(dir);
  return dir;
}

int64_t HitTokens(Sim& sim, Tier tier) { return sim.kv().hit_tokens()[static_cast<int>(tier)]; }

// 4 device blocks, 2 host slots and an SSD tier in `dir`.
SimOptions SsdSim(const std::string& dir) {
  return {.num_blocks = 4,
          .host_blocks = 2,
          .disk_dir = dir,
          .disk_blocks = 32,
          .max_batch_tokens = 64};
}

// Runs `p`, then two 60-token prompts that push p's blocks through the host (2 slots) to the
// SSD, and waits for the SSD writes. Returns p followed by 10 more tokens: a returning prompt.
std::vector<TokenId> RunAndPushToSsd(Sim& sim, const std::vector<TokenId>& p) {
  for (const std::vector<TokenId>& prompt : {p, Prompt(60, 6), Prompt(60, 7)}) {
    sim.Add(prompt, {.max_tokens = 2});
    sim.RunToEnd();
  }
  sim.kv().tiers()->disk()->Flush();
  std::vector<TokenId> returning = p;
  for (TokenId t : Prompt(10, 8)) returning.push_back(t);
  return returning;
}

TEST(TieredScheduler, PreemptedSequenceResumesFromItsSwappedBlocks) {
  // As in Scheduler.PreemptionRecomputesTheLatest...: 6 device blocks, two 70-token sequences.
  Sim sim({.num_blocks = 6, .host_blocks = 8, .max_batch_tokens = 64});
  const RequestId a = sim.Add(Prompt(30, 1), {.max_tokens = 40});
  const RequestId b = sim.Add(Prompt(30, 2), {.max_tokens = 40});
  const kvcache::SeqId sa = sim.seq(a), sb = sim.seq(b);
  EXPECT_EQ(sim.Step(), (Rows{{sa, 0, 30}, {sb, 0, 30}}));
  bool preempted = false;
  std::vector<Row> resumed;
  while (!sim.scheduler().idle()) {
    const Rows rows = sim.Step();
    if (!sim.last_plan().preempted.empty()) {
      EXPECT_EQ(sim.last_plan().preempted, (std::vector<kvcache::SeqId>{sb}));
      preempted = true;
    }
    for (const Row& r : rows) {
      if (preempted && resumed.empty() && r.seq == sb) resumed.push_back(r);
    }
  }
  ASSERT_TRUE(preempted);
  // B had 49 tokens, 48 of them (three full blocks) computed: all three come back, from the
  // device or the host, and only the pending token runs.
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0], (Row{sb, 48, 1}));
  EXPECT_GT(sim.kv().tiers()->stats().spills_device_host, 0);
  EXPECT_GT(HitTokens(sim, Tier::kHost), 0);
  EXPECT_EQ(sim.output(a).choices[0].tokens, sim.Expected(Prompt(30, 1), 40));
  EXPECT_EQ(sim.output(b).choices[0].tokens, sim.Expected(Prompt(30, 2), 40));
  EXPECT_EQ(sim.output(b).choices[0].num_events, 40);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(TieredScheduler, ReturningPromptLoadsItsPrefixFromTheHost) {
  Sim sim({.num_blocks = 4, .host_blocks = 4, .max_batch_tokens = 64});
  const std::vector<TokenId> p = Prompt(40, 5);
  const RequestId r1 = sim.Add(p, {.max_tokens = 2});
  sim.RunToEnd();
  const RequestId r2 = sim.Add(Prompt(60, 6), {.max_tokens = 2});  // needs all 4 blocks
  sim.RunToEnd();
  std::vector<TokenId> p3 = p;
  for (TokenId t : Prompt(10, 8)) p3.push_back(t);
  const RequestId r3 = sim.Add(p3, {.max_tokens = 3});
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r3), 32, 18}}));
  sim.RunToEnd();
  EXPECT_EQ(HitTokens(sim, Tier::kHost), 32);
  EXPECT_EQ(sim.output(r3).usage->cached_tokens, 32);
  EXPECT_EQ(sim.output(r1).choices[0].tokens, sim.Expected(p, 2));
  EXPECT_EQ(sim.output(r2).choices[0].tokens, sim.Expected(Prompt(60, 6), 2));
  EXPECT_EQ(sim.output(r3).choices[0].tokens, sim.Expected(p3, 3));
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(TieredScheduler, PrefixOnTheSsdIsPrefetchedWhileLaterRequestsRun) {
  Sim sim(SsdSim(FreshDir("tiered_scheduler_ssd")));
  kvcache::DiskTier& disk = *sim.kv().tiers()->disk();
  const std::vector<TokenId> p3 = RunAndPushToSsd(sim, Prompt(40, 5));
  ASSERT_EQ(sim.kv().MatchPrefix(p3, kvcache::kBaseModel).num_disk_blocks(), 2);

  const RequestId r3 = sim.Add(p3, {.max_tokens = 3});
  const RequestId r4 = sim.Add(Prompt(5, 9), {.max_tokens = 1});
  // r3's reads start; r4 goes past it (and ends, leaving the 4 device blocks to r3).
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r4), 0, 5}}));
  EXPECT_EQ(sim.scheduler().WaitingForTesting(), (std::vector<kvcache::SeqId>{sim.seq(r3)}));
  disk.Flush();
  // The next step collects the reads; r3 takes both blocks (host -> device) and computes 18.
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r3), 32, 18}}));
  sim.RunToEnd();
  EXPECT_EQ(HitTokens(sim, Tier::kDisk), 32);
  EXPECT_EQ(sim.kv().tiers()->stats().loads_disk_host, 2);
  EXPECT_EQ(sim.output(r3).choices[0].tokens, sim.Expected(p3, 3));
  EXPECT_EQ(sim.output(r4).choices[0].tokens, sim.Expected(Prompt(5, 9), 1));
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(TieredScheduler, FailedSsdReadIsRecomputed) {
  const std::string dir = FreshDir("tiered_scheduler_fail");
  Sim sim(SsdSim(dir));
  kvcache::DiskTier& disk = *sim.kv().tiers()->disk();
  const std::vector<TokenId> p3 = RunAndPushToSsd(sim, Prompt(40, 5));
  // The slab files are truncated under the tier: every read is a miss.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().starts_with("slab")) {
      std::filesystem::resize_file(entry.path(), 0);
    }
  }
  const RequestId r3 = sim.Add(p3, {.max_tokens = 3});
  EXPECT_EQ(sim.Step(), Rows{});
  disk.Flush();
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r3), 0, 50}}));
  sim.RunToEnd();
  EXPECT_EQ(HitTokens(sim, Tier::kDisk), 0);
  const kvcache::TierStats s = sim.kv().tiers()->stats();
  int64_t errors = 0;
  for (int64_t e : s.disk_errors) errors += e;
  EXPECT_EQ(errors, 2);
  EXPECT_EQ(sim.output(r3).choices[0].tokens, sim.Expected(p3, 3));
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

}  // namespace
}  // namespace spillway::scheduler
