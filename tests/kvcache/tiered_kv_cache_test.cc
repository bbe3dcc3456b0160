// KvCache with lower tiers (TierManager over HostTier and DiskTier) on tiny pools: exact state
// after each operation (STYLE.md §9) — which blocks spill where, what a prefix lookup finds in
// each tier, what Grow loads back and that the bytes come back intact — and a randomized run
// of thousands of operations checked against a reference (ref counts from the block tables,
// block contents from the block keys) after every step.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "kvcache/block_hash.h"
#include "kvcache/kv_cache.h"
#include "tests/kvcache/fake_block_io.h"
#include "tests/kvcache/manual_block_io.h"
#include "tests/kvcache/tier_test_util.h"
#include "tests/test_paths.h"

namespace spillway::kvcache {
namespace {

using testing::ChainOf;
using testing::FakeBlockIo;
using testing::HostIndex;
using testing::Ids;
using testing::Iota;
using testing::ManualBlockIo;
using testing::Slots;

constexpr int64_t kBlockBytes = 256;

std::string FreshDir(const std::string& name) {
  const std::string dir = spillway::testing::BinaryPath("tests/tmp/" + name);
  std::filesystem::remove_all(dir);
  return dir;
}

std::unique_ptr<DiskTier> OpenDisk(const std::string& dir, int64_t blocks) {
  absl::StatusOr<std::unique_ptr<DiskTier>> disk =
      DiskTier::Open({.path = dir,
                      .capacity_bytes = blocks * 4096,
                      .block_bytes = kBlockBytes + kDiskKeyBytes,
                      .layout_fingerprint = 42,
                      .min_free_bytes = 0});
  EXPECT_TRUE(disk.ok()) << disk.status();
  return disk.ok() ? *std::move(disk) : nullptr;
}

// A device pool of `device` blocks over `io`, with `host` host slots and an optional SSD tier.
KvCache MakeCache(FakeBlockIo& io, int32_t device, int32_t host,
                  std::unique_ptr<DiskTier> disk = nullptr) {
  return KvCache(device,
                 std::make_unique<TierManager>(
                     io, TierManager::Options{.host_slots = host, .disk = std::move(disk)}));
}

// Runs sequence `seq` over `tokens` as the engine would: takes `hit`, grows by the rest,
// "computes" the new blocks (fills them with their key's pattern) and commits them.
void Compute(KvCache& kv, FakeBlockIo& io, SeqId seq, std::span<const TokenId> tokens,
             const PrefixHit& hit = {}) {
  const int32_t first_new_block =
      static_cast<int32_t>(kv.block_table(seq).size() + hit.blocks.size() + hit.lower.size());
  const int32_t num_new =
      static_cast<int32_t>(tokens.size()) - kv.num_tokens(seq) - hit.num_cached_tokens;
  ASSERT_TRUE(kv.Grow(seq, num_new, hit).has_value());
  const std::vector<BlockHash> chain = ChainOf(tokens);
  const std::span<const BlockId> table = kv.block_table(seq);
  for (size_t b = first_new_block; b < chain.size(); ++b) io.Fill(table[b], chain[b]);
  kv.CommitComputed(seq, tokens, kBaseModel);
}

TEST(TieredKvCache, EvictedBlocksSpillToHostAndComeBackWithTheirBytes) {
  FakeBlockIo io(4, kBlockBytes);
  KvCache kv = MakeCache(io, 4, 2);
  const TierManager& tiers = *kv.tiers();
  const std::vector<TokenId> a = Iota(32, 100), b = Iota(64, 500);
  const std::vector<BlockHash> ha = ChainOf(a), hb = ChainOf(b);

  Compute(kv, io, 1, a);
  kv.Release(1);
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));
  // Two free blocks, then A's blocks are evicted least recently used first: A1, then A0.
  Compute(kv, io, 2, b);
  EXPECT_EQ(kv.block_table(2).size(), 4u);
  EXPECT_EQ(std::vector<BlockId>(kv.block_table(2).begin(), kv.block_table(2).end()),
            (Ids{2, 3, 1, 0}));
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{ha[1], 0}, {ha[0], 1}}));
  EXPECT_EQ(tiers.host().EvictionOrderForTesting(), (Slots{0, 1}));
  EXPECT_EQ(tiers.stats().spills_device_host, 2);
  EXPECT_EQ(tiers.stats().bytes_device_host, 2 * kBlockBytes);
  kv.Release(2);
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{0, 1, 3, 2}));  // B3, B2, B1, B0

  // A's prefix is found on the host; a lookup pins and moves nothing.
  std::vector<TokenId> a_next = a;
  a_next.push_back(7);
  PrefixHit hit = kv.MatchPrefix(std::span(a_next).first(32), kBaseModel);
  EXPECT_TRUE(hit.blocks.empty());
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_EQ(hit.lower[0].key.hash, ha[0]);
  EXPECT_EQ(hit.lower[0].tier, Tier::kHost);
  EXPECT_EQ(hit.lower[1].key.hash, ha[1]);
  EXPECT_EQ(hit.num_cached_tokens, 32);
  EXPECT_EQ(tiers.host().num_used(), 2);

  // Grow takes A0 and A1 into device blocks 0 and 1 (evicting B3, which finds every host slot
  // pinned and is dropped, then B2, which takes A0's freed slot) and a new block 3 for token
  // 33 (evicting B1 into A1's freed slot).
  Compute(kv, io, 3, a_next, hit);
  EXPECT_EQ(std::vector<BlockId>(kv.block_table(3).begin(), kv.block_table(3).end()),
            (Ids{0, 1, 3}));
  EXPECT_TRUE(io.Holds(0, ha[0]));
  EXPECT_TRUE(io.Holds(1, ha[1]));
  EXPECT_EQ(tiers.host().IndexForTesting(), (HostIndex{{hb[1], 0}, {hb[2], 1}}));
  EXPECT_EQ(tiers.host().EvictionOrderForTesting(), (Slots{1, 0}));
  EXPECT_EQ(kv.pool().IndexForTesting(),
            (std::vector<std::pair<BlockHash, BlockId>>{{ha[0], 0}, {ha[1], 1}, {hb[0], 2}}));
  EXPECT_EQ(tiers.stats().loads_host_device, 2);
  EXPECT_EQ(tiers.stats().spills_device_host, 4);
  EXPECT_EQ(kv.hit_tokens()[static_cast<int>(Tier::kHost)], 32);

  // B: B0 on the device, B1 and B2 on the host, B3 gone.
  hit = kv.MatchPrefix(std::span(b).first(63), kBaseModel);
  EXPECT_EQ(hit.blocks, (Ids{2}));
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_EQ(hit.lower[0].key.hash, hb[1]);
  EXPECT_EQ(hit.lower[1].key.hash, hb[2]);
  EXPECT_EQ(hit.num_cached_tokens, 48);
}

TEST(TieredKvCache, GrowThatDoesNotFitChangesNothing) {
  FakeBlockIo io(2, kBlockBytes);
  KvCache kv = MakeCache(io, 2, 2);
  const std::vector<TokenId> a = Iota(32, 100);
  Compute(kv, io, 1, a);
  kv.Release(1);
  Compute(kv, io, 2, Iota(32, 900));  // A0, A1 go to the host
  PrefixHit hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_FALSE(kv.Grow(3, 1, hit).has_value());  // seq 2 holds both device blocks
  EXPECT_EQ(kv.tiers()->host().num_cached(), 2);
  EXPECT_EQ(kv.tiers()->host().pins(0), 0);
  EXPECT_TRUE(kv.block_table(3).empty());
}

TEST(TieredKvCache, RecomputedBlockDropsItsHostCopy) {
  FakeBlockIo io(2, kBlockBytes);
  KvCache kv = MakeCache(io, 2, 2);
  const std::vector<TokenId> a = Iota(16, 100);
  Compute(kv, io, 1, a);
  kv.Release(1);
  Compute(kv, io, 2, Iota(32, 900));  // A0 goes to the host
  const BlockHash h = ChainOf(a)[0];
  EXPECT_EQ(kv.tiers()->host().IndexForTesting(), (HostIndex{{h, 0}}));
  kv.Release(2);
  // Computed again without the hit (evicting C1 to the host): one home, the device.
  Compute(kv, io, 3, a);
  EXPECT_EQ(kv.tiers()->host().IndexForTesting(), (HostIndex{{ChainOf(Iota(32, 900))[1], 1}}));
  EXPECT_EQ(kv.pool().IndexForTesting(),
            (std::vector<std::pair<BlockHash, BlockId>>{{h, 0}, {ChainOf(Iota(32, 900))[0], 1}}));
}

TEST(TieredKvCache, HostBlocksSpillToDiskAndArePrefetchedBack) {
  FakeBlockIo io(4, kBlockBytes);
  KvCache kv = MakeCache(io, 4, 2, OpenDisk(FreshDir("tiered_prefetch"), 16));
  const TierManager& tiers = *kv.tiers();
  const std::vector<TokenId> a = Iota(32, 100), b = Iota(64, 500), c = Iota(64, 900);
  const std::vector<BlockHash> ha = ChainOf(a);
  Compute(kv, io, 1, a);
  kv.Release(1);
  Compute(kv, io, 2, b);  // A -> host
  kv.Release(2);
  // B3, B2, B1, B0 -> host, pushing A1, A0, B3, B2 -> disk.
  Compute(kv, io, 3, c);
  tiers.disk()->Flush();
  kv.PollTransfers();
  EXPECT_EQ(tiers.stats().spills_host_disk, 4);
  EXPECT_EQ(tiers.stats().bytes_host_disk, 4 * kBlockBytes);
  EXPECT_TRUE(tiers.disk()->Contains(ha[0]));
  kv.Release(3);

  PrefixHit hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_EQ(hit.num_disk_blocks(), 2);
  EXPECT_EQ(kv.Prefetch(hit), 2);
  EXPECT_EQ(kv.NumLoading(hit), 2);
  EXPECT_EQ(kv.Prefetch(hit), 2);  // no second read of a block in flight
  tiers.disk()->Flush();
  kv.PollTransfers();
  EXPECT_EQ(kv.NumLoading(hit), 0);
  EXPECT_EQ(tiers.stats().loads_disk_host, 2);

  hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_EQ(hit.num_disk_blocks(), 0);
  std::vector<TokenId> a_next = a;
  a_next.push_back(1);
  Compute(kv, io, 4, a_next, hit);
  const std::span<const BlockId> table = kv.block_table(4);
  EXPECT_TRUE(io.Holds(table[0], ha[0]));
  EXPECT_TRUE(io.Holds(table[1], ha[1]));
  EXPECT_EQ(kv.hit_tokens()[static_cast<int>(Tier::kDisk)], 32);
  // The SSD keeps its copies (it is the persistent tier).
  EXPECT_TRUE(tiers.disk()->Contains(ha[0]));
  const TierStats s = tiers.stats();
  EXPECT_EQ(s.load_buckets[0] + s.load_buckets[1] + s.load_buckets[2] + s.load_buckets[3] +
                s.load_buckets[4] + s.load_buckets[5] + s.load_buckets[6] + s.load_buckets[7] +
                s.load_buckets[8] + s.load_buckets[9] + s.load_buckets[10],
            4);  // 2 disk -> host, 2 host -> device
}

TEST(TieredKvCache, SsdBlockOfAnotherPrefixUnderTheSameHashIsAMiss) {
  FakeBlockIo io(2, kBlockBytes);
  KvCache kv = MakeCache(io, 2, 1, OpenDisk(FreshDir("tiered_mismatch"), 8));
  const std::vector<TokenId> a = Iota(16, 100);
  const BlockHash h = ChainOf(a)[0];
  // Another block's payload stored under A0's hash (as a 64-bit collision would).
  std::vector<std::byte> payload(kBlockBytes + kDiskKeyBytes, std::byte{0});
  std::memcpy(payload.data(), &h, sizeof(h));
  ASSERT_TRUE(kv.tiers()->disk()->SubmitWrite(h, payload));
  kv.tiers()->disk()->Flush();
  kv.PollTransfers();
  PrefixHit hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_EQ(hit.num_disk_blocks(), 1);
  EXPECT_EQ(kv.Prefetch(hit), 1);
  kv.tiers()->disk()->Flush();
  kv.PollTransfers();
  EXPECT_EQ(kv.tiers()->stats().disk_key_mismatches, 1);
  EXPECT_EQ(kv.MatchPrefix(a, kBaseModel).num_cached_tokens, 0);
}

// Thousands of random operations, with device <-> host copies that complete in random order
// (ManualBlockIo: a copy moves its bytes only when it completes) and spilling ahead; after
// each: ref counts equal the number of tables holding each block (plus one for a block whose
// spill is in flight, which no table holds), every computed block of every table holds its
// key's bytes (once a load into it is in), no block lives in two of device / host, and
// occupancy adds up. A forward pass starts with BeginForward, as the backend's does, and
// ManualBlockIo fails the test if it writes a block a spill is still reading.
TEST(TieredKvCache, RandomOperationsKeepTheInvariants) {
  constexpr int32_t kDevice = 12;
  ManualBlockIo io(kDevice, kBlockBytes);
  KvCache kv(kDevice, std::make_unique<TierManager>(
                          io, TierManager::Options{.host_slots = 6,
                                                   .disk = OpenDisk(FreshDir("tiered_random"), 10),
                                                   .spill_ahead_blocks = 2}));
  const TierManager& tiers = *kv.tiers();
  std::mt19937 rng(7);
  std::map<SeqId, std::vector<TokenId>> seqs;
  SeqId next = 1;
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  int64_t loaded_blocks = 0;
  for (int step = 0; step < 4000; ++step) {
    const int op = pick(10);
    if (op < 4 || seqs.empty()) {  // a new sequence: one of 4 prefixes, then its own tokens
      std::vector<TokenId> tokens = Iota(kBlockTokens * (1 + pick(3)), 1000 * pick(4));
      for (int i = pick(24); i > 0; --i) tokens.push_back(pick(50));
      PrefixHit hit = kv.MatchPrefix(std::span(tokens).first(tokens.size() - 1), kBaseModel);
      if (hit.num_disk_blocks() > 0) {
        kv.Prefetch(hit);
        tiers.disk()->Flush();
        kv.PollTransfers();
        hit = kv.MatchPrefix(std::span(tokens).first(tokens.size() - 1), kBaseModel);
        hit.DropFromFirstDiskBlock();
      }
      const int32_t num_new = static_cast<int32_t>(tokens.size()) - hit.num_cached_tokens;
      const int32_t before = tiers.num_loads_in_flight();
      if (kv.Grow(next, num_new, hit).has_value()) {
        loaded_blocks += static_cast<int64_t>(hit.lower.size());
        const std::vector<BlockHash> chain = ChainOf(tokens);
        const std::span<const BlockId> table = kv.block_table(next);
        io.BeginForward();
        for (size_t b = hit.blocks.size() + hit.lower.size(); b < chain.size(); ++b) {
          io.Fill(table[b], chain[b]);
        }
        kv.CommitComputed(next, tokens, kBaseModel);
        seqs[next] = tokens;
      } else {
        EXPECT_EQ(tiers.num_loads_in_flight(), before);
      }
      ++next;
    } else if (op < 7) {  // a running sequence decodes a few tokens
      auto it = std::next(seqs.begin(), pick(static_cast<int>(seqs.size())));
      std::vector<TokenId>& tokens = it->second;
      const int32_t n = 1 + pick(20);
      if (kv.Grow(it->first, n).has_value()) {
        const size_t old_full = tokens.size() / kBlockTokens;
        for (int i = 0; i < n; ++i) tokens.push_back(pick(50));
        const std::vector<BlockHash> chain = ChainOf(tokens);
        const std::span<const BlockId> table = kv.block_table(it->first);
        io.BeginForward();
        for (size_t b = old_full; b < chain.size(); ++b) io.Fill(table[b], chain[b]);
        kv.CommitComputed(it->first, tokens, kBaseModel);
      }
    } else {  // a sequence ends
      auto it = std::next(seqs.begin(), pick(static_cast<int>(seqs.size())));
      kv.Release(it->first);
      seqs.erase(it);
    }
    io.CompleteRandom(rng, 0.5);
    kv.PollTransfers();

    std::vector<int32_t> refs(kDevice, 0);
    for (const auto& [seq, tokens] : seqs) {
      const std::span<const BlockId> table = kv.block_table(seq);
      ASSERT_EQ(kv.num_tokens(seq), static_cast<int32_t>(tokens.size()));
      const std::vector<BlockHash> chain = ChainOf(tokens);
      for (size_t b = 0; b < table.size(); ++b) {
        ++refs[table[b]];
        if (b < chain.size() && !io.writing(table[b])) {
          ASSERT_TRUE(io.Holds(table[b], chain[b])) << "step " << step << " seq " << seq;
        }
      }
    }
    for (BlockId b : tiers.SpillingBlocksForTesting()) {
      ASSERT_EQ(refs[b], 0) << "block " << b << " in a table while its spill is in flight";
      ++refs[b];
    }
    for (BlockId b = 0; b < kDevice; ++b) ASSERT_EQ(kv.pool().ref_count(b), refs[b]) << step;
    for (const auto& [hash, block] : kv.pool().IndexForTesting()) {
      ASSERT_FALSE(tiers.host().Find(hash).has_value()) << "two homes at step " << step;
      if (!io.writing(block)) {
        ASSERT_TRUE(io.Holds(block, hash)) << "step " << step;
      }
    }
    const Occupancy occ = kv.occupancy();
    ASSERT_EQ(occ.used_blocks, static_cast<int32_t>(std::count_if(
                                   refs.begin(), refs.end(), [](int32_t r) { return r > 0; })));
    ASSERT_LE(tiers.host().num_used(), 6);
  }
  // The run really went through the tiers.
  const TierStats s = tiers.stats();
  EXPECT_GT(s.spills_device_host, 100);
  EXPECT_GT(s.spills_host_disk, 10);
  EXPECT_GT(loaded_blocks, 50);
  EXPECT_GT(s.loads_disk_host, 10);
  EXPECT_GT(s.copy_waits, 10);  // allocations that needed a block still being copied
  EXPECT_GT(s.spills_device_host - s.copy_waits, 50);  // and spills nobody waited for
}

}  // namespace
}  // namespace spillway::kvcache
