#include "engine/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/vec_math.h"
#include "kvcache/ids.h"

namespace spillway::engine::cpu {
namespace {

using kvcache::kBlockTokens;

// The features of the AVX-512 attention kernel (a subset of what MatMul's AVX-512 set needs).
#define SPW_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))

// NOTE(lead): query tiles of this many tokens make prefill chunks split into enough work
// items for every thread; each item converts its keys to f32 once and reuses them for all
// queries and all query heads of its KV head.
constexpr int64_t kQueryTile = 32;

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

// scores[j] = exp(scores[j] - max_score) for j < n; returns their sum. One order of operations
// for every attention kernel, so that they agree bit for bit.
__attribute__((target("avx2,fma"))) float ExpInPlace(float* scores, int64_t n, float max_score) {
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
  return sum;
}

// Softmax-weighted sum for one query over keys [0, n): the AVX2 path.
// REQUIRES: d % 8 == 0.
__attribute__((target("avx2,fma"))) void AttendOneAvx2(const float* q, const float* keys,
                                                       const float* values, int64_t n, int64_t d,
                                                       float scale, float* scores, float* out) {
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
  const float sum = ExpInPlace(scores, n, max_score);
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < d; i += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t jj = 0; jj < n; ++jj) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(scores[jj]), _mm256_loadu_ps(values + jj * d + i), acc);
    }
    _mm256_storeu_ps(out + i, _mm256_mul_ps(acc, _mm256_set1_ps(inv)));
  }
}

// The sums of each of a[0..7], as one vector: lane k = a[k][0] + ... + a[k][7].
__attribute__((target("avx2,fma"))) inline __m256 SumEach(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
  const __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]);
  const __m256 t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);  // [a0..a3 low halves | a0..a3 high halves]
  const __m256 u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// AttendOneAvx2 for a head size known at compile time: q and the output stay in registers,
// eight keys are scored at once (eight independent FMA chains instead of one), and the
// weighted sum of values runs keys-outer so each of the D/8 accumulators is its own chain.
// Where AttendOneAvx2Fixed reads keys and values: f32 rows already converted (prefill tiles,
// which reuse them for many queries) or the f16 cache blocks in place (decode, where converting
// first would cost more than attending). f16 -> f32 is exact, so both give the same bits.
template <int D>
struct F32Rows {
  const float* keys;
  const float* values;
  __attribute__((target("avx2,fma,f16c"))) __m256 Key(int64_t j, int c) const {
    return _mm256_loadu_ps(keys + j * D + 8 * c);
  }
  __attribute__((target("avx2,fma,f16c"))) __m256 Value(int64_t j, int c) const {
    return _mm256_loadu_ps(values + j * D + 8 * c);
  }
};

template <int D>
struct F16Blocks {
  const uint16_t* k;  // cache base of this layer
  const uint16_t* v;
  const kvcache::BlockId* table;
  int64_t kv_width;     // num_kv_heads * D
  int64_t head_offset;  // kv_head * D
  const uint16_t* Row(const uint16_t* base, int64_t j) const {
    return base + (int64_t{table[j / kBlockTokens]} * kBlockTokens + j % kBlockTokens) * kv_width +
           head_offset;
  }
  __attribute__((target("avx2,fma,f16c"))) __m256 Key(int64_t j, int c) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(Row(k, j) + 8 * c)));
  }
  __attribute__((target("avx2,fma,f16c"))) __m256 Value(int64_t j, int c) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(Row(v, j) + 8 * c)));
  }
  SPW_AVX512 __m512 KeyPair(int64_t j0, int64_t j1, int c) const {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(Row(k, j0) + 8 * c));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(Row(k, j1) + 8 * c));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
  }
  SPW_AVX512 __m512 Value16(int64_t j, int c) const {
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Row(v, j) + 16 * c)));
  }
};

// The scores (dot products times the scale) of keys j .. j + 7, and of key j alone: the AVX2
// kernel's order of operations, which the AVX-512 kernel reuses for its last keys.
template <int D, typename Source>
__attribute__((target("avx2,fma,f16c"))) inline __m256 ScoreEight(const __m256* qv,
                                                                  const Source& src, int64_t j,
                                                                  __m256 vscale) {
  __m256 acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
  for (int c = 0; c < D / 8; ++c) {
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(qv[c], src.Key(j + k, c), acc[k]);
  }
  return _mm256_mul_ps(SumEach(acc), vscale);
}

template <int D, typename Source>
__attribute__((target("avx2,fma,f16c"))) inline float ScoreOne(const __m256* qv, const Source& src,
                                                               int64_t j, float scale) {
  __m256 acc = _mm256_setzero_ps();
  for (int c = 0; c < D / 8; ++c) acc = _mm256_fmadd_ps(qv[c], src.Key(j, c), acc);
  return HorizontalSum(acc) * scale;
}

template <int D, typename Source>
__attribute__((target("avx2,fma,f16c"))) void AttendOneAvx2Fixed(const float* q, const Source& src,
                                                                 int64_t n, float scale,
                                                                 float* scores, float* out) {
  constexpr int kChunks = D / 8;
  __m256 qv[kChunks];
  for (int c = 0; c < kChunks; ++c) qv[c] = _mm256_loadu_ps(q + 8 * c);
  const __m256 vscale = _mm256_set1_ps(scale);
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 s = ScoreEight<D>(qv, src, j, vscale);
    _mm256_storeu_ps(scores + j, s);
    vmax = _mm256_max_ps(vmax, s);
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  float max_score = _mm_cvtss_f32(m);
  for (; j < n; ++j) {
    scores[j] = ScoreOne<D>(qv, src, j, scale);
    max_score = std::max(max_score, scores[j]);
  }
  const float sum = ExpInPlace(scores, n, max_score);
  __m256 acc[kChunks];
  for (int c = 0; c < kChunks; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t jj = 0; jj < n; ++jj) {
    const __m256 w = _mm256_set1_ps(scores[jj]);
    for (int c = 0; c < kChunks; ++c) {
      acc[c] = _mm256_fmadd_ps(w, src.Value(jj, c), acc[c]);
    }
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (int c = 0; c < kChunks; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], inv));
}

// _mm256_hadd_ps on each 256-bit half of x and y (the same additions, so the same bits).
SPW_AVX512 inline __m512 Hadd512(__m512 x, __m512 y) {
  return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
}

// NOTE(kernels): the AVX-512 decode kernel (tokens alone in their work item, keys read from
// the f16 blocks): AttendOneAvx2Fixed's operations lane by lane, bit for bit, so results do not
// change with the instruction set and batch invariance holds whichever path a query takes.
// Its gain on Zen 4 (which runs a zmm FMA as two halves) comes from sharing: the H query heads
// of a GQA group use each key and value row loaded and converted once. Scores: each zmm holds
// keys j + m and j + m + 8 (8 lanes each), so SumEach becomes the same hadd tree on both 256-bit
// halves at once, and a two-source permute puts the 16 sums in key order; the last 8-key block
// and the last < 8 keys run AVX2's code. Values: one zmm covers 16 dimensions, lane by lane the
// AVX2 FMA chain over keys. Prefill tiles keep the AVX2 kernel: measured, a zmm version without
// the sharing was 2-4% slower there.
// ScoresAvx512Heads: scores[h][j] = exp(q[h]·K[j] · scale - max), sums[h] their sum.
template <int D, int H, typename Source>
SPW_AVX512 void ScoresAvx512Heads(const float* const* q, const Source& src, int64_t n, float scale,
                                  float* const* scores, float* sums) {
  constexpr int kChunks = D / 8;
  __m512 qv2[H][kChunks];  // q's chunk c in both halves
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < kChunks; ++c) {
      qv2[h][c] = _mm512_broadcast_f32x8(_mm256_loadu_ps(q[h] + 8 * c));
    }
  }
  const __m512 vscale16 = _mm512_set1_ps(scale);
  const __m512i lo_idx =
      _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi_idx =
      _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  __m512 vmax16[H];
  for (int h = 0; h < H; ++h) vmax16[h] = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 acc[H][8];
    for (int h = 0; h < H; ++h) {
      for (int m = 0; m < 8; ++m) acc[h][m] = _mm512_setzero_ps();
    }
    // NOTE(kernels): each pair of key rows is loaded and converted once for the H heads.
    for (int c = 0; c < kChunks; ++c) {
      for (int m = 0; m < 8; ++m) {
        const __m512 k = src.KeyPair(j + m, j + m + 8, c);
        for (int h = 0; h < H; ++h) acc[h][m] = _mm512_fmadd_ps(qv2[h][c], k, acc[h][m]);
      }
    }
    for (int h = 0; h < H; ++h) {
      const __m512 t0 = Hadd512(acc[h][0], acc[h][1]);
      const __m512 t1 = Hadd512(acc[h][2], acc[h][3]);
      const __m512 t2 = Hadd512(acc[h][4], acc[h][5]);
      const __m512 t3 = Hadd512(acc[h][6], acc[h][7]);
      const __m512 u0 = Hadd512(t0, t1);
      const __m512 u1 = Hadd512(t2, t3);
      const __m512 sums16 = _mm512_add_ps(_mm512_permutex2var_ps(u0, lo_idx, u1),
                                          _mm512_permutex2var_ps(u0, hi_idx, u1));
      const __m512 sc = _mm512_mul_ps(sums16, vscale16);
      _mm512_storeu_ps(scores[h] + j, sc);
      vmax16[h] = _mm512_max_ps(vmax16[h], sc);
    }
  }
  for (int h = 0; h < H; ++h) {
    float max_score = _mm512_reduce_max_ps(vmax16[h]);
    __m256 qv[kChunks];
    for (int c = 0; c < kChunks; ++c) qv[c] = _mm512_castps512_ps256(qv2[h][c]);
    int64_t jh = j;
    if (jh + 8 <= n) {
      _mm256_storeu_ps(scores[h] + jh, ScoreEight<D>(qv, src, jh, _mm256_set1_ps(scale)));
      for (int k = 0; k < 8; ++k) max_score = std::max(max_score, scores[h][jh + k]);
      jh += 8;
    }
    for (; jh < n; ++jh) {
      scores[h][jh] = ScoreOne<D>(qv, src, jh, scale);
      max_score = std::max(max_score, scores[h][jh]);
    }
    sums[h] = ExpInPlace(scores[h], n, max_score);
  }
}

// The value pass of H heads of one GQA group at once: out[h] = (sum_j scores[h][j] · V[j]) /
// sums[h]. Each V load and conversion serves the H heads; every head's lanes make the same
// FMAs in the same order as with H = 1 (the AVX2 kernel's order), so the bits do not change.
template <int D, int H, typename Source>
SPW_AVX512 void ValuesAvx512(const float* const* scores, const float* sums, const Source& src,
                             int64_t n, float* const* out) {
  constexpr int kChunks16 = D / 16;
  __m512 acc[H][kChunks16];
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < kChunks16; ++c) acc[h][c] = _mm512_setzero_ps();
  }
  for (int64_t jj = 0; jj < n; ++jj) {
    for (int c = 0; c < kChunks16; ++c) {
      const __m512 v = src.Value16(jj, c);
      for (int h = 0; h < H; ++h) {
        acc[h][c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[h][jj]), v, acc[h][c]);
      }
    }
  }
  for (int h = 0; h < H; ++h) {
    const __m512 inv = _mm512_set1_ps(1.0f / sums[h]);
    for (int c = 0; c < kChunks16; ++c) {
      _mm512_storeu_ps(out[h] + 16 * c, _mm512_mul_ps(acc[h][c], inv));
    }
  }
}

// Heads of a GQA group whose value passes ValuesAvx512 runs together (H · D / 16 accumulators
// stay in registers up to 16).
template <int D>
constexpr int kSharedHeads = D == 64 ? 4 : 2;
constexpr int64_t kSharedHeadsMax = 4;

// `count` (<= kSharedHeads<D>) query heads of one KV head attend one token's context: scores
// head by head, then one value pass for all of them. scores: count * n floats.
template <int D, typename Source>
SPW_AVX512 void AttendHeadsAvx512(const float* const* q, int count, const Source& src, int64_t n,
                                  float scale, float* scores, float* const* out) {
  float* s[kSharedHeads<D>];
  float sums[kSharedHeads<D>];
  for (int h = 0; h < count; ++h) s[h] = scores + h * n;
  // Scores of up to 3 heads at once (24 accumulators).
  for (int h0 = 0; h0 < count; h0 += 3) {
    switch (std::min(3, count - h0)) {
      case 1:
        ScoresAvx512Heads<D, 1>(q + h0, src, n, scale, s + h0, sums + h0);
        break;
      case 2:
        ScoresAvx512Heads<D, 2>(q + h0, src, n, scale, s + h0, sums + h0);
        break;
      default:
        ScoresAvx512Heads<D, 3>(q + h0, src, n, scale, s + h0, sums + h0);
        break;
    }
  }
  switch (count) {
    case 1:
      return ValuesAvx512<D, 1>(s, sums, src, n, out);
    case 2:
      return ValuesAvx512<D, 2>(s, sums, src, n, out);
    case 3:
      if constexpr (kSharedHeads<D> >= 3) return ValuesAvx512<D, 3>(s, sums, src, n, out);
      break;
    case 4:
      if constexpr (kSharedHeads<D> >= 4) return ValuesAvx512<D, 4>(s, sums, src, n, out);
      break;
  }
  SPW_CHECK(false) << count << " heads";
}

void AttendOneScalar(const float* q, const float* keys, const float* values, int64_t n, int64_t d,
                     float scale, float* scores, float* out) {
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

// One unit of PagedAttention's parallel work: the queries of batch rows [begin, end) of one
// chunk, for every query head that reads KV head `kv_head`.
struct WorkItem {
  int32_t chunk;
  int32_t kv_head;
  int32_t begin, end;
};

// Queries per work item up to which keys are read from the f16 blocks in place; above it they
// are converted to f32 once and reused by all the item's queries.
constexpr int64_t kDirectMaxQueries = 2;

// The item's queries attend reading K and V straight from the f16 cache (decode tokens).
// REQUIRES: AVX2/FMA/F16C and head size 64 or 128.
void AttendDirect(bool avx512, const BatchLayout& layout, const float* q, const WorkItem& item,
                  const kvcache::BlockId* table, KvLayerView cache, int64_t group, float scale,
                  float* scores, float* out) {
  const int64_t d = cache.head_dim;
  const int64_t q_width = group * cache.num_kv_heads * d;
  const int64_t kv_width = cache.num_kv_heads * d;
  for (int32_t t = item.begin; t < item.end; ++t) {
    const int64_t n = layout.positions[t] + 1;
    if (avx512) {
      // NOTE(kernels): the heads of the group share each V row's load and conversion.
      const int64_t step = d == 64 ? kSharedHeads<64> : kSharedHeads<128>;
      for (int64_t g0 = 0; g0 < group; g0 += step) {
        const int count = static_cast<int>(std::min(step, group - g0));
        const float* qs[4];
        float* os[4];
        for (int i = 0; i < count; ++i) {
          const int64_t h = item.kv_head * group + g0 + i;
          qs[i] = q + t * q_width + h * d;
          os[i] = out + t * q_width + h * d;
        }
        if (d == 64) {
          const F16Blocks<64> src{cache.k, cache.v, table, kv_width, item.kv_head * d};
          AttendHeadsAvx512<64>(qs, count, src, n, scale, scores, os);
        } else {
          const F16Blocks<128> src{cache.k, cache.v, table, kv_width, item.kv_head * d};
          AttendHeadsAvx512<128>(qs, count, src, n, scale, scores, os);
        }
      }
      continue;
    }
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = item.kv_head * group + g;
      const float* qh = q + t * q_width + h * d;
      float* oh = out + t * q_width + h * d;
      if (d == 64) {
        const F16Blocks<64> src{cache.k, cache.v, table, kv_width, item.kv_head * d};
        AttendOneAvx2Fixed<64>(qh, src, n, scale, scores, oh);
      } else {
        const F16Blocks<128> src{cache.k, cache.v, table, kv_width, item.kv_head * d};
        AttendOneAvx2Fixed<128>(qh, src, n, scale, scores, oh);
      }
    }
  }
}

}  // namespace

void F16ToF32Bulk(const uint16_t* src, float* dst, int64_t n) {
  if (HasAvx2Fma()) return F16ToF32Avx2(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

void F32ToF16Bulk(const float* src, uint16_t* dst, int64_t n) {
  if (HasAvx2Fma()) return F32ToF16Avx2(src, dst, n);
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

void PagedAttention(const BatchLayout& layout, const float* q, int64_t num_heads, KvLayerView cache,
                    float* out, ThreadPool& pool, std::vector<AttentionScratch>& scratch) {
  scratch.resize(pool.num_threads());
  const int64_t d = cache.head_dim;
  const int64_t kv_heads = cache.num_kv_heads;
  const int64_t group = num_heads / kv_heads;
  const int64_t kv_width = kv_heads * d;
  const int64_t q_width = num_heads * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool avx2 = HasAvx2Fma() && d % 8 == 0;
  const bool avx512 = avx2 && ActiveMatMulIsa() == MatMulIsa::kAvx512;

  std::vector<WorkItem> items;
  const int64_t num_chunks = static_cast<int64_t>(layout.first_positions.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    for (int32_t b = layout.chunk_starts[c]; b < layout.chunk_starts[c + 1]; b += kQueryTile) {
      const int32_t e = std::min<int32_t>(b + kQueryTile, layout.chunk_starts[c + 1]);
      for (int64_t h = 0; h < kv_heads; ++h) {
        items.push_back({static_cast<int32_t>(c), static_cast<int32_t>(h), b, e});
      }
    }
  }
  pool.ParallelFor(
      static_cast<int64_t>(items.size()), 1, [&](int thread, int64_t begin, int64_t end) {
        AttentionScratch& s = scratch[thread];
        for (int64_t it = begin; it < end; ++it) {
          const WorkItem& item = items[it];
          const kvcache::BlockId* table =
              layout.block_tables.data() + layout.block_table_starts[item.chunk];
          const int64_t num_keys = layout.positions[item.end - 1] + 1;
          s.scores.resize(num_keys);
          if (avx2 && (d == 64 || d == 128) && item.end - item.begin <= kDirectMaxQueries) {
            s.scores.resize(kSharedHeadsMax * num_keys);
            AttendDirect(avx512, layout, q, item, table, cache, group, scale, s.scores.data(), out);
            continue;
          }
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
              // NOTE(lead): head sizes 64 and 128 (every supported model family) get the
              // register-resident kernel; other multiples of 8 the general AVX2 one.
              if (avx2 && d == 64) {
                AttendOneAvx2Fixed<64>(qh, F32Rows<64>{s.keys.data(), s.values.data()}, n, scale,
                                       s.scores.data(), oh);
              } else if (avx2 && d == 128) {
                AttendOneAvx2Fixed<128>(qh, F32Rows<128>{s.keys.data(), s.values.data()}, n, scale,
                                        s.scores.data(), oh);
              } else if (avx2) {
                AttendOneAvx2(qh, s.keys.data(), s.values.data(), n, d, scale, s.scores.data(), oh);
              } else {
                AttendOneScalar(qh, s.keys.data(), s.values.data(), n, d, scale, s.scores.data(),
                                oh);
              }
            }
          }
        }
      });
}

}  // namespace spillway::engine::cpu
