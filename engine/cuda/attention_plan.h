// The host-side plan of one forward pass's paged attention on the GPU, as plain data: each
// token's KV slot, the work items of kernels/paged_attention.h (query tiles of one chunk) and
// the split-K decision. Pure functions of the batch layout and the device's SM count, so they
// are tested on the CPU (tests/gpu/attention_plan_test.cc). Any thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backend.h"

namespace spillway::engine::cuda {

// slots[t] = the cache row of token t: table[pos / kBlockTokens] * kBlockTokens + pos %
// kBlockTokens through its chunk's block table, or -1 when the table does not reach pos.
// Returns the most keys any token sees (max position + 1; 0 for an empty batch).
// REQUIRES: slots.size() == layout.tokens.size().
int64_t KvSlots(const BatchLayout& layout, std::span<int32_t> slots);

struct AttentionPlan {
  std::vector<int32_t> items;  // (table_start, token_begin, token_end) per item
  int32_t num_items = 0;
  int32_t max_item_tokens = 0;
  int32_t num_splits = 1;  // key ranges per item (flash-decoding); 1 = no split
  int32_t split_keys = 0;  // keys per range (a multiple of 32) when num_splits > 1
};

// Items of at most max(1, max_rows / group) tokens, group = num_heads / num_kv_heads, never
// crossing a chunk. NOTE(cuda): split-K only when items x KV heads leave SMs idle (decode of
// few sequences): about two blocks per SM, ranges of at least 64 keys, at most 64 splits.
AttentionPlan PlanAttention(const BatchLayout& layout, int64_t num_heads, int64_t num_kv_heads,
                            int max_rows, int sm_count, int64_t max_keys);

}  // namespace spillway::engine::cuda
