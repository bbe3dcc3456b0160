// KvCache::Reserve / Unreserve on a tiny pool (issue #7: a fine-tuning job's memory comes out of
// the KV pool): exact block ids, the free list, the prefix index and the occupancy after each
// operation (STYLE.md §9). A reservation takes free blocks first, then evicts cached blocks
// least recently used first, never a block a sequence uses; Grow then sees the smaller pool;
// Unreserve gives the blocks back.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "kvcache/block_pool.h"
#include "kvcache/kv_cache.h"
#include "kvcache/tier_manager.h"
#include "tests/kvcache/fake_block_io.h"
#include "tests/kvcache/tier_test_util.h"

namespace spillway::kvcache {
namespace {

std::vector<TokenId> Tokens(int32_t n, TokenId first) {
  std::vector<TokenId> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<BlockId> Ids(std::span<const BlockId> s) { return {s.begin(), s.end()}; }

// 6 blocks: seq 1 holds {0, 1} (cached: its two full blocks are committed), seq 2's blocks
// {2, 3} were committed then released (evictable, 3 released first: a table's last block
// goes first), {4, 5} are free.
class KvCacheReserveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<TokenId> a = Tokens(2 * kBlockTokens, 100);
    const std::vector<TokenId> b = Tokens(2 * kBlockTokens, 500);
    ASSERT_TRUE(kv_.Grow(1, 2 * kBlockTokens).has_value());
    kv_.CommitComputed(1, a, kBaseModel);
    ASSERT_TRUE(kv_.Grow(2, 2 * kBlockTokens).has_value());
    kv_.CommitComputed(2, b, kBaseModel);
    kv_.Release(2);
    ASSERT_EQ(Ids(kv_.block_table(1)), (std::vector<BlockId>{0, 1}));
    ASSERT_EQ(kv_.pool().FreeListForTesting(), (std::vector<BlockId>{4, 5}));
    ASSERT_EQ(kv_.pool().EvictionOrderForTesting(), (std::vector<BlockId>{3, 2}));
  }

  KvCache kv_{6};
};

TEST_F(KvCacheReserveTest, TakesFreeBlocksThenEvictsCachedOnesNeverUsedOnes) {
  // Only 4 blocks are free or evictable: refused, nothing changes.
  EXPECT_EQ(kv_.Reserve(5), std::nullopt);
  EXPECT_EQ(kv_.num_reserved_blocks(), 0);
  EXPECT_EQ(kv_.num_free_blocks(), 4);
  EXPECT_EQ(kv_.pool().num_cached(), 4);

  // Free 4 and 5 first, then the least recently released cached block, 3.
  std::optional<std::vector<BlockId>> got = kv_.Reserve(3);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (std::vector<BlockId>{4, 5, 3}));
  EXPECT_EQ(kv_.num_reserved_blocks(), 3);
  EXPECT_EQ(kv_.num_serving_blocks(), 3);
  EXPECT_EQ(kv_.num_free_blocks(), 1);  // block 2, still cached
  EXPECT_EQ(kv_.pool().EvictionOrderForTesting(), (std::vector<BlockId>{2}));
  EXPECT_FALSE(kv_.pool().is_cached(3));  // evicted: its prefix is forgotten
  EXPECT_TRUE(kv_.pool().is_cached(2));
  // Seq 1's blocks are untouched.
  EXPECT_EQ(Ids(kv_.block_table(1)), (std::vector<BlockId>{0, 1}));
  EXPECT_EQ(kv_.pool().ref_count(0), 1);
  EXPECT_EQ(kv_.pool().ref_count(1), 1);

  const Occupancy occ = kv_.occupancy();
  EXPECT_EQ(occ.used_blocks, 2);  // seq 1's only: reserved blocks are not "used"
  EXPECT_EQ(occ.reserved_blocks, 3);
  EXPECT_EQ(occ.cached_blocks, 3);  // 0, 1 (in use) and 2 (evictable)
  EXPECT_EQ(occ.total_blocks, 6);

  // The rest: block 2 is evicted too; then nothing is left, seq 1's blocks included.
  got = kv_.Reserve(1);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (std::vector<BlockId>{2}));
  EXPECT_EQ(kv_.Reserve(1), std::nullopt);
  EXPECT_EQ(kv_.num_reserved_blocks(), 4);
  EXPECT_EQ(kv_.pool().ref_count(0), 1);
}

TEST_F(KvCacheReserveTest, GrowSeesTheSmallerPoolUntilUnreserve) {
  std::optional<std::vector<BlockId>> held = kv_.Reserve(3);
  ASSERT_TRUE(held.has_value());
  // One block (2) is left for sequences: 2 blocks' worth of tokens do not fit, and on nullopt
  // nothing changes.
  EXPECT_EQ(kv_.Grow(7, 2 * kBlockTokens), std::nullopt);
  EXPECT_TRUE(kv_.block_table(7).empty());
  EXPECT_EQ(kv_.num_free_blocks(), 1);
  // Seq 1 can still grow by the one block.
  auto grown = kv_.Grow(1, kBlockTokens);
  ASSERT_TRUE(grown.has_value());
  EXPECT_EQ(Ids(*grown), (std::vector<BlockId>{2}));
  EXPECT_EQ(kv_.num_free_blocks(), 0);
  EXPECT_EQ(kv_.Grow(1, 1), std::nullopt);

  // Given back to the back of the free list, in the order given; Grow has them again.
  kv_.Unreserve(*held);
  EXPECT_EQ(kv_.num_reserved_blocks(), 0);
  EXPECT_EQ(kv_.num_serving_blocks(), 6);
  EXPECT_EQ(kv_.pool().FreeListForTesting(), (std::vector<BlockId>{4, 5, 3}));
  EXPECT_EQ(kv_.occupancy().used_blocks, 3);
  EXPECT_EQ(kv_.occupancy().reserved_blocks, 0);
  auto seven = kv_.Grow(7, 2 * kBlockTokens);
  ASSERT_TRUE(seven.has_value());
  EXPECT_EQ(Ids(*seven), (std::vector<BlockId>{4, 5}));
}

TEST_F(KvCacheReserveTest, PartialUnreserveAndZeroBlocks) {
  EXPECT_EQ(kv_.Reserve(0), std::vector<BlockId>{});
  std::optional<std::vector<BlockId>> held = kv_.Reserve(2);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(*held, (std::vector<BlockId>{4, 5}));
  kv_.Unreserve(std::span<const BlockId>(*held).first(1));
  EXPECT_EQ(kv_.num_reserved_blocks(), 1);
  EXPECT_EQ(kv_.pool().FreeListForTesting(), (std::vector<BlockId>{4}));
  EXPECT_EQ(kv_.pool().ref_count(5), 1);
}

TEST_F(KvCacheReserveTest, UnreserveOfABlockNotReservedIsABug) {
  EXPECT_DEATH(kv_.Unreserve(std::vector<BlockId>{0}), "");  // SPW_CHECK logs to stdout
}

TEST(KvCacheReserveTiered, EvictedCachedBlocksSpillToTheHostAndAreFoundThere) {
  // 4 device blocks, 4 host slots: a released 2-block prefix stays cached; a reservation of
  // all 4 blocks evicts it, spilling it to the host, where a later lookup finds it and Grow
  // loads it back once the blocks are given back.
  testing::FakeBlockIo io(4, 256);
  KvCache kv(4, std::make_unique<TierManager>(io, TierManager::Options{.host_slots = 4}));
  const std::vector<TokenId> a = testing::Iota(2 * kBlockTokens, 100);
  const std::vector<BlockHash> chain = testing::ChainOf(a);
  ASSERT_TRUE(kv.Grow(1, 2 * kBlockTokens).has_value());
  for (int b = 0; b < 2; ++b) io.Fill(kv.block_table(1)[b], chain[b]);
  kv.CommitComputed(1, a, kBaseModel);
  kv.Release(1);

  std::optional<std::vector<BlockId>> held = kv.Reserve(4);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->size(), 4u);
  EXPECT_EQ(kv.pool().num_cached(), 0);
  EXPECT_EQ(kv.tiers()->stats().spills_device_host, 2);
  PrefixHit hit = kv.MatchPrefix(a, kBaseModel);
  EXPECT_TRUE(hit.blocks.empty());
  ASSERT_EQ(hit.lower.size(), 2u);
  EXPECT_EQ(hit.lower[0].tier, Tier::kHost);
  EXPECT_EQ(kv.Grow(2, 1, hit), std::nullopt);  // no device block left for it

  kv.Unreserve(*held);
  hit = kv.MatchPrefix(a, kBaseModel);
  ASSERT_TRUE(kv.Grow(2, 1, hit).has_value());
  ASSERT_EQ(kv.block_table(2).size(), 3u);
  EXPECT_TRUE(io.Holds(kv.block_table(2)[0], chain[0]));
  EXPECT_TRUE(io.Holds(kv.block_table(2)[1], chain[1]));
}

}  // namespace
}  // namespace spillway::kvcache
