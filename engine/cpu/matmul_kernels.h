// Private to engine/cpu/matmul*.cc and engine/cpu/x86/: the tile kernels behind MatMul, one
// set per instruction set (scalar, AVX2, AVX-512), and the activation formats they read.
// MatMul (matmul.cc) quantizes the activations once per call, splits rows x tokens into tiles
// and runs a kernel set's TileFn on each tile from the ThreadPool. Stateless; thread-safe.
//
// Quantized activations (one token row each, written by a QuantizeFn):
//
//   for Q4_0 / Q4_1 / Q8_0 weights (32-value blocks, nb = cols / 32)
//     q[cols]  int8, q = round_to_even(x / d), |q| <= 127  (order: see ActLayout)
//     d[nb]    f32, d = max|x| / 127 over the block
//     s[nb]    f32, s = d * sum(q) over the block (for the min/offset terms of the weights)
//   for Q4_K / Q5_K / Q6_K weights (256-value blocks, nb = cols / 256)
//     q[cols], d[nb] as above, per 256 values
//     bsums[nb * 16]  int16 sum of each 16 consecutive q
#pragma once

#include <cstdint>

#include "engine/cpu/matmul.h"

namespace spillway::engine::cpu::internal {

// Order of the int8 values of one 32-block activation row.
enum class ActLayout {
  kNatural,  // value j of the row at q[j]
  // Blocks in pairs (2p, 2p + 1), 64 bytes: [b0 0-15, b1 0-15, b0 16-31, b1 16-31]; an odd
  // last block stays natural. Matches how AVX-512 unpacks two Q4 blocks' nibbles at once.
  kPairInterleaved,
};

struct QuantizedActivations {
  const int8_t* q = nullptr;  // [n_tokens, q_stride]
  int64_t q_stride = 0;
  const float* d = nullptr;  // [n_tokens, scale_stride]
  const float* s = nullptr;  // [n_tokens, scale_stride] (32-blocks only)
  int64_t scale_stride = 0;
  const int16_t* bsums = nullptr;  // [n_tokens, bsum_stride] (K-quants only)
  int64_t bsum_stride = 0;
  // n_tokens >= KernelSet::wide_min_tokens: the kernel set's wide kernels run, and Q4_0/Q4_1
  // activations are in KernelSet::q4_layout; otherwise they are kNatural.
  bool wide = false;
};

// What a tile kernel reads: f32 activations for F32/F16/BF16 weights, quantized otherwise.
struct Activations {
  const float* x = nullptr;  // [n_tokens, cols]
  QuantizedActivations q;
};

// Computes y[t * w.rows + r] for r in [row_begin, row_end), t in [tok_begin, tok_end).
using TileFn = void (*)(const WeightMatrix& w, int64_t row_begin, int64_t row_end,
                        const Activations& x, int64_t tok_begin, int64_t tok_end, float* y);

// Quantizes one row of `cols` f32 values into 32-blocks: q[cols], d[cols / 32], s[cols / 32].
using Quantize32Fn = void (*)(const float* x, int64_t cols, ActLayout layout, int8_t* q, float* d,
                              float* s);
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
  ActLayout q4_layout = ActLayout::kNatural;  // layout wanted for Q4_0/Q4_1 weights when wide
  int64_t wide_min_tokens = 1;                // see QuantizedActivations::wide
};

// The portable kernels (any CPU).
const KernelSet& ScalarKernels();
// AVX2+FMA+F16C kernels; nullptr if this build has none. The caller checks the CPU.
const KernelSet* Avx2Kernels();
// AVX-512 F/BW/VL/VNNI kernels; nullptr if this build has none. The caller checks the CPU.
// Entries it lacks are filled from Avx2Kernels().
const KernelSet* Avx512Kernels();

// Scalar row quantizers, also the reference the SIMD ones must match bit for bit.
void QuantizeRow32Scalar(const float* x, int64_t cols, ActLayout layout, int8_t* q, float* d,
                         float* s);
void QuantizeRow256Scalar(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums);

}  // namespace spillway::engine::cpu::internal
