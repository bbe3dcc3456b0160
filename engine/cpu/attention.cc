#include "engine/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "engine/cpu/fp16.h"
#include "kvcache/ids.h"

namespace spillway::engine::cpu {
namespace {

using kvcache::kBlockTokens;

// NOTE(lead): query tiles of this many tokens make prefill chunks split into enough work
// items for every thread; each item converts its keys to f32 once and reuses them for all
// queries and all query heads of its KV head.
constexpr int64_t kQueryTile = 32;

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

__attribute__((target("avx2,fma,f16c"))) void F16ToF32Avx2(const uint16_t* src, float* dst,
                                                           int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

__attribute__((target("avx2,fma,f16c"))) void F32ToF16Avx2(const float* src, uint16_t* dst,
                                                           int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

// exp(x) for x <= 0 (softmax after max subtraction), ~1 ulp: exp(x) = 2^k * p(r).
__attribute__((target("avx2,fma"))) __m256 Exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Softmax-weighted sum for one query over keys [0, n): the AVX2 path.
// REQUIRES: d % 8 == 0.
__attribute__((target("avx2,fma"))) void AttendOneAvx2(const float* q, const float* keys,
                                                      const float* values, int64_t n,
                                                      int64_t d, float scale, float* scores,
                                                      float* out) {
  float max_score = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = keys + j * d;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < d; i += 8) {
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kj + i), acc);
    }
    scores[j] = HorizontalSum(acc) * scale;
    max_score = std::max(max_score, scores[j]);
  }
  const __m256 vmax = _mm256_set1_ps(max_score);
  __m256 vsum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = Exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmax));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = HorizontalSum(vsum);
  for (; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < d; i += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t jj = 0; jj < n; ++jj) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(scores[jj]), _mm256_loadu_ps(values + jj * d + i), acc);
    }
    _mm256_storeu_ps(out + i, _mm256_mul_ps(acc, _mm256_set1_ps(inv)));
  }
}

void AttendOneScalar(const float* q, const float* keys, const float* values, int64_t n,
                     int64_t d, float scale, float* scores, float* out) {
  float max_score = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    float s = 0.0f;
    for (int64_t i = 0; i < d; ++i) s += q[i] * keys[j * d + i];
    scores[j] = s * scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  for (int64_t i = 0; i < d; ++i) out[i] = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float w = scores[j] / sum;
    for (int64_t i = 0; i < d; ++i) out[i] += w * values[j * d + i];
  }
}

struct ThreadScratch {
  std::vector<float> keys, values, scores;
};

}  // namespace

void F16ToF32Bulk(const uint16_t* src, float* dst, int64_t n) {
  if (HasAvx2()) return F16ToF32Avx2(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

void F32ToF16Bulk(const float* src, uint16_t* dst, int64_t n) {
  if (HasAvx2()) return F32ToF16Avx2(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

void WriteKv(const BatchLayout& layout, const float* k, const float* v, KvLayerView cache) {
  const int64_t width = cache.num_kv_heads * cache.head_dim;
  const int64_t num_chunks = static_cast<int64_t>(layout.first_positions.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    const kvcache::BlockId* table = layout.block_tables.data() + layout.block_table_starts[c];
    for (int32_t t = layout.chunk_starts[c]; t < layout.chunk_starts[c + 1]; ++t) {
      const int32_t pos = layout.positions[t];
      const int64_t slot = int64_t{table[pos / kBlockTokens]} * kBlockTokens + pos % kBlockTokens;
      F32ToF16Bulk(k + t * width, cache.k + slot * width, width);
      F32ToF16Bulk(v + t * width, cache.v + slot * width, width);
    }
  }
}

void PagedAttention(const BatchLayout& layout, const float* q, int64_t num_heads,
                    KvLayerView cache, float* out, ThreadPool& pool) {
  const int64_t d = cache.head_dim;
  const int64_t kv_heads = cache.num_kv_heads;
  const int64_t group = num_heads / kv_heads;
  const int64_t kv_width = kv_heads * d;
  const int64_t q_width = num_heads * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool avx2 = HasAvx2() && d % 8 == 0;

  // Work items: (chunk, kv head, query tile).
  struct Item {
    int32_t chunk;
    int32_t kv_head;
    int32_t begin, end;  // batch rows
  };
  std::vector<Item> items;
  const int64_t num_chunks = static_cast<int64_t>(layout.first_positions.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    for (int32_t b = layout.chunk_starts[c]; b < layout.chunk_starts[c + 1]; b += kQueryTile) {
      const int32_t e = std::min<int32_t>(b + kQueryTile, layout.chunk_starts[c + 1]);
      for (int64_t h = 0; h < kv_heads; ++h) {
        items.push_back({static_cast<int32_t>(c), static_cast<int32_t>(h), b, e});
      }
    }
  }
  static thread_local ThreadScratch scratch;
  pool.ParallelFor(static_cast<int64_t>(items.size()), 1,
                   [&](int, int64_t begin, int64_t end) {
    ThreadScratch& s = scratch;
    for (int64_t it = begin; it < end; ++it) {
      const Item& item = items[it];
      const kvcache::BlockId* table =
          layout.block_tables.data() + layout.block_table_starts[item.chunk];
      const int64_t num_keys = layout.positions[item.end - 1] + 1;
      s.keys.resize(num_keys * d);
      s.values.resize(num_keys * d);
      s.scores.resize(num_keys);
      for (int64_t j = 0; j < num_keys; j += kBlockTokens) {
        const int64_t count = std::min<int64_t>(kBlockTokens, num_keys - j);
        const int64_t block = table[j / kBlockTokens];
        for (int64_t r = 0; r < count; ++r) {
          const int64_t src = (block * kBlockTokens + r) * kv_width + item.kv_head * d;
          F16ToF32Bulk(cache.k + src, s.keys.data() + (j + r) * d, d);
          F16ToF32Bulk(cache.v + src, s.values.data() + (j + r) * d, d);
        }
      }
      for (int32_t t = item.begin; t < item.end; ++t) {
        const int64_t n = layout.positions[t] + 1;
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = item.kv_head * group + g;
          const float* qh = q + t * q_width + h * d;
          float* oh = out + t * q_width + h * d;
          if (avx2) {
            AttendOneAvx2(qh, s.keys.data(), s.values.data(), n, d, scale, s.scores.data(), oh);
          } else {
            AttendOneScalar(qh, s.keys.data(), s.values.data(), n, d, scale, s.scores.data(), oh);
          }
        }
      }
    }
  });
}

}  // namespace spillway::engine::cpu
