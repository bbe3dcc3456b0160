// Asynchronous device <-> host copies in KvCache + TierManager, exact state on a 3-block device
// pool and a 4-slot host tier (STYLE.md §9), with a BlockIo whose copies complete only when the
// test says so (ManualBlockIo): a spilled block is neither free nor cached while its copy is in
// flight and becomes free when the copy completes; an allocation that needs it before then
// waits for that one copy; spilling ahead keeps the next allocation from waiting; a loaded
// block is the device's at once, its bytes arrive before the next forward pass, and its host
// slot is freed only when the copy completes.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "kvcache/block_hash.h"
#include "kvcache/kv_cache.h"
#include "tests/kvcache/manual_block_io.h"
#include "tests/kvcache/tier_test_util.h"

namespace spillway::kvcache {
namespace {

using testing::ChainOf;
using testing::HostIndex;
using testing::Ids;
using testing::Iota;
using testing::ManualBlockIo;
using testing::Slots;

constexpr int64_t kBlockBytes = 256;

Ids Table(const KvCache& kv, SeqId seq) {
  return {kv.block_table(seq).begin(), kv.block_table(seq).end()};
}

// Grows `seq` by `tokens` past what it has, fills the new full blocks as a forward pass would
// (after BeginForward) and commits them.
void Compute(KvCache& kv, ManualBlockIo& io, SeqId seq, std::span<const TokenId> tokens) {
  const size_t first = kv.block_table(seq).size();
  ASSERT_TRUE(kv.Grow(seq, static_cast<int32_t>(tokens.size()) - kv.num_tokens(seq)).has_value());
  io.BeginForward();
  const std::vector<BlockHash> chain = ChainOf(tokens);
  for (size_t b = first; b < chain.size(); ++b) io.Fill(kv.block_table(seq)[b], chain[b]);
  kv.CommitComputed(seq, tokens, kBaseModel);
}

TEST(AsyncTiers, SpillsAndLoadsInFlightFollowTheCopyRules) {
  ManualBlockIo io(3, kBlockBytes);
  KvCache kv(3, std::make_unique<TierManager>(
                    io, TierManager::Options{.host_slots = 4, .spill_ahead_blocks = 1}));
  const TierManager& tiers = *kv.tiers();
  const std::vector<TokenId> a = Iota(32, 100), b = Iota(32, 500),
                             c = Iota(8, 900);  // C: a partial block, never cached
  const std::vector<BlockHash> ha = ChainOf(a), hb = ChainOf(b);

  Compute(kv, io, 1, a);  // A0, A1 in blocks 0, 1
  kv.Release(1);
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));

  // B0 takes the last free block 2; the free list is empty, so A1 (least recently used)
  // spills ahead: its copy is in flight, block 1 is neither free nor cached, and its host slot
  // is indexed (a lookup finds it) but pinned (not evictable).
  Compute(kv, io, 2, std::span(b).first(16));
  EXPECT_EQ(Table(kv, 2), (Ids{2}));
  EXPECT_TRUE(io.reading(1));
  EXPECT_EQ(io.pending(), (std::vector<CopyTicket>{1}));
  EXPECT_EQ(tiers.SpillingBlocksForTesting(), (Ids{1}));
  EXPECT_EQ(kv.pool().ref_count(1), 1);
  EXPECT_EQ(kv.pool().FreeListForTesting(), Ids{});
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{0}));
  EXPECT_EQ(kv.pool().Lookup({.hash = ha[1]}), std::nullopt);
  EXPECT_EQ(kv.num_free_blocks(), 2);  // block 0 evictable + block 1 in flight
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{ha[1], 0}}));
  EXPECT_EQ(tiers.host().EvictionOrderForTesting(), Slots{});
  EXPECT_EQ(tiers.stats().spills_in_flight, 1);
  EXPECT_EQ(tiers.stats().spills_device_host, 0);

  // Polling changes nothing while the copy is in flight.
  kv.PollTransfers();
  EXPECT_EQ(kv.pool().FreeListForTesting(), Ids{});
  EXPECT_EQ(tiers.SpillingBlocksForTesting(), (Ids{1}));

  // The copy completes: the next poll frees block 1 and unpins the slot.
  io.Complete(1);
  kv.PollTransfers();
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{1}));
  EXPECT_EQ(tiers.SpillingBlocksForTesting(), Ids{});
  EXPECT_EQ(tiers.host().EvictionOrderForTesting(), (Slots{0}));
  EXPECT_EQ(tiers.stats().spills_device_host, 1);
  EXPECT_EQ(tiers.stats().spills_in_flight, 0);

  // B1 takes the free block 1 without waiting, and A0 spills ahead (ticket 2).
  Compute(kv, io, 2, b);
  EXPECT_EQ(Table(kv, 2), (Ids{2, 1}));
  EXPECT_EQ(io.pending(), (std::vector<CopyTicket>{2}));
  EXPECT_TRUE(io.reading(0));
  EXPECT_EQ(io.num_waits, 0);
  EXPECT_EQ(tiers.stats().copy_waits, 0);

  // C needs a block now and the only one is A0's, still in flight: it waits for that copy.
  Compute(kv, io, 3, c);
  EXPECT_EQ(Table(kv, 3), (Ids{0}));
  EXPECT_EQ(io.num_waits, 1);
  EXPECT_EQ(tiers.stats().copy_waits, 1);
  EXPECT_EQ(io.num_pending(), 0);
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{ha[1], 0}, {ha[0], 1}}));
  EXPECT_EQ(tiers.host().EvictionOrderForTesting(), (Slots{0, 1}));

  // A comes back from the host. Room: C's block is freed, B's two become evictable.
  kv.Release(3);
  kv.Release(2);
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{0}));
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 2}));
  std::vector<TokenId> a_next = a;
  a_next.push_back(7);
  const PrefixHit hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_TRUE(hit.blocks.empty());
  // A0 loads into free block 0 (B1 spills ahead, ticket 3, into slot 2), A1 into block 1 once
  // B1's spill is waited for (B0 spills ahead, ticket 5, slot 3), and token 33 gets block 2
  // once B0's spill is waited for. The loads (tickets 4, 6) are still in flight.
  ASSERT_TRUE(kv.Grow(4, 1, hit).has_value());
  EXPECT_EQ(Table(kv, 4), (Ids{0, 1, 2}));
  EXPECT_EQ(io.pending(), (std::vector<CopyTicket>{4, 6}));
  EXPECT_EQ(io.num_waits, 3);
  EXPECT_TRUE(io.writing(0));
  EXPECT_TRUE(io.writing(1));
  EXPECT_TRUE(tiers.loading(0));
  EXPECT_TRUE(tiers.loading(1));
  EXPECT_TRUE(io.Holds(1, hb[1]));  // A1 is not there yet: block 1 still holds B1
  // The blocks are the device's at once: indexed on the device, gone from the host index,
  // their slots (0, 1) still held for the copies.
  EXPECT_EQ(kv.pool().Lookup({.hash = ha[0],
                              .parent = RootHash(kBaseModel),
                              .tokens = {100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
                                         112, 113, 114, 115}}),
            BlockId{0});
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{hb[1], 2}, {hb[0], 3}}));
  EXPECT_EQ(tiers.host().num_used(), 4);
  EXPECT_EQ(tiers.stats().loads_in_flight, 2);
  EXPECT_EQ(tiers.stats().loads_host_device, 0);
  EXPECT_EQ(kv.hit_tokens()[static_cast<int>(Tier::kHost)], 32);

  // The next forward pass starts only once the loads are in: the bytes are A's.
  io.BeginForward();
  EXPECT_TRUE(io.Holds(0, ha[0]));
  EXPECT_TRUE(io.Holds(1, ha[1]));
  EXPECT_EQ(tiers.host().num_used(), 4);  // freed when the completions are collected
  kv.PollTransfers();
  EXPECT_EQ(tiers.host().num_used(), 2);
  EXPECT_EQ(tiers.host().FreeListForTesting(), (Slots{1, 0}));
  EXPECT_EQ(tiers.stats().loads_host_device, 2);
  EXPECT_EQ(tiers.stats().loads_in_flight, 0);
}

BlockKey Key(BlockHash hash) { return BlockKey{.hash = hash, .parent = 1, .tokens = {}}; }

// A load from a host slot that a spill is still writing waits for that copy first (and gets
// the spilled bytes); a block computed on the device again while its spill is in flight leaves
// the host index at once (one home) and its slot is freed when the copy completes.
TEST(AsyncTiers, LoadOfASlotInFlightWaitsAndARecomputedBlockIsDropped) {
  ManualBlockIo io(3, kBlockBytes);
  TierManager tiers(io, TierManager::Options{.host_slots = 2});

  io.Fill(0, 11);
  ASSERT_TRUE(tiers.StartSpill(0, Key(11)));  // ticket 1 -> slot 0
  EXPECT_EQ(tiers.Locate(Key(11)), Tier::kHost);
  tiers.PinHost(Key(11));
  const absl::StatusOr<Tier> origin = tiers.LoadToDevice(Key(11), 2);  // ticket 2
  ASSERT_TRUE(origin.ok()) << origin.status();
  EXPECT_EQ(*origin, Tier::kHost);
  EXPECT_EQ(io.num_waits, 1);
  EXPECT_EQ(tiers.stats().copy_waits, 1);
  EXPECT_EQ(tiers.TakeSpilledBlocks(), (Ids{0}));
  EXPECT_EQ(io.pending(), (std::vector<CopyTicket>{2}));
  EXPECT_EQ(tiers.Locate(Key(11)), std::nullopt);
  io.BeginForward();
  EXPECT_TRUE(io.Holds(2, 11));

  io.Fill(1, 22);
  ASSERT_TRUE(tiers.StartSpill(1, Key(22)));  // ticket 3 -> slot 1 (slot 0 is still loading)
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{22, 1}}));
  tiers.OnDeviceRegistered(22);  // computed on the device again
  EXPECT_EQ(tiers.host().IndexForTesting(), HostIndex{});
  EXPECT_EQ(tiers.Locate(Key(22)), std::nullopt);
  EXPECT_EQ(tiers.host().num_used(), 2);  // both slots still held by copies
  io.Complete(3);
  tiers.Poll();  // the load (ticket 2) and the dropped spill (ticket 3) finish
  EXPECT_EQ(tiers.TakeSpilledBlocks(), (Ids{1}));
  EXPECT_EQ(tiers.host().num_used(), 0);
  EXPECT_EQ(tiers.host().FreeListForTesting(), (Slots{0, 1}));
  EXPECT_EQ(tiers.stats().spills_device_host, 1);  // the dropped one is not counted
  EXPECT_EQ(tiers.stats().loads_host_device, 1);
}

}  // namespace
}  // namespace spillway::kvcache
