// The AVX-512 kernel set (F, BW, VL, DQ, VNNI: Intel Ice Lake / AMD Zen 4 and later).
//
// Q4_0 / Q4_1 / Q8_0 weights are all handled as unsigned bytes u (Q4: the nibble; Q8_0:
// q ^ 0x80 = q + 128, as packed), packed in the step layout of the activations
// (matmul_kernels.h: one block per 32-bit lane), so that 8 _mm512_dpbusd_epi32 (u8 x s8, summed
// in int32) leave the exact integer dots of 16 blocks in 16 lanes. For Q4_0 and Q8_0 the dot
// starts from -8 (-128) times the block's activation sum, so it comes out as the signed dot.
// Then one FMA per row and token adds the 16 blocks to lanes b % 16 (canonical order,
// matmul_kernels.h). Up to 3 tokens (decode), LegacyTile: a micro-tile is up to 4 rows x 4
// tokens; a run of a row is loaded (and for Q4 split into nibbles) once and serves every token
// of the micro-tile. From 4 tokens, WideTile (see its NOTE below): rows unpacked once per task
// into an L1 panel, micro-tiles of 4 rows x 6 tokens.
#include "engine/cpu/matmul_kernels.h"

#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/cpu/quant_blocks.h"
#include "engine/cpu/x86/target.h"

SPW_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")

#include "engine/cpu/x86/legacy_ymm.inc"

namespace spillway::engine::cpu::internal {
namespace {

constexpr int kMaxRows = 4;
constexpr int kMaxTokens = 4;

// Calls f(std::integral_constant<int, N>{}) with N = n (1..kMax): a runtime row or token
// count of a micro-tile to the template instance that handles it.
template <int kMax, typename F>
inline void WithCount(int n, F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((n == I + 1 ? (f(std::integral_constant<int, I + 1>{}), true) : false) || ...);
  }
  (std::make_integer_sequence<int, kMax>{});
}

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
      WithCount<kMaxRows>(nr, [&](auto r) {
        WithCount<kMaxTokens>(nt, [&](auto t) {
          LegacyMicro<kType, decltype(r)::value, decltype(t)::value>(rows, nb, x.q, t0, yt, ldy);
        });
      });
    }
  }
}

// NOTE(perf): the wide kernel for batches (WideTile). The 4 x 4 micro-tile above loads a
// token's activations once per row (one load per vpdpbusd), splits every run's nibbles again
// for each 4 tokens, and spends a whole run of 16 lanes on a last run of W < 16 blocks (at
// SmolLM2's 576 columns, 18 blocks: 2 of the second run's 16 lanes do work, so 44% of all
// vpdpbusd are wasted). Here a group of kWideRows rows is first unpacked into a panel (below),
// which stays in L1 and serves every token of the task; the micro-tile is R rows x T tokens
// with R x T int32 accumulators in registers (up to 24): per step it loads R weight vectors and
// T activation vectors for R x T vpdpbusd. The f32 accumulators live in a small array (L1): per
// run, R x T x (cvt, mul, fma (, fma)) in the canonical order, one load and one store each.
// A last run of W <= 8 blocks is packed 16 / L rows to a vector (L = 4 lanes for W <= 4, 8 for
// W <= 8), against activations broadcast to every group of L lanes, so it costs 1 / 4 (1 / 2)
// of a run; its f32 epilogue works on the packed lanes and puts them back in each (row, token)
// accumulator's lanes 0..L-1, the same operations on the same lanes as a whole run.
constexpr int kWideRows = 4;
constexpr int kWideTokens = 6;
// Loops over registers must be unrolled, or the accumulators go through the stack.
#define SPW_UNROLL SPW_PRAGMA(GCC unroll 16)

// A panel, per run of blocks: for each vector, 8 steps of 64 bytes (unsigned bytes, zero in
// unused lanes), then 16 f32 d, then 16 f32 m (Q4_1). Whole runs: one vector per row, run g of
// row i at (g * kWideRows + i) * kPanelRunBytes. A last run of W blocks (0 < W < 16) follows
// the whole runs as TailVectors(W) vectors; with W > 8 it is laid out as a whole run.
constexpr int64_t kPanelRunBytes = 8 * kStepBytes + 2 * 64;
constexpr int64_t kPanelD = 8 * kStepBytes;
constexpr int64_t kPanelM = 8 * kStepBytes + 64;

// Lanes per row in a packed last run of `width` blocks: 4, 8, or 16 (not packed).
inline int TailLanes(int64_t width) { return width <= 4 ? 4 : width <= 8 ? 8 : 16; }
inline int TailVectors(int64_t width) { return kWideRows * TailLanes(width) / 16; }

// Unpacks rows [r0, r0 + nr) of w into `panel` (see kPanelRunBytes).
template <GgmlType kType>
void UnpackPanel(const PackedView& w, int64_t r0, int nr, uint8_t* panel) {
  const int64_t nb = w.cols / kQk;
  const int64_t full_runs = nb / kRunBlocks;
  const int64_t tail = nb % kRunBlocks;
  const int lanes = TailLanes(tail);
  uint8_t* tail_panel = panel + full_runs * kWideRows * kPanelRunBytes;
  if (tail != 0) std::memset(tail_panel, 0, TailVectors(tail) * kPanelRunBytes);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int i = 0; i < nr; ++i) {
    const uint8_t* row = w.row(r0 + i);
    for (int64_t b = 0, g = 0; b < nb; b += kRunBlocks, ++g) {
      const int64_t width = std::min<int64_t>(kRunBlocks, nb - b);
      const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1);
      const uint8_t* run = row + PackedRunOffset(kType, b);
      // Where this row's lanes of the run go, and how many bytes of each vector are its own.
      uint8_t* out;
      int64_t bytes = 64;
      if (width == kRunBlocks || lanes == 16) {
        out = (g < full_runs ? panel + g * kWideRows * kPanelRunBytes : tail_panel) +
              i * kPanelRunBytes;
      } else {
        const int per_vector = 16 / lanes;
        out = tail_panel + (i / per_vector) * kPanelRunBytes + (i % per_vector) * lanes * 4;
        bytes = lanes * 4;
      }
      // NOTE(perf): plain stores of the vector's low 16, 32 or 64 bytes: masked stores are
      // slow on AMD (they made the unpacking ~20% of the kernel's time).
      auto store = [bytes](uint8_t* p, __m512i v) {
        if (bytes == 64) {
          _mm512_storeu_si512(p, v);
        } else if (bytes == 32) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_castsi512_si256(v));
        } else {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_castsi512_si128(v));
        }
      };
      auto load = [run, width, mask](int k) {
        if (width == kRunBlocks) return _mm512_loadu_si512(run + k * 4 * width);
        return _mm512_maskz_loadu_epi32(mask, run + k * 4 * width);
      };
      if constexpr (kType == GgmlType::kQ8_0) {
        for (int k = 0; k < 8; ++k) store(out + kStepBytes * k, load(k));
      } else {
        for (int k = 0; k < 4; ++k) {
          const __m512i v = load(k);
          store(out + kStepBytes * k, _mm512_and_si512(v, low4));
          store(out + kStepBytes * (k + 4), _mm512_and_si512(_mm512_srli_epi16(v, 4), low4));
        }
      }
      const uint8_t* scales = row + PackedScaleOffset(kType, nb) + 2 * b;
      store(out + kPanelD, _mm512_castps_si512(LoadHalves16<true>(scales, mask)));
      if constexpr (kType == GgmlType::kQ4_1) {
        store(out + kPanelM, _mm512_castps_si512(LoadHalves16<true>(scales + 2 * nb, mask)));
      }
    }
  }
}

// 16 bytes (L = 4) or 32 bytes (L = 8) at p in every group of L lanes; 64 bytes (L = 16).
template <int L>
inline __m512i BroadcastLanes(const void* p) {
  if constexpr (L == 4)
    return _mm512_broadcast_i32x4(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  if constexpr (L == 8)
    return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
  if constexpr (L == 16) return _mm512_loadu_si512(p);
}

// Where a block's integer dot starts (DotInit), for a run packed L lanes per row.
template <GgmlType kType, int L>
inline __m512i PackedDotInit(const int32_t* qsum) {
  if constexpr (kType == GgmlType::kQ4_1) {
    return _mm512_setzero_si512();
  } else {
    constexpr int kShift = kType == GgmlType::kQ8_0 ? 7 : 3;
    return _mm512_sub_epi32(_mm512_setzero_si512(),
                            _mm512_slli_epi32(BroadcastLanes<L>(qsum), kShift));
  }
}

// Lanes 0..L-1 of the f32 accumulators of rows [P v, P v + P) (those < R), token t, packed
// as in the panel's vector v; and back.
template <int L, int R, int T>
inline __m512 GatherAcc(const float* facc, int v, int t) {
  constexpr int P = 16 / L;
  if constexpr (L == 16) return _mm512_load_ps(facc + (v * T + t) * kLanes);
  __m512 f = _mm512_setzero_ps();
  SPW_UNROLL
  for (int i = 0; i < P; ++i) {
    const int r = v * P + i;
    if (r >= R) break;
    const float* p = facc + (r * T + t) * kLanes;
    if constexpr (L == 4) f = _mm512_insertf32x4(f, _mm_load_ps(p), i);
    if constexpr (L == 8) f = _mm512_insertf32x8(f, _mm256_load_ps(p), i);
  }
  return f;
}
template <int L, int R, int T>
inline void ScatterAcc(float* facc, int v, int t, __m512 f) {
  constexpr int P = 16 / L;
  if constexpr (L == 16) return _mm512_store_ps(facc + (v * T + t) * kLanes, f);
  SPW_UNROLL
  for (int i = 0; i < P; ++i) {
    const int r = v * P + i;
    if (r >= R) break;
    float* p = facc + (r * T + t) * kLanes;
    if constexpr (L == 4) _mm_store_ps(p, _mm512_extractf32x4_ps(f, i));
    if constexpr (L == 8) _mm256_store_ps(p, _mm512_extractf32x8_ps(f, i));
  }
}

// Adds the run of blocks [b, b + 16) (L = 16; a last run laid out as whole) or a last run
// packed L lanes per row, of R rows x T tokens, to facc ([R][T] x 16 lanes). `vecs` is the
// panel's first vector of the run.
// kFirst: the first run of the row (L = 16); the accumulators are +0 before it, not read.
template <GgmlType kType, int L, int R, int T, bool kFirst = false>
inline void WideRun(const uint8_t* vecs, int64_t b, const QuantizedActivations& a, int64_t t0,
                    float* facc) {
  constexpr int V = (R * L + 15) / 16;  // vectors of the run that hold the R rows
  const int8_t* xq[T];
  SPW_UNROLL
  for (int t = 0; t < T; ++t) xq[t] = a.q + (t0 + t) * a.q_stride + b / kRunBlocks * kRunBytes;
  __m512i acc[V][T];
  SPW_UNROLL
  for (int t = 0; t < T; ++t) {
    const __m512i init = PackedDotInit<kType, L>(a.qsum + (t0 + t) * a.scale_stride + b);
    SPW_UNROLL
    for (int v = 0; v < V; ++v) acc[v][t] = init;
  }
  SPW_UNROLL
  for (int k = 0; k < 8; ++k) {
    __m512i u[V];
    SPW_UNROLL
    for (int v = 0; v < V; ++v)
      u[v] = _mm512_load_si512(vecs + v * kPanelRunBytes + kStepBytes * k);
    SPW_UNROLL
    for (int t = 0; t < T; ++t) {
      const __m512i x = BroadcastLanes<L>(xq[t] + kStepBytes * k);
      SPW_UNROLL
      for (int v = 0; v < V; ++v) acc[v][t] = _mm512_dpbusd_epi32(acc[v][t], u[v], x);
    }
  }
  SPW_UNROLL
  for (int v = 0; v < V; ++v) {
    const __m512 dw = _mm512_load_ps(vecs + v * kPanelRunBytes + kPanelD);
    __m512 mw = _mm512_setzero_ps();
    if constexpr (kType == GgmlType::kQ4_1)
      mw = _mm512_load_ps(vecs + v * kPanelRunBytes + kPanelM);
    SPW_UNROLL
    for (int t = 0; t < T; ++t) {
      const int64_t so = (t0 + t) * a.scale_stride + b;
      const __m512 dd = _mm512_mul_ps(dw, _mm512_castsi512_ps(BroadcastLanes<L>(a.d + so)));
      __m512 f = kFirst ? _mm512_setzero_ps() : GatherAcc<L, R, T>(facc, v, t);
      f = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(acc[v][t]), f);
      if constexpr (kType == GgmlType::kQ4_1) {
        f = _mm512_fmadd_ps(mw, _mm512_castsi512_ps(BroadcastLanes<L>(a.s + so)), f);
      }
      ScatterAcc<L, R, T>(facc, v, t, f);
    }
  }
}

// out[i] = ReduceLanes(acc + 16 i) for i < n <= 16: the additions of ReduceLanes16, lane for
// lane and in the same order, for 16 accumulators at once (a transposing tree: 45 instructions
// instead of ~9 per output).
inline void ReduceLanesMany(const float* acc, int n, float* out) {
  __m512 v[16];
  SPW_UNROLL
  for (int i = 0; i < 16; ++i)
    v[i] = i < n ? _mm512_load_ps(acc + kLanes * i) : _mm512_setzero_ps();
  // lane i + lane i + 8: s1[k] = [b of v[2k] | b of v[2k + 1]] (8 lanes each).
  __m512 s1[8];
  SPW_UNROLL
  for (int k = 0; k < 8; ++k) {
    s1[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // + 4: s2[m] quarter j = the 4 partial sums c of v[4m + j].
  __m512 s2[4];
  SPW_UNROLL
  for (int m = 0; m < 4; ++m) {
    s2[m] = _mm512_add_ps(_mm512_shuffle_f32x4(s1[2 * m], s1[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(s1[2 * m], s1[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // c0 + c2, c1 + c3: s3[n] quarter j = (d0, d1) of v[8n + j], then of v[8n + 4 + j].
  __m512 s3[2];
  SPW_UNROLL
  for (int n2 = 0; n2 < 2; ++n2) {
    s3[n2] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * n2], s2[2 * n2 + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(s2[2 * n2], s2[2 * n2 + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // d0 + d1: lane 4 j + e = output j + 4 e.
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(s3[0], s3[1], _MM_SHUFFLE(3, 1, 3, 1)));
  alignas(64) float tmp[16];
  _mm512_store_ps(tmp, r);
  for (int i = 0; i < n; ++i) out[i] = tmp[4 * (i % 4) + i / 4];
}

template <GgmlType kType, int R, int T>
void WideMicro(const uint8_t* panel, int64_t nb, const QuantizedActivations& a, int64_t t0,
               float* y, int64_t ldy) {
  alignas(64) float facc[R * T * kLanes];
  const int64_t full_runs = nb / kRunBlocks;
  if (full_runs == 0) {
    for (int i = 0; i < R * T; ++i) _mm512_store_ps(facc + i * kLanes, _mm512_setzero_ps());
  } else {
    WideRun<kType, 16, R, T, true>(panel, 0, a, t0, facc);
  }
  for (int64_t g = 1; g < full_runs; ++g) {
    WideRun<kType, 16, R, T>(panel + g * kWideRows * kPanelRunBytes, g * kRunBlocks, a, t0, facc);
  }
  const uint8_t* tail = panel + full_runs * kWideRows * kPanelRunBytes;
  const int64_t tail_blocks = nb % kRunBlocks;
  if (tail_blocks != 0) {
    switch (TailLanes(tail_blocks)) {
      case 4:
        WideRun<kType, 4, R, T>(tail, full_runs * kRunBlocks, a, t0, facc);
        break;
      case 8:
        WideRun<kType, 8, R, T>(tail, full_runs * kRunBlocks, a, t0, facc);
        break;
      default:
        WideRun<kType, 16, R, T>(tail, full_runs * kRunBlocks, a, t0, facc);
        break;
    }
  }
  float sums[R * T];
  for (int i = 0; i < R * T; i += 16) {
    ReduceLanesMany(facc + i * kLanes, std::min(16, R * T - i), sums + i);
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) y[t * ldy + r] = sums[r * T + t];
}

// Tokens of the next micro-tile when `left` remain: kWideTokens, except that a remainder
// below it is shared with the tile before (8 -> 4 + 4, not 6 + 2).
inline int WideTokens(int64_t left) {
  if (left <= kWideTokens) return static_cast<int>(left);
  if (left < 2 * kWideTokens) return static_cast<int>((left + 1) / 2);
  return kWideTokens;
}

// Tokens from which WideTile is used; fewer take LegacyTile (decode: one pass over the weights
// with nothing to amortize a panel over).
constexpr int64_t kWideMinTokens = 4;

template <GgmlType kType>
void WideTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
              int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  if (tok_end - tok_begin < kWideMinTokens) {
    return LegacyTile<kType>(w, row_begin, row_end, x, tok_begin, tok_end, y, ldy);
  }
  const int64_t nb = w.cols / kQk;
  const int64_t runs = (nb + kRunBlocks - 1) / kRunBlocks;
  thread_local std::vector<uint8_t> buf;
  const size_t bytes = static_cast<size_t>(runs * kWideRows * kPanelRunBytes + 64);
  if (buf.size() < bytes) buf.resize(bytes);
  uint8_t* panel =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
  ymm::PrefetchRows(w, row_begin, row_begin + ymm::kPrefetchRows, row_end);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kWideRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kWideRows, row_end - r0));
    UnpackPanel<kType>(w, r0, nr, panel);
    ymm::PrefetchRows(w, r0 + ymm::kPrefetchRows, r0 + ymm::kPrefetchRows + kWideRows, row_end);
    for (int64_t t0 = tok_begin; t0 < tok_end;) {
      const int nt = WideTokens(tok_end - t0);
      float* yt = y + t0 * ldy + r0;
      WithCount<kWideRows>(nr, [&](auto r) {
        WithCount<kWideTokens>(nt, [&](auto t) {
          WideMicro<kType, decltype(r)::value, decltype(t)::value>(panel, nb, x.q, t0, yt, ldy);
        });
      });
      t0 += nt;
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
      WithCount<kMaxRows>(nr, [&](auto r) {
        WithCount<kMaxTokens>(nt, [&](auto t) {
          FloatMicro<kType, decltype(r)::value, decltype(t)::value>(rows, w.cols, x.x, t0, yt, ldy);
        });
      });
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
    k.q4_0 = WideTile<GgmlType::kQ4_0>;
    k.q4_1 = WideTile<GgmlType::kQ4_1>;
    k.q8_0 = WideTile<GgmlType::kQ8_0>;
    k.quantize32 = Quantize32;
    return k;
  }();
  return &kSet;
}

const KernelSet* Avx512BaselineKernels() {
  static const KernelSet kSet = [] {
    KernelSet k = *Avx512Kernels();
    k.name = "avx512-4x4";
    k.q4_0 = LegacyTile<GgmlType::kQ4_0>;
    k.q4_1 = LegacyTile<GgmlType::kQ4_1>;
    k.q8_0 = LegacyTile<GgmlType::kQ8_0>;
    return k;
  }();
  return &kSet;
}

}  // namespace spillway::engine::cpu::internal

SPW_TARGET_END

#else  // !defined(__x86_64__)

namespace spillway::engine::cpu::internal {
const KernelSet* Avx512Kernels() { return nullptr; }
const KernelSet* Avx512BaselineKernels() { return nullptr; }
}  // namespace spillway::engine::cpu::internal

#endif
