// Prefix caching on a tiny pool, exact state after each operation (STYLE.md §9): block ids,
// ref counts, free list and eviction (LRU) order, and the hash index.
#include <gtest/gtest.h>

#include <numeric>
#include <utility>
#include <vector>

#include "kvcache/block_hash.h"
#include "kvcache/kv_cache.h"

namespace spillway::kvcache {
namespace {

using Ids = std::vector<BlockId>;

Ids ToIds(std::span<const BlockId> s) { return {s.begin(), s.end()}; }

// Tokens first, first + 1, ...
std::vector<TokenId> Iota(int32_t n, TokenId first = 100) {
  std::vector<TokenId> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<int32_t> RefCounts(const KvCache& kv) {
  std::vector<int32_t> out;
  for (BlockId b = 0; b < kv.pool().num_blocks(); ++b) out.push_back(kv.pool().ref_count(b));
  return out;
}

// The keys of the first `n` blocks of `tokens`, chained from the base model's root.
std::vector<BlockHash> ChainOf(const std::vector<TokenId>& tokens, int n, AdapterId a = 0) {
  std::vector<BlockHash> out;
  BlockHash parent = RootHash(a);
  for (int i = 0; i < n; ++i) {
    parent = HashBlock(parent, std::span(tokens).subspan(i * kBlockTokens, kBlockTokens));
    out.push_back(parent);
  }
  return out;
}

TEST(BlockHash, ChainsThroughEveryEarlierBlockAndTheAdapter) {
  const std::vector<TokenId> a = Iota(32);
  std::vector<TokenId> b = a;
  b[0] = 7;  // same second block, different first
  EXPECT_NE(ChainOf(a, 2)[1], ChainOf(b, 2)[1]);
  EXPECT_NE(ChainOf(a, 1, 0)[0], ChainOf(a, 1, 1)[0]);
  EXPECT_EQ(ChainOf(a, 2), ChainOf(a, 2));
}

TEST(PrefixCache, CommittedFullBlocksAreIndexedAndShared) {
  KvCache kv(8);
  const std::vector<TokenId> prompt = Iota(40);
  ASSERT_EQ(ToIds(*kv.Grow(1, 40)), (Ids{0, 1, 2}));
  // Nothing is found before the KV is computed.
  EXPECT_TRUE(kv.MatchPrefix(prompt, kBaseModel).blocks.empty());

  kv.CommitComputed(1, std::span(prompt).first(20), kBaseModel);  // one full block so far
  const std::vector<BlockHash> h = ChainOf(prompt, 2);
  EXPECT_EQ(kv.pool().IndexForTesting(), (std::vector<std::pair<BlockHash, BlockId>>{{h[0], 0}}));
  kv.CommitComputed(1, prompt, kBaseModel);
  EXPECT_EQ(kv.pool().IndexForTesting(),
            (std::vector<std::pair<BlockHash, BlockId>>{{h[0], 0}, {h[1], 1}}));

  PrefixHit hit = kv.MatchPrefix(std::span(prompt).first(39), kBaseModel);
  EXPECT_EQ(hit.blocks, (Ids{0, 1}));
  EXPECT_EQ(hit.num_cached_tokens, 32);
  EXPECT_EQ(RefCounts(kv), (std::vector<int32_t>{1, 1, 1, 0, 0, 0, 0, 0}));  // lookups pin nothing

  // A second sequence takes blocks 0 and 1 and one new block for its 8 remaining tokens.
  ASSERT_EQ(ToIds(*kv.Grow(2, 8, hit)), (Ids{3}));
  EXPECT_EQ(ToIds(kv.block_table(2)), (Ids{0, 1, 3}));
  EXPECT_EQ(kv.num_tokens(2), 40);
  EXPECT_EQ(RefCounts(kv), (std::vector<int32_t>{2, 2, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(kv.occupancy().used_blocks, 4);
  EXPECT_EQ(kv.occupancy().cached_blocks, 2);

  // A different first token, or another adapter, matches nothing.
  std::vector<TokenId> other = prompt;
  other[3] = 5;
  EXPECT_TRUE(kv.MatchPrefix(other, kBaseModel).blocks.empty());
  EXPECT_TRUE(kv.MatchPrefix(prompt, 1).blocks.empty());
  // A change in the second block keeps the first.
  other = prompt;
  other[20] = 5;
  EXPECT_EQ(kv.MatchPrefix(other, kBaseModel).blocks, (Ids{0}));
}

TEST(PrefixCache, ReleasedCachedBlocksWaitInLruOrderTailFirst) {
  KvCache kv(8);
  const std::vector<TokenId> prompt = Iota(40);
  ASSERT_TRUE(kv.Grow(1, 40).has_value());
  kv.CommitComputed(1, prompt, kBaseModel);
  ASSERT_TRUE(kv.Grow(2, 8, kv.MatchPrefix(std::span(prompt).first(39), kBaseModel)));

  kv.Release(1);  // block 2 (uncached) is free again; 0 and 1 still used by seq 2
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{4, 5, 6, 7, 2}));
  EXPECT_TRUE(kv.pool().EvictionOrderForTesting().empty());
  EXPECT_EQ(RefCounts(kv), (std::vector<int32_t>{1, 1, 0, 1, 0, 0, 0, 0}));

  kv.Release(2);  // released last block first: 3 to the free list, then 1, then 0 to the LRU
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{4, 5, 6, 7, 2, 3}));
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));
  EXPECT_EQ(kv.num_free_blocks(), 8);
  EXPECT_EQ(kv.occupancy().used_blocks, 0);
  EXPECT_EQ(kv.occupancy().cached_blocks, 2);

  // Reuse revives the blocks: they leave the LRU list.
  PrefixHit hit = kv.MatchPrefix(prompt, kBaseModel);
  EXPECT_EQ(hit.blocks, (Ids{0, 1}));
  ASSERT_EQ(ToIds(*kv.Grow(3, 1, hit)), (Ids{4}));
  EXPECT_TRUE(kv.pool().EvictionOrderForTesting().empty());
  EXPECT_EQ(RefCounts(kv), (std::vector<int32_t>{1, 1, 0, 0, 1, 0, 0, 0}));
  kv.Release(3);
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{5, 6, 7, 2, 3, 4}));
}

TEST(PrefixCache, EvictsLeastRecentlyUsedOnlyWhenNoFreeBlockIsLeft) {
  KvCache kv(8);
  const std::vector<TokenId> prompt = Iota(48);
  ASSERT_TRUE(kv.Grow(1, 48).has_value());
  kv.CommitComputed(1, prompt, kBaseModel);
  kv.Release(1);  // blocks 2, 1, 0 evictable in that order
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{2, 1, 0}));
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{3, 4, 5, 6, 7}));

  // Five free blocks are used before any cached one.
  ASSERT_EQ(ToIds(*kv.Grow(2, 5 * kBlockTokens)), (Ids{3, 4, 5, 6, 7}));
  EXPECT_EQ(kv.occupancy().cached_blocks, 3);
  // The sixth evicts block 2, the prefix's last block.
  ASSERT_EQ(ToIds(*kv.Grow(2, 1)), (Ids{2}));
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));
  const std::vector<BlockHash> h = ChainOf(prompt, 3);
  EXPECT_EQ(kv.pool().IndexForTesting(),
            (std::vector<std::pair<BlockHash, BlockId>>{{h[0], 0}, {h[1], 1}}));
  EXPECT_EQ(kv.MatchPrefix(prompt, kBaseModel).blocks, (Ids{0, 1}));

  // Taking a hit block that is evictable leaves one block fewer to allocate: a hit of {0} and
  // two new blocks needs 1 (block 0 itself) + 2 of the 2 allocatable blocks -> no room.
  const PrefixHit hit{.blocks = {0}, .num_cached_tokens = kBlockTokens};
  EXPECT_FALSE(kv.Grow(3, 17, hit).has_value());
  EXPECT_TRUE(kv.block_table(3).empty());
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{1, 0}));
  // One new block fits: block 1 is evicted for it.
  ASSERT_EQ(ToIds(*kv.Grow(3, 16, hit)), (Ids{1}));
  EXPECT_EQ(ToIds(kv.block_table(3)), (Ids{0, 1}));
  EXPECT_EQ(kv.pool().IndexForTesting(), (std::vector<std::pair<BlockHash, BlockId>>{{h[0], 0}}));
  EXPECT_EQ(kv.num_free_blocks(), 0);
  EXPECT_FALSE(kv.Grow(4, 1).has_value());
}

TEST(PrefixCache, DuplicateBlocksStayUnindexedAndAreFreedNotCached) {
  KvCache kv(8);
  const std::vector<TokenId> prompt = Iota(16);
  ASSERT_TRUE(kv.Grow(1, 16).has_value());  // block 0
  ASSERT_TRUE(kv.Grow(2, 16).has_value());  // block 1, same tokens, computed in the same step
  kv.CommitComputed(1, prompt, kBaseModel);
  kv.CommitComputed(2, prompt, kBaseModel);
  EXPECT_EQ(kv.pool().IndexForTesting(),
            (std::vector<std::pair<BlockHash, BlockId>>{{ChainOf(prompt, 1)[0], 0}}));
  EXPECT_FALSE(kv.pool().is_cached(1));
  kv.Release(2);
  EXPECT_EQ(kv.pool().FreeListForTesting(), (Ids{2, 3, 4, 5, 6, 7, 1}));
  kv.Release(1);
  EXPECT_EQ(kv.pool().EvictionOrderForTesting(), (Ids{0}));
}

TEST(PrefixCache, CommitContinuesTheChainAfterAHit) {
  KvCache kv(8);
  const std::vector<TokenId> tokens = Iota(64);
  ASSERT_TRUE(kv.Grow(1, 32).has_value());
  kv.CommitComputed(1, std::span(tokens).first(32), kBaseModel);
  kv.Release(1);
  PrefixHit hit = kv.MatchPrefix(tokens, kBaseModel);
  ASSERT_EQ(hit.blocks, (Ids{0, 1}));
  ASSERT_TRUE(kv.Grow(2, 32, hit).has_value());
  kv.CommitComputed(2, tokens, kBaseModel);
  const std::vector<BlockHash> h = ChainOf(tokens, 4);
  EXPECT_EQ(kv.pool().IndexForTesting(), (std::vector<std::pair<BlockHash, BlockId>>{
                                             {h[0], 0}, {h[1], 1}, {h[2], 2}, {h[3], 3}}));
  EXPECT_EQ(kv.MatchPrefix(tokens, kBaseModel).num_cached_tokens, 64);
}

}  // namespace
}  // namespace spillway::kvcache
