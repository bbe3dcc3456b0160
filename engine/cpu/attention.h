// Paged causal GQA attention on the CPU: the twin of kernels/paged_attention (DESIGN.md: every
// CUDA kernel has a CPU twin). K and V live in f16 blocks of kvcache::kBlockTokens tokens.
// Called by the CPU backend on the engine-loop thread; parallel inside through the ThreadPool.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/thread_pool.h"

namespace spillway::engine::cpu {

// One layer's cache: K and V of [num_blocks, kBlockTokens, num_kv_heads, head_dim] f16.
struct KvLayerView {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Writes k and v ([num_tokens, num_kv_heads * head_dim] f32) into `cache` at each token's
// position, through its chunk's block table.
void WriteKv(const BatchLayout& layout, const float* k, const float* v, KvLayerView cache);

// Per-thread working memory of PagedAttention (keys and values of one KV head converted to
// f32, and scores), kept by the caller so that steps after the first allocate nothing.
struct AttentionScratch {
  std::vector<float> keys, values, scores;
};

// out[t, h] = softmax(q[t, h] · K[0..pos(t)]ᵀ / sqrt(head_dim)) · V[0..pos(t)], with q head h
// reading KV head h / (num_heads / num_kv_heads).
//   q, out: [num_tokens, num_heads * head_dim] f32
// `scratch` is resized to one entry per pool thread.
void PagedAttention(const BatchLayout& layout, const float* q, int64_t num_heads, KvLayerView cache,
                    float* out, ThreadPool& pool, std::vector<AttentionScratch>& scratch);

// F16 <-> F32 of `n` values, with F16C when the CPU has it (runtime dispatch).
void F16ToF32Bulk(const uint16_t* src, float* dst, int64_t n);
void F32ToF16Bulk(const float* src, uint16_t* dst, int64_t n);

}  // namespace spillway::engine::cpu
