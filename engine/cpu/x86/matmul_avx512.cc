// The AVX-512 kernel set (F, BW, VL, DQ, VNNI: Intel Ice Lake / AMD Zen 4 and later).
//
// Q4_0 / Q4_1 / Q8_0 weights are all handled as unsigned bytes u (Q4: the nibble; Q8_0:
// q ^ 0x80 = q + 128) so that one _mm512_dpbusd_epi32 (u8 x s8, summed in int32) multiplies two
// blocks of weights by two blocks of int8 activations. For Q4_0 and Q8_0 the dot starts from
// -8 (-128) times the sums of x over each 4 bytes, so it comes out as the signed dot.
// A micro-tile is up to 4 rows x 4 tokens: each weight block is unpacked once per 4 tokens,
// each activation block loaded once per 4 rows.
//
// Canonical order (matmul_kernels.h): for each run of 16 blocks, the 8 pair dots of a row and a
// token fold into one vector of 16 exact block sums (Fold16), then one FMA adds them to lanes
// b % 16 of that output's accumulator.
//
// Two Q4 blocks unpack as [b0 lo nibbles, b1 lo, b0 hi, b1 hi] (16 bytes each), so MatMul lays
// the activations out the same way (ActLayout::kPairInterleaved).
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

// d and m (Q4_1) of `nb` blocks of one row as f32, then zeros up to a multiple of 16.
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
    _mm512_storeu_ps(d + b, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, dh)));
    if constexpr (kType == GgmlType::kQ4_1) {
      _mm512_storeu_ps(m + b, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, mh)));
    }
  }
}

struct LegacyRows {
  const uint8_t* row[kMaxRows];
  const float* d[kMaxRows];  // padded with zeros to a multiple of 16 blocks
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

// The starting value of a pair's dot for activations xv (see the file comment).
template <GgmlType kType>
inline __m512i PairBias(__m512i xv) {
  if constexpr (kType == GgmlType::kQ4_1) {
    return _mm512_setzero_si512();
  } else {
    const __m512i sum4 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xv);
    constexpr int kShift = kType == GgmlType::kQ8_0 ? 7 : 3;
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum4, kShift));
  }
}

// For four int32 vectors: lane (4 k + i) = the sum of 128-bit lane k of d[i].
inline __m512i Transpose4Sum(__m512i d0, __m512i d1, __m512i d2, __m512i d3) {
  const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(d0, d1), _mm512_unpackhi_epi32(d0, d1));
  const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(d2, d3), _mm512_unpackhi_epi32(d2, d3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// The 16 block sums, in block order, of 8 pair dots d[p] (blocks 2p, 2p + 1). 128-bit lane k of
// d[p] belongs to block 2p + (k & 1) for Q4 (pair-interleaved) and 2p + (k >> 1) for Q8_0.
template <GgmlType kType>
inline __m512i Fold16(const __m512i* d) {
  const __m512i e0 = Transpose4Sum(d[0], d[1], d[2], d[3]);
  const __m512i e1 = Transpose4Sum(d[4], d[5], d[6], d[7]);
  __m512i f;
  if constexpr (kType == GgmlType::kQ8_0) {
    f = _mm512_add_epi32(_mm512_shuffle_i32x4(e0, e1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_i32x4(e0, e1, _MM_SHUFFLE(3, 1, 3, 1)));
  } else {
    f = _mm512_add_epi32(_mm512_shuffle_i32x4(e0, e1, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_i32x4(e0, e1, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // f: [b0 b2 b4 b6 | b1 b3 b5 b7 | b8 b10 b12 b14 | b9 b11 b13 b15].
  return _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), f);
}

// The pair dot of an odd last block alone (natural layout in both operands), laid out as a
// pair dot whose second block is zero.
template <GgmlType kType>
inline __m512i OddBlockDot(const uint8_t* blk, const int8_t* xq) {
  const __m256i u = ymm::UnpackBlock<kType, true>(blk);
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  const __m256i bias = ymm::DotBias<kType, true>(xv);
  const __m256i dot = _mm256_dpbusd_epi32(bias, u, xv);
  if constexpr (kType == GgmlType::kQ8_0) return _mm512_zextsi256_si512(dot);
  // Values 0-15 to 128-bit lane 0, 16-31 to lane 2.
  return _mm512_inserti32x4(_mm512_zextsi128_si512(_mm256_castsi256_si128(dot)),
                            _mm256_extracti128_si256(dot, 1), 2);
}

// Adds blocks [b, b + n) (n <= 16, b % 16 == 0) of R rows x T tokens to acc.
template <GgmlType kType, int R, int T, bool kFull>
inline void LegacyRun(const LegacyRows& w, int64_t b, int n, const QuantizedActivations& a,
                      int64_t t0, __m512 (&acc)[R][T]) {
  constexpr int64_t kBytes = LegacyBlockBytes<kType>();
  const int pairs = kFull ? 8 : n / 2;
  const bool odd = !kFull && (n & 1);
  const __mmask16 k = kFull ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << n) - 1);
  __m512i u[R][8];
  for (int r = 0; r < R; ++r) {
    for (int p = 0; p < pairs; ++p) u[r][p] = UnpackPair<kType>(w.row[r] + (b + 2 * p) * kBytes);
  }
  for (int t = 0; t < T; ++t) {
    const int8_t* xq = a.q + (t0 + t) * a.q_stride + b * kQk;
    const float* xd = a.d + (t0 + t) * a.scale_stride + b;
    const float* xs = a.s + (t0 + t) * a.scale_stride + b;
    __m512i xv[8], bias[8];
    for (int p = 0; p < pairs; ++p) {
      xv[p] = _mm512_loadu_si512(xq + 2 * p * kQk);
      bias[p] = PairBias<kType>(xv[p]);
    }
    const __m512 dx = _mm512_maskz_loadu_ps(k, xd);
    __m512 sx;
    if constexpr (kType == GgmlType::kQ4_1) sx = _mm512_maskz_loadu_ps(k, xs);
    for (int r = 0; r < R; ++r) {
      __m512i dot[8];
      for (int p = 0; p < 8; ++p) {
        dot[p] = p < pairs ? _mm512_dpbusd_epi32(bias[p], u[r][p], xv[p]) : _mm512_setzero_si512();
      }
      if (odd) dot[pairs] = OddBlockDot<kType>(w.row[r] + (b + n - 1) * kBytes, xq + (n - 1) * kQk);
      const __m512 isum = _mm512_cvtepi32_ps(Fold16<kType>(dot));
      const __m512 dd = _mm512_mul_ps(_mm512_loadu_ps(w.d[r] + b), dx);
      acc[r][t] = _mm512_fmadd_ps(dd, isum, acc[r][t]);
      if constexpr (kType == GgmlType::kQ4_1) {
        acc[r][t] = _mm512_fmadd_ps(_mm512_loadu_ps(w.m[r] + b), sx, acc[r][t]);
      }
    }
  }
}

template <GgmlType kType, int R, int T>
void LegacyMicro(const LegacyRows& w, int64_t nb, const QuantizedActivations& a, int64_t t0,
                 float* y, int64_t ldy) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 16 <= nb; b += 16) LegacyRun<kType, R, T, true>(w, b, 16, a, t0, acc);
  if (b < nb) LegacyRun<kType, R, T, false>(w, b, static_cast<int>(nb - b), a, t0, acc);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = ReduceLanes16(acc[r][t]);
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
