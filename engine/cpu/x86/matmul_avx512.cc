// The AVX-512 kernel set (F, BW, VL, DQ, VNNI: Intel Ice Lake / AMD Zen 4 and later).
//
// Q4_0 / Q4_1 / Q8_0 weights are all handled as unsigned bytes u (Q4: the nibble; Q8_0:
// q ^ 0x80 = q + 128), transposed into the step layout of the activations (matmul_kernels.h:
// one block per 32-bit lane), so that 8 _mm512_dpbusd_epi32 (u8 x s8, summed in int32) leave
// the exact integer dots of 16 blocks in 16 lanes. For Q4_0 and Q8_0 the dot starts from -8
// (-128) times the block's activation sum, so it comes out as the signed dot. Then one FMA per
// row and token adds the 16 blocks to lanes b % 16 (canonical order, matmul_kernels.h).
// A micro-tile is up to 4 rows x 4 tokens; the rows are unpacked once per task.
#include "engine/cpu/matmul_kernels.h"

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/quant_blocks.h"
#include "engine/cpu/x86/target.h"

SPW_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")

#include "engine/cpu/x86/legacy_ymm.inc"

namespace spillway::engine::cpu::internal {
namespace {

constexpr int kMaxRows = 4;
constexpr int kMaxTokens = 4;
constexpr int64_t kWideMinTokens = 4;

// ReduceLanes (matmul_kernels.h) of one accumulator.
inline float ReduceLanes16(__m512 v) {
  return ymm::ReduceLanes16(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

void Quantize32(const float* x, int64_t cols, int8_t* q, float* d, float* s, int32_t* qsum) {
  const int64_t nb = cols / kQk;
  ymm::ZeroRunPadding(nb, q, d, s, qsum);
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + b * kQk);
    const __m512 v1 = _mm512_loadu_ps(x + b * kQk + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
    const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    alignas(32) int8_t block[kQk];
    _mm_store_si128(reinterpret_cast<__m128i*>(block), _mm512_cvtsepi32_epi8(i0));
    _mm_store_si128(reinterpret_cast<__m128i*>(block + 16), _mm512_cvtsepi32_epi8(i1));
    ymm::StoreBlockInRuns(block, b, q);
    d[b] = db;
    s[b] = db * static_cast<float>(sum);
    qsum[b] = sum;
  }
}

using ymm::ExtractScales;
using ymm::LegacyBlockBytes;
using ymm::LegacyQsOffset;

// Lane j of w[k] (k < 4): bytes 4k..4k+3 of the 16 bytes at src[j], j < 16.
inline void Transpose16x4(const uint8_t* const* src, __m512i* w) {
  __m512i a[4];
  for (int i = 0; i < 4; ++i) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i])));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[4 + i])), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[8 + i])), 2);
    a[i] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[12 + i])), 3);
  }
  // 128-bit lane L of a[i] holds source 4 L + i.
  const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]);
  const __m512i t1 = _mm512_unpackhi_epi32(a[0], a[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]);
  const __m512i t3 = _mm512_unpackhi_epi32(a[2], a[3]);
  w[0] = _mm512_unpacklo_epi64(t0, t2);
  w[1] = _mm512_unpackhi_epi64(t0, t2);
  w[2] = _mm512_unpacklo_epi64(t1, t3);
  w[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Blocks [b, b + n) (n <= 16) of one row in the step layout: u[k] lane j = values 4k..4k+3 of
// block b + j as unsigned bytes (zero for j >= n).
template <GgmlType kType>
inline void UnpackRun(const uint8_t* row, int64_t b, int n, __m512i* u) {
  constexpr int64_t kBytes = LegacyBlockBytes<kType>();
  const uint8_t* src[16];
  for (int j = 0; j < 16; ++j) {
    src[j] = j < n ? row + (b + j) * kBytes + LegacyQsOffset<kType>() : ymm::kZeros;
  }
  if constexpr (kType == GgmlType::kQ8_0) {
    Transpose16x4(src, u);
    for (int j = 0; j < 16; ++j) src[j] += j < n ? 16 : 0;
    Transpose16x4(src, u + 4);
    for (int k = 0; k < 8; ++k)
      u[k] = _mm512_xor_si512(u[k], _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    __m512i w[4];
    Transpose16x4(src, w);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
      u[k] = _mm512_and_si512(w[k], low4);
      u[k + 4] = _mm512_and_si512(_mm512_srli_epi16(w[k], 4), low4);
    }
  }
}

template <GgmlType kType>
inline __m512i DotInit(const int32_t* qsum) {
  if constexpr (kType == GgmlType::kQ4_1) {
    return _mm512_setzero_si512();
  } else {
    constexpr int kShift = kType == GgmlType::kQ8_0 ? 7 : 3;
    const __m512i v = _mm512_loadu_si512(qsum);
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(v, kShift));
  }
}

// Rows of a micro-tile: their unpacked runs (8 vectors per run) and scales (padded with zeros
// to a multiple of 16 blocks).
struct UnpackedRows {
  const __m512i* u[kMaxRows];
  const float* d[kMaxRows];
  const float* m[kMaxRows];
};

template <GgmlType kType, int R, int T>
void LegacyMicro(const UnpackedRows& w, int64_t nb, const QuantizedActivations& a, int64_t t0,
                 float* y, int64_t ldy) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += kRunBlocks) {
    const int64_t g = b / kRunBlocks;
    if (nb - b > 8) {
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.q + (t0 + t) * a.q_stride + g * kRunBytes;
        const int64_t so = (t0 + t) * a.scale_stride + b;
        const __m512i init = DotInit<kType>(a.qsum + so);
        const __m512 dx = _mm512_loadu_ps(a.d + so);
        for (int r = 0; r < R; ++r) {
          const __m512i* u = w.u[r] + 8 * g;
          __m512i dot = init;
          for (int k = 0; k < 8; ++k) {
            dot = _mm512_dpbusd_epi32(dot, u[k], _mm512_load_si512(xq + kStepBytes * k));
          }
          const __m512 dd = _mm512_mul_ps(_mm512_loadu_ps(w.d[r] + b), dx);
          acc[r][t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(dot), acc[r][t]);
          if constexpr (kType == GgmlType::kQ4_1) {
            acc[r][t] =
                _mm512_fmadd_ps(_mm512_loadu_ps(w.m[r] + b), _mm512_loadu_ps(a.s + so), acc[r][t]);
          }
        }
      }
    } else {
      // A last run of at most 8 blocks: lanes 0-7 only, in 256-bit vectors.
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.q + (t0 + t) * a.q_stride + g * kRunBytes;
        const int64_t so = (t0 + t) * a.scale_stride + b;
        const __m256i init = ymm::DotInit<kType, true>(a.qsum + so);
        const __m256 dx = _mm256_loadu_ps(a.d + so);
        for (int r = 0; r < R; ++r) {
          const __m512i* u = w.u[r] + 8 * g;
          __m256i dot = init;
          for (int k = 0; k < 8; ++k) {
            dot = _mm256_dpbusd_epi32(
                dot, _mm512_castsi512_si256(u[k]),
                _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + kStepBytes * k)));
          }
          const __m256 dd = _mm256_mul_ps(_mm256_loadu_ps(w.d[r] + b), dx);
          __m256 lo =
              _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(dot), _mm512_castps512_ps256(acc[r][t]));
          if constexpr (kType == GgmlType::kQ4_1) {
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(w.m[r] + b), _mm256_loadu_ps(a.s + so), lo);
          }
          acc[r][t] = _mm512_insertf32x8(acc[r][t], lo, 0);
        }
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = ReduceLanes16(acc[r][t]);
}

template <GgmlType kType, int R>
void LegacyMicroT(int nt, const UnpackedRows& w, int64_t nb, const QuantizedActivations& a,
                  int64_t t0, float* y, int64_t ldy) {
  switch (nt) {
    case 4:
      return LegacyMicro<kType, R, 4>(w, nb, a, t0, y, ldy);
    case 3:
      return LegacyMicro<kType, R, 3>(w, nb, a, t0, y, ldy);
    case 2:
      return LegacyMicro<kType, R, 2>(w, nb, a, t0, y, ldy);
    default:
      return LegacyMicro<kType, R, 1>(w, nb, a, t0, y, ldy);
  }
}

// NOTE(kernels): the rows of a micro-tile are unpacked (transposed into the step layout) once,
// into a per-thread buffer, and then serve every token of the task.
template <GgmlType kType>
void LegacyTile(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const Activations& x,
                int64_t tok_begin, int64_t tok_end, float* y) {
  // NOTE(kernels): below kWideMinTokens tokens the 256-bit VNNI kernels are faster for Q4 on
  // Zen 4 (~5%: there is nothing to amortize the unpacking over, and 256-bit shuffles issue
  // twice as fast as 512-bit ones); for Q8_0 the 512-bit ones are. Both give the same bits.
  if (!x.q.wide && kType != GgmlType::kQ8_0) {
    return ymm::LegacyTile<kType, true>(w, row_begin, row_end, x, tok_begin, tok_end, y);
  }
  const int64_t nb = w.cols / kQk;
  const int64_t runs = (nb + kRunBlocks - 1) / kRunBlocks;
  const int64_t stride = runs * kRunBlocks;
  thread_local std::vector<float> scratch;
  // NOTE(kernels): bytes, aligned by hand: a vector of __m512i would lose the type's alignment.
  thread_local std::vector<uint8_t> unpacked_bytes;
  scratch.resize(static_cast<size_t>(2 * kMaxRows * stride));
  unpacked_bytes.resize(static_cast<size_t>(kMaxRows * runs * 8 * 64 + 64));
  auto* unpacked = reinterpret_cast<__m512i*>(
      (reinterpret_cast<uintptr_t>(unpacked_bytes.data()) + 63) & ~uintptr_t{63});
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, row_end - r0));
    UnpackedRows rows;
    for (int i = 0; i < nr; ++i) {
      float* d = scratch.data() + i * stride;
      float* m = scratch.data() + (kMaxRows + i) * stride;
      __m512i* u = unpacked + i * runs * 8;
      const uint8_t* row = static_cast<const uint8_t*>(w.data) + (r0 + i) * w.row_bytes;
      ExtractScales<kType>(row, nb, d, m);
      for (int64_t g = 0; g < runs; ++g) {
        UnpackRun<kType>(row, g * kRunBlocks,
                         static_cast<int>(std::min<int64_t>(kRunBlocks, nb - g * kRunBlocks)),
                         u + 8 * g);
      }
      rows.u[i] = u;
      rows.d[i] = d;
      rows.m[i] = m;
    }
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, tok_end - t0));
      float* yt = y + t0 * w.rows + r0;
      switch (nr) {
        case 4:
          LegacyMicroT<kType, 4>(nt, rows, nb, x.q, t0, yt, w.rows);
          break;
        case 3:
          LegacyMicroT<kType, 3>(nt, rows, nb, x.q, t0, yt, w.rows);
          break;
        case 2:
          LegacyMicroT<kType, 2>(nt, rows, nb, x.q, t0, yt, w.rows);
          break;
        default:
          LegacyMicroT<kType, 1>(nt, rows, nb, x.q, t0, yt, w.rows);
          break;
      }
    }
  }
}

// 16 weights of `kType` at index c of `row` as f32; lanes outside `k` are zero.
template <GgmlType kType>
inline __m512 LoadWeights16(const uint8_t* row, int64_t c, __mmask16 k) {
  if constexpr (kType == GgmlType::kF32) {
    return _mm512_maskz_loadu_ps(k, reinterpret_cast<const float*>(row) + c);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(k, reinterpret_cast<const uint16_t*>(row) + c);
    if constexpr (kType == GgmlType::kF16) {
      return _mm512_cvtph_ps(h);
    } else {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}

template <GgmlType kType, int R, int T>
void FloatMicro(const uint8_t* const* rows, int64_t cols, const float* x, int64_t t0, float* y,
                int64_t ldy) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 k =
        cols - c >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - c)) - 1);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = LoadWeights16<kType>(rows[r], c, k);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(k, x + (t0 + t) * cols + c);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = ReduceLanes16(acc[r][t]);
}

template <GgmlType kType, int R>
void FloatMicroT(int nt, const uint8_t* const* rows, int64_t cols, const float* x, int64_t t0,
                 float* y, int64_t ldy) {
  switch (nt) {
    case 4:
      return FloatMicro<kType, R, 4>(rows, cols, x, t0, y, ldy);
    case 3:
      return FloatMicro<kType, R, 3>(rows, cols, x, t0, y, ldy);
    case 2:
      return FloatMicro<kType, R, 2>(rows, cols, x, t0, y, ldy);
    default:
      return FloatMicro<kType, R, 1>(rows, cols, x, t0, y, ldy);
  }
}

template <GgmlType kType>
void FloatTile(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const Activations& x,
               int64_t tok_begin, int64_t tok_end, float* y) {
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, row_end - r0));
    const uint8_t* rows[kMaxRows];
    for (int i = 0; i < nr; ++i) {
      rows[i] = static_cast<const uint8_t*>(w.data) + (r0 + i) * w.row_bytes;
    }
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, tok_end - t0));
      float* yt = y + t0 * w.rows + r0;
      switch (nr) {
        case 4:
          FloatMicroT<kType, 4>(nt, rows, w.cols, x.x, t0, yt, w.rows);
          break;
        case 3:
          FloatMicroT<kType, 3>(nt, rows, w.cols, x.x, t0, yt, w.rows);
          break;
        case 2:
          FloatMicroT<kType, 2>(nt, rows, w.cols, x.x, t0, yt, w.rows);
          break;
        default:
          FloatMicroT<kType, 1>(nt, rows, w.cols, x.x, t0, yt, w.rows);
          break;
      }
    }
  }
}

}  // namespace

const KernelSet* Avx512Kernels() {
  static const KernelSet kSet = [] {
    KernelSet k = *Avx2Kernels();
    k.name = "avx512";
    k.f32 = FloatTile<GgmlType::kF32>;
    k.f16 = FloatTile<GgmlType::kF16>;
    k.bf16 = FloatTile<GgmlType::kBF16>;
    k.q4_0 = LegacyTile<GgmlType::kQ4_0>;
    k.q4_1 = LegacyTile<GgmlType::kQ4_1>;
    k.q8_0 = LegacyTile<GgmlType::kQ8_0>;
    k.quantize32 = Quantize32;
    k.wide_min_tokens = kWideMinTokens;
    return k;
  }();
  return &kSet;
}

}  // namespace spillway::engine::cpu::internal

SPW_TARGET_END

#else  // !defined(__x86_64__)

namespace spillway::engine::cpu::internal {
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace spillway::engine::cpu::internal

#endif
