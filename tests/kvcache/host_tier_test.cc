// HostTier on a tiny pool, exact state after each operation (STYLE.md §9): free list, eviction
// order, index and pins.
#include "kvcache/host_tier.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace spillway::kvcache {
namespace {

using Slots = std::vector<int32_t>;
using Index = std::vector<std::pair<BlockHash, int32_t>>;

BlockKey Key(BlockHash hash) {
  BlockKey key{.hash = hash, .parent = hash + 1000};
  key.tokens.fill(static_cast<TokenId>(hash));
  return key;
}

TEST(HostTier, SlotsMoveBetweenFreeReservedCachedAndPinned) {
  HostTier host(3, 64);
  EXPECT_EQ(host.FreeListForTesting(), (Slots{0, 1, 2}));
  ASSERT_EQ(host.TakeFree(), 0);
  ASSERT_EQ(host.TakeFree(), 1);
  EXPECT_EQ(host.num_used(), 2);
  EXPECT_EQ(host.NextVictim(), std::nullopt);  // reserved slots are not evictable

  ASSERT_TRUE(host.Insert(1, Key(7)));
  ASSERT_TRUE(host.Insert(0, Key(9)));
  EXPECT_EQ(host.EvictionOrderForTesting(), (Slots{1, 0}));
  EXPECT_EQ(host.IndexForTesting(), (Index{{9, 0}, {7, 1}}));
  EXPECT_EQ(host.Lookup(Key(7)), 1);
  BlockKey other = Key(7);
  other.tokens[3] = -1;  // same hash, other tokens: a collision is a miss
  EXPECT_EQ(host.Lookup(other), std::nullopt);
  EXPECT_EQ(host.Find(7), 1);

  host.Pin(1);
  EXPECT_EQ(host.EvictionOrderForTesting(), (Slots{0}));
  EXPECT_EQ(host.NextVictim(), 0);
  host.Pin(1);
  host.Unpin(1);
  EXPECT_EQ(host.pins(1), 1);
  host.Unpin(1);  // back at the end: most recently used
  EXPECT_EQ(host.EvictionOrderForTesting(), (Slots{0, 1}));

  host.Free(0);
  EXPECT_EQ(host.FreeListForTesting(), (Slots{2, 0}));
  EXPECT_EQ(host.IndexForTesting(), (Index{{7, 1}}));
  EXPECT_EQ(host.num_cached(), 1);
}

TEST(HostTier, InsertOfAnIndexedHashFreesTheSlot) {
  HostTier host(2, 64);
  ASSERT_TRUE(host.Insert(*host.TakeFree(), Key(5)));
  const int32_t slot = *host.TakeFree();
  EXPECT_FALSE(host.Insert(slot, Key(5)));
  EXPECT_EQ(host.FreeListForTesting(), (Slots{1}));
  EXPECT_EQ(host.IndexForTesting(), (Index{{5, 0}}));
}

TEST(HostTier, SlotsHaveTheirOwnBytes) {
  HostTier host(2, 16);
  host.bytes(0)[0] = std::byte{1};
  host.bytes(1)[0] = std::byte{2};
  EXPECT_EQ(host.bytes(0)[0], std::byte{1});
  EXPECT_EQ(host.bytes(1).size(), 16u);
  EXPECT_EQ(host.bytes(1).data() - host.bytes(0).data(), 16);
}

}  // namespace
}  // namespace spillway::kvcache
