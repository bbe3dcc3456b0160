// The AVX2 + FMA + F16C kernel set (x86-64 CPUs from about 2013 on). Q4_0/Q4_1 multiply
// unsigned nibbles by int8 activations with _mm256_maddubs_epi16 (Q4_0 as q - 8 through the
// activation sums); Q8_0 uses the abs/sign trick; F32/F16/BF16 convert weights to f32 and use FMA.
// All follow the canonical order of matmul_kernels.h. K-quants fall back to the scalar kernels.
#include "engine/cpu/matmul_kernels.h"

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/quant_blocks.h"
#include "engine/cpu/x86/target.h"

SPW_TARGET_BEGIN("avx2,fma,f16c")

#include "engine/cpu/x86/legacy_ymm.inc"

namespace spillway::engine::cpu::internal {
namespace {

using ymm::HsumI32;
using ymm::kMaxRows;
using ymm::kMaxTokens;
using ymm::StoreBlockInRuns;
using ymm::ZeroRunPadding;

void Quantize32(const float* x, int64_t cols, int8_t* q, float* d, float* s, int32_t* qsum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const int64_t nb = cols / kQk;
  ZeroRunPadding(nb, q, d, s, qsum);
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQk;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float db = _mm_cvtss_f32(m) / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
    const int sum = HsumI32(
        _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3])));
    // packs interleave 128-bit lanes; the permute restores value order.
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
    const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i i8 = _mm256_packs_epi16(i16a, i16b);
    i8 = _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    alignas(32) int8_t block[kQk];
    _mm256_store_si256(reinterpret_cast<__m256i*>(block), i8);
    StoreBlockInRuns(block, b, q);
    d[b] = db;
    s[b] = db * static_cast<float>(sum);
    qsum[b] = sum;
  }
}

// Eight weights of `kType` at index c of `row`, as f32.
template <GgmlType kType>
inline __m256 LoadWeights8(const uint8_t* row, int64_t c) {
  if constexpr (kType == GgmlType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (kType == GgmlType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c)));
  } else {
    const __m128i h = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <GgmlType kType>
inline float LoadWeight1(const uint8_t* row, int64_t c) {
  if constexpr (kType == GgmlType::kF32) {
    return reinterpret_cast<const float*>(row)[c];
  } else if constexpr (kType == GgmlType::kF16) {
    return _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[c]);
  } else {
    const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[c]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
}

// Canonical order (matmul_kernels.h): column c to lane c % 16; acc[..][0] holds lanes 0-7,
// acc[..][1] lanes 8-15. The last cols % 16 columns go through zero-padded copies.
template <GgmlType kType, int R, int T>
void FloatMicro(const uint8_t* const* rows, int64_t cols, const float* x, int64_t t0, float* y,
                int64_t ldy) {
  __m256 acc[R][T][2];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    __m256 wv[R][2];
    for (int r = 0; r < R; ++r) {
      wv[r][0] = LoadWeights8<kType>(rows[r], c);
      wv[r][1] = LoadWeights8<kType>(rows[r], c + 8);
    }
    for (int t = 0; t < T; ++t) {
      const float* xt = x + (t0 + t) * cols + c;
      const __m256 x0 = _mm256_loadu_ps(xt), x1 = _mm256_loadu_ps(xt + 8);
      for (int r = 0; r < R; ++r) {
        acc[r][t][0] = _mm256_fmadd_ps(wv[r][0], x0, acc[r][t][0]);
        acc[r][t][1] = _mm256_fmadd_ps(wv[r][1], x1, acc[r][t][1]);
      }
    }
  }
  if (c < cols) {
    alignas(32) float wt[R][16] = {};
    alignas(32) float xt[T][16] = {};
    for (int64_t k = c; k < cols; ++k) {
      for (int r = 0; r < R; ++r) wt[r][k - c] = LoadWeight1<kType>(rows[r], k);
      for (int t = 0; t < T; ++t) xt[t][k - c] = x[(t0 + t) * cols + k];
    }
    for (int t = 0; t < T; ++t) {
      for (int r = 0; r < R; ++r) {
        for (int h = 0; h < 2; ++h) {
          acc[r][t][h] = _mm256_fmadd_ps(_mm256_load_ps(wt[r] + 8 * h),
                                         _mm256_load_ps(xt[t] + 8 * h), acc[r][t][h]);
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) y[t * ldy + r] = ymm::ReduceLanes16(acc[r][t][0], acc[r][t][1]);
  }
}

template <GgmlType kType, int R>
void FloatMicroT(int nt, const uint8_t* const* rows, int64_t cols, const float* x, int64_t t0,
                 float* y, int64_t ldy) {
  if (nt == 2) return FloatMicro<kType, R, 2>(rows, cols, x, t0, y, ldy);
  return FloatMicro<kType, R, 1>(rows, cols, x, t0, y, ldy);
}

template <GgmlType kType>
void FloatTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
               int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, row_end - r0));
    const uint8_t* rows[kMaxRows];
    for (int i = 0; i < nr; ++i) rows[i] = w.row(r0 + i);
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, tok_end - t0));
      float* yt = y + t0 * ldy + r0;
      switch (nr) {
        case 4:
          FloatMicroT<kType, 4>(nt, rows, w.cols, x.x, t0, yt, ldy);
          break;
        case 3:
          FloatMicroT<kType, 3>(nt, rows, w.cols, x.x, t0, yt, ldy);
          break;
        case 2:
          FloatMicroT<kType, 2>(nt, rows, w.cols, x.x, t0, yt, ldy);
          break;
        default:
          FloatMicroT<kType, 1>(nt, rows, w.cols, x.x, t0, yt, ldy);
          break;
      }
    }
  }
}

// One K-quant super-block decoded for dot products: 256 unsigned values in natural order, 32
// per vector, and per vector the int16 multipliers of its halves (a 32-value sub-block's
// scale twice for Q4_K/Q5_K; the scales of two 16-value sub-blocks for Q6_K).
struct KBlock {
  __m256i q[8];
  __m256i scale[8];
  // Multipliers of the activations' 16 bsums: the 16-value sub-blocks' scales (Q6_K), or the
  // mins of the 32-value sub-blocks, each twice (Q4_K/Q5_K).
  __m256i bsum_mul;
  float d = 0.0f;
  float dmin = 0.0f;
};

template <GgmlType kType>
inline void DecodeK(const uint8_t* blk, KBlock* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  if constexpr (kType == GgmlType::kQ6_K) {
    const auto& b = *reinterpret_cast<const BlockQ6_K*>(blk);
    out->d = _cvtsh_ss(b.d);
    const __m256i m30 = _mm256_set1_epi8(0x30);
    for (int n = 0; n < 2; ++n) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * n));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * n + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * n));
      // 16-bit shifts move bits across bytes only into positions the 0x30 mask clears.
      out->q[4 * n + 0] = _mm256_or_si256(_mm256_and_si256(ql0, low4),
                                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
      out->q[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4),
                                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
      out->q[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                          _mm256_and_si256(qh, m30));
      out->q[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
    }
    out->bsum_mul =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    for (int v = 0; v < 8; ++v) {
      out->scale[v] = _mm256_setr_m128i(_mm_set1_epi16(static_cast<int16_t>(b.scales[2 * v])),
                                        _mm_set1_epi16(static_cast<int16_t>(b.scales[2 * v + 1])));
    }
  } else {
    // Q4_K and Q5_K share the header and the nibbles; Q5_K adds a fifth bit from qh.
    const auto& b = *reinterpret_cast<const BlockQ4_K*>(blk);
    const uint8_t* qs =
        kType == GgmlType::kQ5_K ? reinterpret_cast<const BlockQ5_K*>(blk)->qs : b.qs;
    out->d = _cvtsh_ss(b.d);
    out->dmin = _cvtsh_ss(b.dmin);
    // The 6-bit scales and mins (ScaleMinK4) as bytes 0-7 and 8-15 of u, in registers (a
    // round trip through memory would stall store forwarding on every block).
    uint32_t u[3];
    std::memcpy(u, b.scales, 12);
    constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
    const uint32_t sc_lo = u[0] & kLow6;
    const uint32_t sc_hi = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
    const uint32_t min_lo = u[1] & kLow6;
    const uint32_t min_hi = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
    for (int j = 0; j < 8; ++j) {
      const uint32_t word = j < 4 ? sc_lo : sc_hi;
      out->scale[j] = _mm256_set1_epi16(static_cast<int16_t>((word >> (8 * (j % 4))) & 0xFF));
    }
    const __m128i mins = _mm_setr_epi32(static_cast<int>(min_lo), static_cast<int>(min_hi), 0, 0);
    out->bsum_mul = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kType == GgmlType::kQ5_K) {
      qh = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(reinterpret_cast<const BlockQ5_K*>(blk)->qh));
    }
    const __m256i one = _mm256_set1_epi8(1);
    for (int j = 0; j < 4; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * j));
      __m256i lo = _mm256_and_si256(v, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      if constexpr (kType == GgmlType::kQ5_K) {
        const __m256i b0 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j)), one);
        const __m256i b1 =
            _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j + 1)), one);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
      }
      out->q[2 * j] = lo;
      out->q[2 * j + 1] = hi;
    }
  }
}

// The exact sum over the super-block of scale * (weight . activation) (see KBlock), in lanes.
// |sum| <= 256 * 63 * 127 * 63 < 2^31; maddubs pairs stay below 2 * 63 * 127 < 2^15.
inline __m256i ScaledDotK(const KBlock& w, const int8_t* x) {
  __m256i acc = _mm256_setzero_si256();
  for (int v = 0; v < 8; ++v) {
    const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(x + 32 * v));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w.q[v], xv), w.scale[v]));
  }
  return acc;
}

// The K-quant kernel of matmul_scalar.cc (KTile), with the integer sums in AVX2 and the same
// f32 operations in the same order.
// NOTE(kernels3): the f32 steps are written as scalar intrinsics because in a region compiled
// for FMA, GCC fuses a * b + c written in plain C++ (even across statements), which would
// round differently from the scalar kernel.
template <GgmlType kType>
void KTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
           int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  constexpr int64_t kTokenChunk = 64;
  constexpr int64_t kBlockBytes = kType == GgmlType::kQ4_K   ? sizeof(BlockQ4_K)
                                  : kType == GgmlType::kQ5_K ? sizeof(BlockQ5_K)
                                                             : sizeof(BlockQ6_K);
  const int64_t nb = w.cols / kQkK;
  const QuantizedActivations& a = x.q;
  KBlock dec;
  float acc[kTokenChunk];
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kTokenChunk) {
      const int64_t t1 = std::min(tok_end, t0 + kTokenChunk);
      std::fill(acc, acc + (t1 - t0), 0.0f);
      for (int64_t b = 0; b < nb; ++b) {
        DecodeK<kType>(w.row(r) + b * kBlockBytes, &dec);
        for (int64_t t = t0; t < t1; ++t) {
          const int8_t* q = a.q + t * a.q_stride + b * kQkK;
          const int16_t* bs = a.bsums + t * a.bsum_stride + b * 16;
          const float dx = a.d[t * a.scale_stride + b];
          const __m256i dot = ScaledDotK(dec, q);
          // sum of bsums[j] * bsum_mul[j] (|bsums| <= 16 * 127), in lanes.
          const __m256i bsum = _mm256_madd_epi16(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs)), dec.bsum_mul);
          __m128 term;
          if constexpr (kType == GgmlType::kQ6_K) {
            // sumi = sum_j scale_j * (dot_j - 32 bsum_j); then (d * dx) * sumi.
            const int sumi = HsumI32(_mm256_sub_epi32(dot, _mm256_slli_epi32(bsum, 5)));
            term = _mm_mul_ss(_mm_mul_ss(_mm_set_ss(dec.d), _mm_set_ss(dx)),
                              _mm_set_ss(static_cast<float>(sumi)));
          } else {
            const int summ = HsumI32(bsum);
            // dx * (d * sumi - dmin * summ)
            const __m128 di =
                _mm_mul_ss(_mm_set_ss(dec.d), _mm_set_ss(static_cast<float>(HsumI32(dot))));
            const __m128 dm =
                _mm_mul_ss(_mm_set_ss(dec.dmin), _mm_set_ss(static_cast<float>(summ)));
            term = _mm_mul_ss(_mm_set_ss(dx), _mm_sub_ss(di, dm));
          }
          acc[t - t0] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(acc[t - t0]), term));
        }
      }
      for (int64_t t = t0; t < t1; ++t) y[t * ldy + r] = acc[t - t0];
    }
  }
}

}  // namespace

const KernelSet* Avx2Kernels() {
  static const KernelSet kSet = [] {
    KernelSet k = ScalarKernels();
    k.name = "avx2";
    k.f32 = FloatTile<GgmlType::kF32>;
    k.f16 = FloatTile<GgmlType::kF16>;
    k.bf16 = FloatTile<GgmlType::kBF16>;
    k.q4_0 = ymm::LegacyTile<GgmlType::kQ4_0, false>;
    k.q4_1 = ymm::LegacyTile<GgmlType::kQ4_1, false>;
    k.q8_0 = ymm::LegacyTile<GgmlType::kQ8_0, false>;
    k.q4_k = KTile<GgmlType::kQ4_K>;
    k.q5_k = KTile<GgmlType::kQ5_K>;
    k.q6_k = KTile<GgmlType::kQ6_K>;
    k.quantize32 = Quantize32;
    return k;
  }();
  return &kSet;
}

}  // namespace spillway::engine::cpu::internal

SPW_TARGET_END

#else  // !defined(__x86_64__)

namespace spillway::engine::cpu::internal {
const KernelSet* Avx2Kernels() { return nullptr; }
}  // namespace spillway::engine::cpu::internal

#endif
