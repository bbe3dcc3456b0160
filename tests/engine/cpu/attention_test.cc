// PagedAttention against a plain reference that walks each sequence's block table in double
// precision (vLLM's reference attention), over mixed batches: prefill chunks that start past
// position 0, single decode tokens, scattered block ids, GQA groups, head sizes with and
// without the SIMD path.
#include "engine/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul.h"
#include "kvcache/ids.h"

namespace spillway::engine::cpu {
namespace {

using kvcache::BlockId;
using kvcache::kBlockTokens;

struct Chunk {
  int32_t first_position, num_tokens;
};

// The flat batch of `chunks`, each chunk's block table taken from `blocks`: disjoint tables
// (the next blocks of the list) or all from its start (chunks then read the same cache).
struct Batch {
  std::vector<int32_t> positions, chunk_starts{0}, first_positions, table_starts{0};
  std::vector<BlockId> tables;
  std::vector<TokenId> tokens;
  // Returns how many blocks of `blocks` the tables need.
  int Build(const std::vector<Chunk>& chunks, const std::vector<BlockId>& blocks, bool disjoint) {
    int next_block = 0, most = 0;
    for (const Chunk& c : chunks) {
      for (int32_t i = 0; i < c.num_tokens; ++i) positions.push_back(c.first_position + i);
      chunk_starts.push_back(chunk_starts.back() + c.num_tokens);
      first_positions.push_back(c.first_position);
      const int32_t count = (c.first_position + c.num_tokens + kBlockTokens - 1) / kBlockTokens;
      if (!disjoint) next_block = 0;
      for (int32_t b = 0; b < count; ++b) {
        tables.push_back(next_block < static_cast<int>(blocks.size()) ? blocks[next_block] : 0);
        ++next_block;
      }
      most = std::max(most, next_block);
      table_starts.push_back(static_cast<int32_t>(tables.size()));
    }
    tokens.assign(positions.size(), 0);
    return most;
  }
  BatchLayout layout() const {
    return BatchLayout{.tokens = tokens,
                       .positions = positions,
                       .chunk_starts = chunk_starts,
                       .first_positions = first_positions,
                       .block_table_starts = table_starts,
                       .block_tables = tables};
  }
};

// Block ids 0 .. n-1 in a random order.
std::vector<BlockId> ShuffledBlocks(int32_t n, std::mt19937& rng) {
  std::vector<BlockId> all(n);
  for (int32_t i = 0; i < n; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  return all;
}

void RunCase(int64_t num_heads, int64_t kv_heads, int64_t d, const std::vector<Chunk>& chunks) {
  std::mt19937 rng(static_cast<uint32_t>(num_heads * 131 + d));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int32_t num_blocks = 64;
  const int64_t kv_width = kv_heads * d, q_width = num_heads * d;
  std::vector<uint16_t> kc(int64_t{num_blocks} * kBlockTokens * kv_width);
  std::vector<uint16_t> vc(kc.size());
  // The earlier context of each chunk is already in the cache: fill the cache at random.
  for (auto& x : kc) x = F32ToF16(u(rng));
  for (auto& x : vc) x = F32ToF16(u(rng));

  // Scattered, disjoint block tables.
  const std::vector<BlockId> all = ShuffledBlocks(num_blocks, rng);
  Batch batch;
  ASSERT_LE(batch.Build(chunks, all, /*disjoint=*/true), num_blocks);
  const std::vector<int32_t>& positions = batch.positions;
  const std::vector<int32_t>& chunk_starts = batch.chunk_starts;
  const std::vector<int32_t>& table_starts = batch.table_starts;
  const std::vector<BlockId>& tables = batch.tables;
  const int64_t n = static_cast<int64_t>(positions.size());
  const BatchLayout layout = batch.layout();
  std::vector<float> q(n * q_width), k(n * kv_width), v(n * kv_width), out(n * q_width);
  for (auto& x : q) x = u(rng) * 3.0f;
  for (auto& x : k) x = u(rng);
  for (auto& x : v) x = u(rng);

  KvLayerView cache{.k = kc.data(), .v = vc.data(), .num_kv_heads = kv_heads, .head_dim = d};
  ThreadPool pool(2);
  WriteKv(layout, k.data(), v.data(), cache);
  std::vector<AttentionScratch> scratch;
  PagedAttention(layout, q.data(), num_heads, cache, out.data(), pool, scratch);

  // Reference: walk the block table, keys and values as f16-rounded doubles.
  for (size_t c = 0; c < chunks.size(); ++c) {
    const BlockId* table = tables.data() + table_starts[c];
    for (int32_t t = chunk_starts[c]; t < chunk_starts[c + 1]; ++t) {
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t g = h / (num_heads / kv_heads);
        const int64_t keys = positions[t] + 1;
        std::vector<double> scores(keys);
        double max_s = -1e300;
        for (int64_t j = 0; j < keys; ++j) {
          const int64_t slot = int64_t{table[j / kBlockTokens]} * kBlockTokens + j % kBlockTokens;
          double s = 0;
          for (int64_t i = 0; i < d; ++i) {
            s += double{q[t * q_width + h * d + i]} * F16ToF32(kc[slot * kv_width + g * d + i]);
          }
          scores[j] = s / std::sqrt(static_cast<double>(d));
          max_s = std::max(max_s, scores[j]);
        }
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - max_s));
        for (int64_t i = 0; i < d; ++i) {
          double o = 0;
          for (int64_t j = 0; j < keys; ++j) {
            const int64_t slot = int64_t{table[j / kBlockTokens]} * kBlockTokens + j % kBlockTokens;
            o += scores[j] / sum * F16ToF32(vc[slot * kv_width + g * d + i]);
          }
          // f32 accumulation over up to a few hundred terms of magnitude <= 1.
          ASSERT_NEAR(out[t * q_width + h * d + i], o, 2e-5)
              << "chunk " << c << " token " << t << " head " << h << " dim " << i;
        }
      }
    }
  }
}

TEST(PagedAttention, MatchesReferenceOnMixedBatch) {
  // A prefill chunk continuing at position 37, two decode tokens, a fresh prompt of 50.
  RunCase(9, 3, 64, {{37, 40}, {100, 1}, {15, 1}, {0, 50}});
}

TEST(PagedAttention, MatchesReferenceWithHeadSize128) {
  RunCase(8, 2, 128, {{0, 23}, {70, 1}, {9, 12}});  // Llama 3 / Qwen2 / Mistral head size
}

TEST(PagedAttention, MatchesReferenceWithoutSimdHeadSize) {
  RunCase(4, 2, 12, {{0, 33}, {20, 1}});  // head size 12: the scalar path
}

TEST(PagedAttention, MatchesReferenceMultiQueryAndFullHeads) {
  RunCase(8, 1, 32, {{5, 17}});  // the general AVX2 kernel
  RunCase(4, 4, 16, {{0, 1}, {63, 2}});
}

}  // namespace
}  // namespace spillway::engine::cpu

namespace spillway::engine::cpu {
namespace {

// A query gives the same bits whether it is the lone decode token of its chunk (keys read from
// the f16 blocks in place) or one of a prefill tile (keys converted to f32 first): batch
// invariance needs this, since the same token may be computed either way.
TEST(PagedAttention, DecodeTokenEqualsSameTokenInsidePrefillTile) {
  for (int64_t d : {64, 128}) {
    const int64_t heads = 6, kv_heads = 2, kv_width = kv_heads * d, q_width = heads * d;
    const int32_t len = 45;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<BlockId> table = {5, 1, 3};  // 48 slots
    std::vector<uint16_t> kc(8 * kBlockTokens * kv_width), vc(kc.size());
    std::vector<float> q(len * q_width), k(len * kv_width), v(len * kv_width);
    for (auto* vec : {&q, &k, &v}) {
      for (float& x : *vec) x = u(rng);
    }
    KvLayerView cache{.k = kc.data(), .v = vc.data(), .num_kv_heads = kv_heads, .head_dim = d};
    ThreadPool pool(2);
    std::vector<AttentionScratch> scratch;
    auto run = [&](int32_t first, int32_t n, std::vector<float>* out) {
      Batch batch;
      ASSERT_EQ(batch.Build({{first, n}}, table, /*disjoint=*/true), 3);
      const BatchLayout layout = batch.layout();
      out->assign(n * q_width, 0.0f);
      WriteKv(layout, k.data() + first * kv_width, v.data() + first * kv_width, cache);
      PagedAttention(layout, q.data() + first * q_width, heads, cache, out->data(), pool, scratch);
    };
    std::vector<float> whole, last;
    run(0, len, &whole);     // prefill tiles of up to 32 queries
    run(len - 1, 1, &last);  // the last token again, alone
    for (int64_t i = 0; i < q_width; ++i) {
      ASSERT_EQ(whole[(len - 1) * q_width + i], last[i]) << "head size " << d << " value " << i;
    }
  }
}

// The AVX-512 decode kernel (taken where MatMul uses AVX-512; it shares K/V rows across the
// heads of a GQA group) makes the AVX2 kernel's operations lane by lane: the same bits, for
// decode tokens at contexts of every length modulo 16 (and prefill tiles beside them), GQA
// groups of 3 query heads, head sizes 64 and 128.
TEST(PagedAttention, Avx512MatchesAvx2BitForBit) {
  if (!MatMulIsaSupported(MatMulIsa::kAvx512) || !MatMulIsaSupported(MatMulIsa::kAvx2)) {
    GTEST_SKIP() << "needs a CPU with AVX-512";
  }
  for (int64_t d : {64, 128}) {
    const int64_t heads = 9, kv_heads = 3, kv_width = kv_heads * d, q_width = heads * d;
    std::mt19937 rng(static_cast<uint32_t>(d));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int32_t num_blocks = 96;
    std::vector<uint16_t> kc(int64_t{num_blocks} * kBlockTokens * kv_width), vc(kc.size());
    for (auto& x : kc) x = F32ToF16(u(rng));
    for (auto& x : vc) x = F32ToF16(u(rng));
    // Decode tokens at positions 0..40 and 100..117 (every residue modulo 16), then prefill
    // chunks of 37 and 70 tokens.
    std::vector<Chunk> chunks;
    for (int32_t p = 0; p <= 40; ++p) chunks.push_back({p, 1});
    for (int32_t p = 100; p <= 117; ++p) chunks.push_back({p, 1});
    chunks.push_back({0, 37});
    chunks.push_back({21, 70});
    const std::vector<BlockId> all = ShuffledBlocks(num_blocks, rng);
    // Chunks share the random cache contents (attention only reads it here).
    Batch batch;
    ASSERT_LE(batch.Build(chunks, all, /*disjoint=*/false), num_blocks);
    const std::vector<int32_t>& positions = batch.positions;
    const int64_t n = static_cast<int64_t>(positions.size());
    const BatchLayout layout = batch.layout();
    std::vector<float> q(n * q_width);
    for (auto& x : q) x = u(rng) * 3.0f;
    KvLayerView cache{.k = kc.data(), .v = vc.data(), .num_kv_heads = kv_heads, .head_dim = d};
    ThreadPool pool(2);
    std::vector<AttentionScratch> scratch;
    std::vector<float> avx2(n * q_width, NAN), avx512(n * q_width, NAN);
    SetMatMulIsaForTesting(MatMulIsa::kAvx2);
    PagedAttention(layout, q.data(), heads, cache, avx2.data(), pool, scratch);
    SetMatMulIsaForTesting(MatMulIsa::kAvx512);
    PagedAttention(layout, q.data(), heads, cache, avx512.data(), pool, scratch);
    ResetMatMulIsaForTesting();
    for (int64_t t = 0; t < n; ++t) {
      ASSERT_EQ(std::memcmp(avx2.data() + t * q_width, avx512.data() + t * q_width,
                            q_width * sizeof(float)),
                0)
          << "head size " << d << " row " << t << " position " << positions[t];
    }
  }
}

}  // namespace
}  // namespace spillway::engine::cpu
