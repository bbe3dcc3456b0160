// The AVX-512 kernel set (F, BW, VL, DQ, VNNI: Intel Ice Lake / AMD Zen 4 and later).
//
// Q4_0 / Q4_1 / Q8_0 weights are all handled as w = d * u + m with u an unsigned byte:
//   Q4_1: u = nibble, m = m;  Q4_0: u = nibble, m = -8 d;  Q8_0: u = q ^ 0x80 (= q + 128),
//   m = -128 d.
// so that one _mm512_dpbusd_epi32 (u8 x s8, summed in int32) multiplies two blocks of weights by
// two blocks of int8 activations, and the m terms add sum_b m_b * s_b (s = d_x * sum(q_x)) once
// per row and token. A micro-tile is up to 4 rows x 4 tokens: each weight block is unpacked
// once per 4 tokens, each activation block loaded once per 4 rows.
//
// Two Q4 blocks unpack as [b0 lo nibbles, b1 lo, b0 hi, b1 hi] (16 bytes each), so MatMul lays
// the activations out the same way (ActLayout::kPairInterleaved) and scales are permuted to
// [d0 x4, d1 x4, d0 x4, d1 x4] per 128-bit lane.
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

inline float HsumI32ToF32(__m256i v) {
  const __m256 f = _mm256_cvtepi32_ps(v);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum_b m[b] * s[b]
inline float MinTerm(const float* m, const float* s, int64_t nb) {
  __m512 acc = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 16 <= nb; b += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(m + b), _mm512_loadu_ps(s + b), acc);
  }
  if (b < nb) {
    const __mmask16 k = static_cast<__mmask16>((1u << (nb - b)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, m + b), _mm512_maskz_loadu_ps(k, s + b), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

void Quantize32(const float* x, int64_t cols, ActLayout layout, int8_t* q, float* d, float* s) {
  const int64_t nb = cols / kQk;
  const bool pairs = layout == ActLayout::kPairInterleaved;
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
    // Where the two 16-value halves go: natural, or the pair-interleaved slots.
    int64_t lo = b * kQk, hi = b * kQk + 16;
    if (pairs && (b | 1) < nb) {
      const int64_t base = (b & ~int64_t{1}) * kQk, i = b & 1;
      lo = base + 16 * i;
      hi = base + 32 + 16 * i;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + lo), _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + hi), _mm512_cvtsepi32_epi8(i1));
    d[b] = db;
    s[b] = db * static_cast<float>(sum);
  }
}

template <GgmlType kType>
constexpr int64_t LegacyBlockBytes() {
  return kType == GgmlType::kQ4_0 ? 18 : kType == GgmlType::kQ4_1 ? 20 : 34;
}

// d and m (see the file comment) of `nb` blocks of one row, as f32.
// NOTE(kernels): plain 16-bit loads, 16 blocks at a time, then one vector conversion. A gather
// here was twice as slow on weights streamed from DRAM (it holds retirement until every cache
// miss it touches is served).
template <GgmlType kType>
void ExtractScales(const uint8_t* row, int64_t nb, float* d, float* m) {
  constexpr int64_t kBytes = LegacyBlockBytes<kType>();
  alignas(32) uint16_t dh[16];
  alignas(32) uint16_t mh[16];
  for (int64_t b = 0; b < nb; b += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, nb - b));
    for (int i = 0; i < n; ++i) {
      std::memcpy(&dh[i], row + (b + i) * kBytes, 2);
      if constexpr (kType == GgmlType::kQ4_1) std::memcpy(&mh[i], row + (b + i) * kBytes + 2, 2);
    }
    const __mmask16 k = static_cast<__mmask16>((1u << n) - 1);
    const __m512 dv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, dh));
    __m512 mv;
    if constexpr (kType == GgmlType::kQ4_1) {
      mv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, mh));
    } else if constexpr (kType == GgmlType::kQ4_0) {
      mv = _mm512_mul_ps(dv, _mm512_set1_ps(-8.0f));
    } else {
      mv = _mm512_mul_ps(dv, _mm512_set1_ps(-128.0f));
    }
    _mm512_mask_storeu_ps(d + b, k, dv);
    _mm512_mask_storeu_ps(m + b, k, mv);
  }
}

struct LegacyRows {
  const uint8_t* row[kMaxRows];
  const float* d[kMaxRows];
  const float* m[kMaxRows];
};

// Two consecutive blocks (b, b + 1) of one row as 64 unsigned bytes in activation order.
template <GgmlType kType>
inline __m512i UnpackPair(const uint8_t* blk0) {
  constexpr int64_t kBytes = LegacyBlockBytes<kType>();
  constexpr int64_t kQs = kType == GgmlType::kQ4_1 ? 4 : 2;
  if constexpr (kType == GgmlType::kQ8_0) {
    const __m256i q0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk0 + kQs));
    const __m256i q1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk0 + kBytes + kQs));
    return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1),
                            _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m128i p0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk0 + kQs));
    const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk0 + kBytes + kQs));
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(p0), p1, 1);
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
    return _mm512_and_si512(both, _mm512_set1_epi8(0x0F));
  }
}

// One block of one row as 32 unsigned bytes in natural order (the odd last block).
template <GgmlType kType>
inline __m256i UnpackOne(const uint8_t* blk) {
  constexpr int64_t kQs = kType == GgmlType::kQ4_1 ? 4 : 2;
  if constexpr (kType == GgmlType::kQ8_0) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQs));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(0x0F));
  }
}

template <GgmlType kType>
inline __m512 PairScales(const float* v) {
  // Q4: lanes [v0 x4, v1 x4, v0 x4, v1 x4]; Q8_0: [v0 x8, v1 x8].
  const __m512i idx = kType == GgmlType::kQ8_0
                          ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                          : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(v)));
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(two));
}

template <GgmlType kType, int R, int T>
void LegacyMicro(const LegacyRows& w, int64_t nb, const QuantizedActivations& a, int64_t t0,
                 float* y, int64_t ldy) {
  constexpr int64_t kBytes = LegacyBlockBytes<kType>();
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int8_t* xq[T];
  const float* xd[T];
  for (int t = 0; t < T; ++t) {
    xq[t] = a.q + (t0 + t) * a.q_stride;
    xd[t] = a.d + (t0 + t) * a.scale_stride;
  }
  const int64_t pairs_end = nb & ~int64_t{1};
  for (int64_t b = 0; b < pairs_end; b += 2) {
    __m512i u[R];
    __m512 dw[R];
    for (int r = 0; r < R; ++r) {
      u[r] = UnpackPair<kType>(w.row[r] + b * kBytes);
      dw[r] = PairScales<kType>(w.d[r] + b);
    }
    for (int t = 0; t < T; ++t) {
      const __m512i xv = _mm512_loadu_si512(xq[t] + b * kQk);
      const __m512 dx = PairScales<kType>(xd[t] + b);
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[r], xv);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], dx), acc[r][t]);
      }
    }
  }
  float tail[R][T] = {};
  if (nb & 1) {
    const int64_t b = nb - 1;
    for (int r = 0; r < R; ++r) {
      const __m256i u = UnpackOne<kType>(w.row[r] + b * kBytes);
      for (int t = 0; t < T; ++t) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[t] + b * kQk));
        const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xv);
        tail[r][t] = HsumI32ToF32(dot) * (w.d[r][b] * xd[t][b]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    const float* xs = a.s + (t0 + t) * a.scale_stride;
    for (int r = 0; r < R; ++r) {
      y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]) + tail[r][t] + MinTerm(w.m[r], xs, nb);
    }
  }
}

template <GgmlType kType, int R>
void LegacyMicroT(int nt, const LegacyRows& w, int64_t nb, const QuantizedActivations& a,
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

template <GgmlType kType>
void LegacyTile(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const Activations& x,
                int64_t tok_begin, int64_t tok_end, float* y) {
  // NOTE(kernels): below kWideMinTokens tokens the 256-bit VNNI kernels are faster on Zen 4
  // (fewer uops per block: no permutes/inserts, no 512-bit double-pumping), measured ~1.35x at
  // one token; from 4 tokens on, 4x4 tiles of 512-bit dpbusd win (~1.8x at 32 tokens).
  if (!x.q.wide)
    return ymm::LegacyTile<kType, true>(w, row_begin, row_end, x, tok_begin, tok_end, y);
  const int64_t nb = w.cols / kQk;
  const int64_t stride = (nb + 15) & ~int64_t{15};
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(2 * kMaxRows * stride));
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, row_end - r0));
    LegacyRows rows;
    for (int i = 0; i < nr; ++i) {
      float* d = scratch.data() + i * stride;
      float* m = scratch.data() + (kMaxRows + i) * stride;
      rows.row[i] = static_cast<const uint8_t*>(w.data) + (r0 + i) * w.row_bytes;
      rows.d[i] = d;
      rows.m[i] = m;
      ExtractScales<kType>(rows.row[i], nb, d, m);
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
    for (int r = 0; r < R; ++r) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
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
    k.q4_layout = ActLayout::kPairInterleaved;
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
