// Host launchers of the paged KV cache kernels (paged_attention.cu): the KV write and causal
// GQA attention over f16 blocks of kvcache::kBlockTokens tokens, for decode tokens and prefill
// chunks alike. Called by the CudaBackend (engine/cuda/) on the engine-loop thread; every
// pointer is device memory; each launcher enqueues on `stream` and returns at once.
//
// CPU twins (tests/gpu/kernels_test.cc compares them): WriteKv ~ engine/cpu/attention.h
// WriteKv, PagedAttention ~ engine/cpu/attention.h PagedAttention.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace spillway::kernels {

// cache_k[slots[t]] = f16(k[t]) and the same for v; rows of `width` = num_kv_heads * head_dim.
// A slot is block * kBlockTokens + position % kBlockTokens.
cudaError_t WriteKv(const float* k, const float* v, const int32_t* slots, int64_t num_tokens,
                    int64_t width, uint16_t* cache_k, uint16_t* cache_v, cudaStream_t stream);

// One work item: the query rows [token_begin, token_end) of one chunk, whose block table starts
// at block_tables[table_start]. Keys [0, positions[t]] are visible to token t.
struct AttentionItem {
  int32_t table_start;
  int32_t token_begin;
  int32_t token_end;
};

struct AttentionArgs {
  const float* q = nullptr;           // [num_tokens, num_heads * head_dim]
  float* out = nullptr;               // like q
  const uint16_t* cache_k = nullptr;  // f16 [num_blocks, kBlockTokens, num_kv_heads, head_dim]
  const uint16_t* cache_v = nullptr;
  const int32_t* positions = nullptr;     // [num_tokens]
  const int32_t* block_tables = nullptr;  // all chunks' tables, back to back
  const AttentionItem* items = nullptr;   // [num_items]
  int32_t num_items = 0;
  int32_t max_item_tokens = 0;  // the most tokens of any item (sizes shared memory)
  int32_t num_tokens = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // even, at most kMaxHeadDim
  // Split-K (flash-decoding): the keys of an item are cut into ranges of split_keys (a multiple
  // of 32); num_splits ranges are worked on by separate blocks and merged by a second kernel.
  int32_t num_splits = 1;
  int32_t split_keys = 0;
  // [num_tokens * num_heads * num_splits * (head_dim + 2)] f32 when num_splits > 1.
  float* partials = nullptr;
};

constexpr int kMaxHeadDim = 256;

// The most query rows (tokens x query heads of one KV head) one block may take for
// `head_dim`; items should hold at most max(1, this / group) tokens.
int MaxAttentionRows(int head_dim);

// out = softmax(q · Kᵀ / sqrt(head_dim)) · V per query head h over the keys of KV head
// h / (num_heads / num_kv_heads), causal by position, exact (online softmax in f32).
cudaError_t PagedAttention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace spillway::kernels
