#include "engine/cuda/attention_plan.h"

#include <algorithm>

#include "common/check.h"
#include "kvcache/ids.h"

namespace spillway::engine::cuda {

int64_t KvSlots(const BatchLayout& layout, std::span<int32_t> slots) {
  SPW_CHECK(slots.size() == layout.tokens.size());
  int64_t max_keys = 0;
  const int64_t num_chunks = static_cast<int64_t>(layout.first_positions.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    const kvcache::BlockId* table = layout.block_tables.data() + layout.block_table_starts[c];
    const int32_t table_size = layout.block_table_starts[c + 1] - layout.block_table_starts[c];
    for (int32_t t = layout.chunk_starts[c]; t < layout.chunk_starts[c + 1]; ++t) {
      const int32_t pos = layout.positions[t];
      slots[t] = pos / kvcache::kBlockTokens < table_size
                     ? table[pos / kvcache::kBlockTokens] * kvcache::kBlockTokens +
                           pos % kvcache::kBlockTokens
                     : -1;
      max_keys = std::max<int64_t>(max_keys, pos + 1);
    }
  }
  return max_keys;
}

AttentionPlan PlanAttention(const BatchLayout& layout, int64_t num_heads, int64_t num_kv_heads,
                            int max_rows, int sm_count, int64_t max_keys) {
  SPW_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0);
  AttentionPlan p;
  const int64_t group = num_heads / num_kv_heads;
  const int32_t tile = static_cast<int32_t>(std::max<int64_t>(1, max_rows / group));
  const int64_t num_chunks = static_cast<int64_t>(layout.first_positions.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    for (int32_t b = layout.chunk_starts[c]; b < layout.chunk_starts[c + 1]; b += tile) {
      const int32_t e = std::min(b + tile, layout.chunk_starts[c + 1]);
      p.items.insert(p.items.end(), {layout.block_table_starts[c], b, e});
      p.max_item_tokens = std::max(p.max_item_tokens, e - b);
    }
  }
  p.num_items = static_cast<int32_t>(p.items.size() / 3);
  const int64_t blocks = int64_t{p.num_items} * num_kv_heads;
  int64_t splits = 1;
  if (blocks > 0 && blocks < 2 * int64_t{sm_count} && max_keys > 64) {
    splits = std::min<int64_t>(
        {(2 * int64_t{sm_count} + blocks - 1) / blocks, (max_keys + 63) / 64, 64});
  }
  if (splits > 1) {
    p.split_keys = static_cast<int32_t>(((max_keys + splits - 1) / splits + 31) / 32 * 32);
    splits = (max_keys + p.split_keys - 1) / p.split_keys;
  }
  p.num_splits = static_cast<int32_t>(splits);
  if (p.num_splits == 1) p.split_keys = 0;
  return p;
}

}  // namespace spillway::engine::cuda
