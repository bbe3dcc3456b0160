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
