// Private to engine/cpu/matmul*.cc and engine/cpu/x86/: the tile kernels behind MatMul, one
// set per instruction set (scalar, AVX2, AVX-512), the packed weight layout they read and the
// activation formats. MatMul (matmul.cc) quantizes the activations once per call, splits rows x
// tokens into tiles and runs a kernel set's TileFn on each tile from the ThreadPool. Stateless;
// thread-safe.
//
// Packed weights (PackWeight, once at load; or a few rows at a time inside MatMul for a plain
// WeightMatrix). One layout serves every kernel set. Each row starts on a kPackedAlign boundary
// (PackedRowStride bytes apart, zero padded):
//   F32 / F16 / BF16 / Q4_K / Q5_K / Q6_K: the row exactly as in the file.
//   Q4_0 / Q4_1 / Q8_0 (nb = cols / 32 blocks, in runs of 16 blocks as the activations below;
//   the last run has W = nb % 16 blocks if that is not 0, the others W = 16):
//     qs   the quants of run after run; a run is S steps (S = 4 for Q4, 8 for Q8_0) of 4 * W
//          bytes; step k holds, for each block j of the run (32-bit lane j), the bytes
//          4k..4k+3 of the block's quants: Q4 nibble bytes as in the file (low nibbles are
//          values 4k..4k+3, high nibbles values 16+4k..16+4k+3), Q8_0 bytes q ^ 0x80 (= q + 128,
//          unsigned). So a 64-byte load of a step gives one block per lane, matching the
//          activations' step k (and, for Q4 high nibbles, step k + 4).
//     d    f16[nb], the blocks' scales;  m  f16[nb], Q4_1 only, the blocks' mins.
//   So the packed row holds exactly the file's bytes for the row, rearranged.
//
// Quantized activations (one token row each, written by a QuantizeFn):
//
//   for Q4_0 / Q4_1 / Q8_0 weights (32-value blocks, nb = cols / 32)
//     q        int8, q = round_to_even(x / d), |q| <= 127, in runs of 16 blocks (RunOffset):
//              run g holds blocks 16g..16g+15 in 512 bytes, as 8 steps of 64 bytes; step k
//              holds values 4k..4k+3 of each of the 16 blocks, block after block. So one
//              64-byte load gives 4 values of 16 blocks, one block per 32-bit lane, and a
//              dot product accumulated over the 8 steps leaves each block's sum in its own
//              lane (no horizontal sums). Blocks past nb in the last run are zero.
//     d[nb]    f32, d = max|x| / 127 over the block
//     s[nb]    f32, s = d * sum(q) over the block (for the min/offset terms of the weights)
//     qsum[nb] int32 sum(q) over the block
//     (d, s and qsum are zero from nb up to the next multiple of 16.)
//   for Q4_K / Q5_K / Q6_K weights (256-value blocks, nb = cols / 256)
//     q[cols], d[nb] as above, per 256 values
//     bsums[nb * 16]  int16 sum of each 16 consecutive q
//
// Canonical order (batch invariance). Every kernel of every set computes each output y[t, r]
// with the same sequence of f32 operations, so the result depends only on w[r] and x[t]: not on
// n_tokens, the other rows or tokens of the call, the tile shape, the thread count or the task
// split, and not on the instruction set either (scalar, AVX2 and AVX-512 agree bit for bit).
// There are kLanes = 16 f32 accumulators ("lanes"), all +0 at the start:
//   F32/F16/BF16: column c:  lane[c % 16] = fma(w_c, x_c, lane[c % 16])
//   Q4_0/Q8_0:    block b:   lane[b % 16] = fma(d_w * d_x, isum_b, lane[b % 16])
//   Q4_1:         block b:   the same, then lane[b % 16] = fma(m_w, s_x, lane[b % 16])
// in increasing c or b, where isum_b is the exact integer dot of block b (signed weights
// q - 8 for Q4_0, q for Q8_0; unsigned nibbles for Q4_1), converted to f32 exactly (|isum_b| <
// 2^24), and d_w * d_x is one rounded f32 product. Then y = ReduceLanes(lane). Integer sums
// may be formed in any order (they are exact); that is what lets each kernel lay its integer
// work out as it likes.
// K-quants keep one f32 accumulator, +0 at the start, and per super-block b in increasing
// order, each operation rounded on its own (no fused multiply-add):
//   Q4_K/Q5_K: acc = acc + d_x * (d_w * isum_b - dmin_w * msum_b)
//   Q6_K:      acc = acc + (d_w * d_x) * isum_b
// with isum_b / msum_b the exact integer sums of matmul_scalar.cc's KTile (scales times
// sub-block dots, mins times activation sums), converted to f32. The scalar kernels define it;
// the AVX2 ones (also used by the AVX-512 set) reproduce it.
#pragma once

#include <cstdint>

#include "engine/cpu/matmul.h"

namespace spillway::engine::cpu::internal {

inline constexpr int kLanes = 16;

// The fixed reduction tree of the canonical order: halves, then quarters, eighths, sixteenths
// (lane i + lane i + 8, then + 4, + 2, + 1), as a 512-bit register folds onto its lower half.
inline float ReduceLanes(const float* lane) {
  float b[8], c[4];
  for (int i = 0; i < 8; ++i) b[i] = lane[i] + lane[i + 8];
  for (int i = 0; i < 4; ++i) c[i] = b[i] + b[i + 4];
  const float d0 = c[0] + c[2], d1 = c[1] + c[3];
  return d0 + d1;
}

inline constexpr int kRunBlocks = 16;  // 32-blocks per run of the activation layout
inline constexpr int kRunBytes = 512;  // bytes of one run
inline constexpr int kStepBytes = 64;  // bytes of one step of a run

// Where value i (0..31) of 32-block b sits in a row of quantized activations.
inline constexpr int64_t RunOffset(int64_t b, int i) {
  return (b / kRunBlocks) * kRunBytes + (i / 4) * kStepBytes + (b % kRunBlocks) * 4 + i % 4;
}

// Bytes of one row of quantized activations for 32-blocks: whole runs.
inline constexpr int64_t Run32RowBytes(int64_t cols) {
  return (cols / 32 + kRunBlocks - 1) / kRunBlocks * kRunBytes;
}

struct QuantizedActivations {
  const int8_t* q = nullptr;  // [n_tokens, q_stride]
  int64_t q_stride = 0;
  const float* d = nullptr;       // [n_tokens, scale_stride]
  const float* s = nullptr;       // [n_tokens, scale_stride] (32-blocks only)
  const int32_t* qsum = nullptr;  // [n_tokens, scale_stride] (32-blocks only)
  int64_t scale_stride = 0;
  const int16_t* bsums = nullptr;  // [n_tokens, bsum_stride] (K-quants only)
  int64_t bsum_stride = 0;
};

// What a tile kernel reads: f32 activations for F32/F16/BF16 weights, quantized otherwise.
struct Activations {
  const float* x = nullptr;  // [n_tokens, cols]
  QuantizedActivations q;
};

inline constexpr int64_t kPackedAlign = 64;  // bytes; packed rows and buffers start on it

// Whether `type` is one of the 32-blocks that packing rearranges (Q4_0, Q4_1, Q8_0).
inline constexpr bool IsLegacy32(GgmlType type) {
  return type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0;
}
// Bytes of quants per 32-block of a legacy type: 16 (Q4_0, Q4_1) or 32 (Q8_0).
inline constexpr int64_t LegacyQsBytes(GgmlType type) { return type == GgmlType::kQ8_0 ? 32 : 16; }

// Bytes from one packed row to the next: the file's row, rounded up to kPackedAlign.
// REQUIRES: a type MatMul supports; cols a multiple of its block.
int64_t PackedRowStride(GgmlType type, int64_t cols);
// Writes row `src` (file layout, `cols` values of `type`) to `dst` in the packed layout,
// PackedRowStride(type, cols) bytes including the zero padding.
void PackRow(GgmlType type, const uint8_t* src, int64_t cols, uint8_t* dst);

// In a packed Q4_0/Q4_1/Q8_0 row of nb blocks: the run of blocks [b, b + W) (b % 16 == 0,
// W = min(16, nb - b)) starts at row + PackedRunOffset(type, b), its steps 4 * W bytes apart;
// d starts at row + PackedScaleOffset(type, nb), m (Q4_1) 2 * nb bytes after d.
inline constexpr int64_t PackedRunOffset(GgmlType type, int64_t b) {
  return b * LegacyQsBytes(type);
}
inline constexpr int64_t PackedScaleOffset(GgmlType type, int64_t nb) {
  return nb * LegacyQsBytes(type);
}

// Rows of weights in the packed layout, as the tile kernels read them.
struct PackedView {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  // Row r at data + r * row_stride; readable up to kPackedAlign bytes past the last row, so
  // kernels may load a whole vector where a row ends and mask what they do not need.
  const uint8_t* data = nullptr;
  int64_t row_stride = 0;
  const uint8_t* row(int64_t r) const { return data + r * row_stride; }
};

// Computes y[t * ldy + r] for rows r in [row_begin, row_end) of w (indices into w, not into
// the whole matrix) and tokens t in [tok_begin, tok_end).
using TileFn = void (*)(const PackedView& w, int64_t row_begin, int64_t row_end,
                        const Activations& x, int64_t tok_begin, int64_t tok_end, float* y,
                        int64_t ldy);

// Quantizes one row of `cols` f32 values into 32-blocks: q[Run32RowBytes(cols)] (run layout),
// d, s, qsum[RoundUp(cols / 32, 16)].
using Quantize32Fn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, float* s,
                              int32_t* qsum);
// Quantizes one row into 256-blocks: q[cols], d[cols / 256], bsums[cols / 16].
using Quantize256Fn = void (*)(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums);

struct KernelSet {
  const char* name = "";
  TileFn f32 = nullptr;
  TileFn f16 = nullptr;
  TileFn bf16 = nullptr;
  TileFn q4_0 = nullptr;
  TileFn q4_1 = nullptr;
  TileFn q8_0 = nullptr;
  TileFn q4_k = nullptr;
  TileFn q5_k = nullptr;
  TileFn q6_k = nullptr;
  Quantize32Fn quantize32 = nullptr;
  Quantize256Fn quantize256 = nullptr;
};

// The portable kernels (any CPU).
const KernelSet& ScalarKernels();
// AVX2+FMA+F16C kernels; nullptr if this build has none. The caller checks the CPU.
const KernelSet* Avx2Kernels();
// AVX-512 F/BW/VL/DQ/VNNI kernels; nullptr if this build has none. The caller checks the CPU.
// Entries it lacks are filled from Avx2Kernels().
const KernelSet* Avx512Kernels();
// Avx512Kernels() with the 4 rows x 4 tokens micro-kernel for Q4_0 / Q4_1 / Q8_0 at every
// token count (the wide batch kernel's predecessor): the baseline matmul_benchmark measures the
// wide one against, in the same run. Same bits. nullptr if this build has no AVX-512.
const KernelSet* Avx512BaselineKernels();

// Test and benchmark hook: MatMul uses `set` (nullptr: back to the ISA's own set) from now on
// (process-wide; not thread-safe against concurrent MatMul calls). REQUIRES: the CPU runs it.
void SetKernelSetForTesting(const KernelSet* set);

// Scalar row quantizers, also the reference the SIMD ones must match bit for bit.
void QuantizeRow32Scalar(const float* x, int64_t cols, int8_t* q, float* d, float* s,
                         int32_t* qsum);
void QuantizeRow256Scalar(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums);

}  // namespace spillway::engine::cpu::internal
