// The AVX-512 kernel set (F, BW, VL, DQ, VNNI: Intel Ice Lake / AMD Zen 4 and later).
//
// Q4_0 / Q4_1 / Q8_0 weights are all handled as unsigned bytes u (Q4: the nibble; Q8_0:
// q ^ 0x80 = q + 128, as packed), packed in the step layout of the activations
// (matmul_kernels.h: one block per 32-bit lane), so that 8 _mm512_dpbusd_epi32 (u8 x s8, summed
// in int32) leave the exact integer dots of 16 blocks in 16 lanes. For Q4_0 and Q8_0 the dot
// starts from -8 (-128) times the block's activation sum, so it comes out as the signed dot.
// Then one FMA per row and token adds the 16 blocks to lanes b % 16 (canonical order,
// matmul_kernels.h). A micro-tile is up to 4 rows x 4 tokens; a run of a row is loaded (and
// for Q4 split into nibbles) once and serves every token of the micro-tile.
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

// The 8 step vectors of the run of W blocks at `run` (packed, matmul_kernels.h): u[k] lane j
// = values 4k..4k+3 of block j as unsigned bytes, zero for j >= W (kTail) or all 16 lanes.
// For Q4, u[4..7] hold the high nibbles in place, that is 16 times their values (see
// LegacyRun).
template <GgmlType kType, bool kTail>
inline void LoadRun(const uint8_t* run, int64_t step, __mmask16 mask, __m512i* u) {
  auto load = [&](int k) {
    if constexpr (kTail) return _mm512_maskz_loadu_epi32(mask, run + k * step);
    return _mm512_loadu_si512(run + k * step);
  };
  if constexpr (kType == GgmlType::kQ8_0) {
    for (int k = 0; k < 8; ++k) u[k] = load(k);
  } else {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i high4 = _mm512_set1_epi8(static_cast<char>(0xF0));
    for (int k = 0; k < 4; ++k) {
      const __m512i w = load(k);
      u[k] = _mm512_and_si512(w, low4);
      u[k + 4] = _mm512_and_si512(w, high4);
    }
  }
}

// 16 f16 values at p as f32; zeros where `mask` is clear (kTail).
template <bool kTail>
inline __m512 LoadHalves16(const uint8_t* p, __mmask16 mask) {
  if constexpr (kTail) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
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

// Adds the run of blocks [b, b + W) of R packed rows x T tokens to acc.
template <GgmlType kType, bool kTail, int R, int T>
inline void LegacyRun(const uint8_t* const* rows, int64_t nb, int64_t b,
                      const QuantizedActivations& a, int64_t t0, __m512 (&acc)[R][T]) {
  const int64_t width = std::min<int64_t>(kRunBlocks, nb - b);
  const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1);
  const int64_t run = PackedRunOffset(kType, b);
  const int64_t scales = PackedScaleOffset(kType, nb) + 2 * b;
  const int64_t x_offset = b / kRunBlocks * kRunBytes;
  for (int r = 0; r < R; ++r) {
    __m512i u[8];
    LoadRun<kType, kTail>(rows[r] + run, 4 * width, mask, u);
    const __m512 dw = LoadHalves16<kTail>(rows[r] + scales, mask);
    __m512 mw = _mm512_setzero_ps();
    if constexpr (kType == GgmlType::kQ4_1)
      mw = LoadHalves16<kTail>(rows[r] + scales + 2 * nb, mask);
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = a.q + (t0 + t) * a.q_stride + x_offset;
      const int64_t so = (t0 + t) * a.scale_stride + b;
      // NOTE(kernels3): two dependency chains of 4 (values 0-15 and 16-31 of each block), not
      // one of 8: a row's dots wait on the latency of vpdpbusd otherwise. For Q4 the second
      // chain sums 16 x the high nibbles (masked in place, one op fewer than a shift); every
      // term is exact, |sum| < 2^20, so the shift back is exact.
      __m512i lo = DotInit<kType>(a.qsum + so);
      __m512i hi = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k) {
        lo = _mm512_dpbusd_epi32(lo, u[k], _mm512_load_si512(xq + kStepBytes * k));
        hi = _mm512_dpbusd_epi32(hi, u[k + 4], _mm512_load_si512(xq + kStepBytes * (k + 4)));
      }
      if constexpr (kType != GgmlType::kQ8_0) hi = _mm512_srai_epi32(hi, 4);
      const __m512i dot = _mm512_add_epi32(lo, hi);
      const __m512 dd = _mm512_mul_ps(dw, _mm512_loadu_ps(a.d + so));
      acc[r][t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(dot), acc[r][t]);
      if constexpr (kType == GgmlType::kQ4_1) {
        acc[r][t] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a.s + so), acc[r][t]);
      }
    }
  }
}

template <GgmlType kType, int R, int T>
void LegacyMicro(const uint8_t* const* rows, int64_t nb, const QuantizedActivations& a, int64_t t0,
                 float* y, int64_t ldy) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + kRunBlocks <= nb; b += kRunBlocks)
    LegacyRun<kType, false, R, T>(rows, nb, b, a, t0, acc);
  if (b < nb) LegacyRun<kType, true, R, T>(rows, nb, b, a, t0, acc);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = ReduceLanes16(acc[r][t]);
}

template <GgmlType kType, int R>
void LegacyMicroT(int nt, const uint8_t* const* rows, int64_t nb, const QuantizedActivations& a,
                  int64_t t0, float* y, int64_t ldy) {
  switch (nt) {
    case 4:
      return LegacyMicro<kType, R, 4>(rows, nb, a, t0, y, ldy);
    case 3:
      return LegacyMicro<kType, R, 3>(rows, nb, a, t0, y, ldy);
    case 2:
      return LegacyMicro<kType, R, 2>(rows, nb, a, t0, y, ldy);
    default:
      return LegacyMicro<kType, R, 1>(rows, nb, a, t0, y, ldy);
  }
}

template <GgmlType kType>
void LegacyTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  const int64_t nb = w.cols / kQk;
  ymm::PrefetchRows(w, row_begin, row_begin + ymm::kPrefetchRows, row_end);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, row_end - r0));
    const uint8_t* rows[kMaxRows];
    for (int i = 0; i < nr; ++i) rows[i] = w.row(r0 + i);
    ymm::PrefetchRows(w, r0 + ymm::kPrefetchRows, r0 + ymm::kPrefetchRows + kMaxRows, row_end);
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, tok_end - t0));
      float* yt = y + t0 * ldy + r0;
      switch (nr) {
        case 4:
          LegacyMicroT<kType, 4>(nt, rows, nb, x.q, t0, yt, ldy);
          break;
        case 3:
          LegacyMicroT<kType, 3>(nt, rows, nb, x.q, t0, yt, ldy);
          break;
        case 2:
          LegacyMicroT<kType, 2>(nt, rows, nb, x.q, t0, yt, ldy);
          break;
        default:
          LegacyMicroT<kType, 1>(nt, rows, nb, x.q, t0, yt, ldy);
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
