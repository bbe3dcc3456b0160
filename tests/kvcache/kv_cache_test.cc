// BlockPool and KvCache on tiny pools: exact block ids, ref counts and free-list order after
// each operation (STYLE.md §9).
#include "kvcache/kv_cache.h"

#include <gtest/gtest.h>

#include "kvcache/block_pool.h"

namespace spillway::kvcache {
namespace {

std::vector<BlockId> Ids(std::span<const BlockId> s) { return {s.begin(), s.end()}; }

TEST(BlockPool, AllocatesInOrderAndReturnsFreedBlocksToTheBack) {
  BlockPool pool(4);
  EXPECT_EQ(pool.Allocate(), 0);
  EXPECT_EQ(pool.Allocate(), 1);
  EXPECT_EQ(pool.num_free(), 2);
  pool.Release(0);
  EXPECT_EQ(pool.ref_count(0), 0);
  EXPECT_EQ(pool.Allocate(), 2);
  EXPECT_EQ(pool.Allocate(), 3);
  EXPECT_EQ(pool.Allocate(), 0);  // freed block comes back last
  EXPECT_EQ(pool.Allocate(), std::nullopt);
}

TEST(BlockPool, SharedBlockIsFreedOnLastRelease) {
  BlockPool pool(2);
  const BlockId b = *pool.Allocate();
  pool.AddRef(b);
  EXPECT_EQ(pool.ref_count(b), 2);
  pool.Release(b);
  EXPECT_EQ(pool.num_free(), 1);
  pool.Release(b);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(KvCache, GrowAddsBlocksOnlyAtBlockBoundaries) {
  KvCache kv(8);
  auto first = kv.Grow(7, 20);  // 20 tokens -> 2 blocks
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(Ids(*first), (std::vector<BlockId>{0, 1}));
  auto none = kv.Grow(7, 12);  // 32 tokens still fit in 2 blocks
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  auto third = kv.Grow(7, 1);  // token 33 needs block 3
  EXPECT_EQ(Ids(*third), (std::vector<BlockId>{2}));
  EXPECT_EQ(Ids(kv.block_table(7)), (std::vector<BlockId>{0, 1, 2}));
  EXPECT_EQ(kv.num_tokens(7), 33);
  EXPECT_EQ(kv.occupancy().used_blocks, 3);
}

TEST(KvCache, NoRoomIsAValueAndChangesNothing) {
  KvCache kv(3);
  ASSERT_TRUE(kv.Grow(1, 32).has_value());
  EXPECT_FALSE(kv.Grow(2, 17).has_value());  // needs 2 blocks, 1 free
  EXPECT_TRUE(kv.block_table(2).empty());
  EXPECT_EQ(kv.num_free_blocks(), 1);
  EXPECT_FALSE(kv.Grow(1, 17).has_value());
  EXPECT_EQ(kv.num_tokens(1), 32);
  EXPECT_TRUE(kv.Grow(2, 16).has_value());
}

TEST(KvCache, ReleaseFreesEveryBlock) {
  KvCache kv(4);
  ASSERT_TRUE(kv.Grow(1, 40).has_value());
  kv.Release(1);
  EXPECT_EQ(kv.num_free_blocks(), 4);
  EXPECT_TRUE(kv.block_table(1).empty());
  kv.Release(1);  // unknown sequence: nothing happens
  EXPECT_EQ(kv.num_free_blocks(), 4);
}

}  // namespace
}  // namespace spillway::kvcache
