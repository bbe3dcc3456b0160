// The host-side attention plan of the CUDA backend (engine/cuda/attention_plan.h): KV slots
// through shuffled block tables, work items that tile every chunk exactly once, and the
// split-K choice (only when SMs would idle; ranges of at least 64 keys, multiples of 32,
// covering every key, at most 64). Pure CPU logic: runs everywhere the backend is built.
#include "engine/cuda/attention_plan.h"

#include "gtest/gtest.h"
#include "kvcache/ids.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::cuda {
namespace {

using testing::Layout;

TEST(AttentionPlanTest, SlotsFollowTheBlockTables) {
  Layout c;
  c.AddChunk(0, 20, {7, 2});  // positions 0..19: block 7 then block 2
  c.AddChunk(30, 1, {4, 9});  // position 30: block 9, row 14
  c.AddChunk(40, 1, {1, 3});  // position 40 lies past its 2-block table
  std::vector<int32_t> slots(c.tokens.size());
  EXPECT_EQ(KvSlots(c.View(), slots), 41);
  EXPECT_EQ(slots[0], 7 * 16);
  EXPECT_EQ(slots[15], 7 * 16 + 15);
  EXPECT_EQ(slots[16], 2 * 16);
  EXPECT_EQ(slots[19], 2 * 16 + 3);
  EXPECT_EQ(slots[20], 9 * 16 + 14);
  EXPECT_EQ(slots[21], -1);
}

TEST(AttentionPlanTest, ItemsTileEachChunkOnce) {
  Layout c;
  c.AddChunk(0, 77, {0, 1, 2, 3, 4});
  c.AddChunk(500, 1, std::vector<kvcache::BlockId>(32, 5));
  c.AddChunk(0, 33, {6, 7, 8});
  const AttentionPlan p = PlanAttention(c.View(), /*num_heads=*/32, /*num_kv_heads=*/8,
                                        /*max_rows=*/64, /*sm_count=*/132, /*max_keys=*/501);
  // Group 4: 16 tokens per item. 77 -> 5 items, 1 -> 1, 33 -> 3.
  ASSERT_EQ(p.num_items, 9);
  ASSERT_EQ(p.items.size(), 27u);
  EXPECT_EQ(p.max_item_tokens, 16);
  std::vector<int> covered(c.tokens.size(), 0);
  for (int32_t i = 0; i < p.num_items; ++i) {
    const int32_t table_start = p.items[3 * i], begin = p.items[3 * i + 1],
                  end = p.items[3 * i + 2];
    ASSERT_LT(begin, end);
    ASSERT_LE(end - begin, 16);
    int chunk = 0;
    while (c.chunk_starts[chunk + 1] <= begin) ++chunk;
    EXPECT_LE(end, c.chunk_starts[chunk + 1]) << "item " << i << " crosses a chunk";
    EXPECT_EQ(table_start, c.table_starts[chunk]);
    for (int32_t t = begin; t < end; ++t) ++covered[t];
  }
  for (int n : covered) EXPECT_EQ(n, 1);
}

TEST(AttentionPlanTest, SplitsOnlyWhenSmsWouldIdle) {
  Layout one;  // one decode token at position 8299 (Llama-3-8B heads: 8 blocks of work)
  one.AddChunk(8299, 1, std::vector<kvcache::BlockId>(519, 0));
  const AttentionPlan p = PlanAttention(one.View(), 32, 8, 64, 132, 8300);
  EXPECT_GT(p.num_splits, 1);
  EXPECT_LE(p.num_splits, 64);
  EXPECT_EQ(p.split_keys % 32, 0);
  EXPECT_GE(p.split_keys, 64);
  EXPECT_GE(int64_t{p.num_splits} * p.split_keys, 8300);      // every key in a range
  EXPECT_LT(int64_t{p.num_splits - 1} * p.split_keys, 8300);  // no empty last range
  EXPECT_LE(int64_t{p.num_splits} * 8, 2 * 132 + 8 * 2);      // about two blocks per SM

  Layout prefill;  // 2048 prompt tokens: 128 items x 8 KV heads fill the GPU already
  prefill.AddChunk(0, 2048, std::vector<kvcache::BlockId>(128, 0));
  const AttentionPlan q = PlanAttention(prefill.View(), 32, 8, 64, 132, 2048);
  EXPECT_EQ(q.num_splits, 1);
  EXPECT_EQ(q.split_keys, 0);

  Layout shortctx;  // few keys: never split below 64 per range
  shortctx.AddChunk(40, 1, {0, 1, 2});
  EXPECT_EQ(PlanAttention(shortctx.View(), 32, 8, 64, 132, 41).num_splits, 1);
}

TEST(AttentionPlanTest, LargeGroupsGetOneTokenPerItem) {
  Layout c;
  c.AddChunk(0, 5, {0});
  const AttentionPlan p = PlanAttention(c.View(), /*num_heads=*/64, /*num_kv_heads=*/1,
                                        /*max_rows=*/32, 132, 5);
  EXPECT_EQ(p.num_items, 5);
  EXPECT_EQ(p.max_item_tokens, 1);
}

}  // namespace
}  // namespace spillway::engine::cuda
