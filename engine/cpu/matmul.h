// Matrix products and conversions on weights as they are stored in model files (quantized or
// not), for the CPU backend. Weights stay in their file type in memory (Q4_1 stays ~4.5 bits
// per weight); activations are converted per call as the weight type requires.
// Thread-safe: functions keep no state; parallelism comes from the ThreadPool passed in.
#pragma once

#include <cstdint>

#include "engine/cpu/thread_pool.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine::cpu {

// A weight matrix of `rows` output features by `cols` input features, row-major: row r starts
// at data + r * row_bytes and holds `cols` values of `type`.
struct WeightMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  int64_t row_bytes = 0;
};

// y[t, r] = sum_c w[r, c] * x[t, c] for t < n_tokens, r < w.rows.
//   x: [n_tokens, w.cols] f32, row stride w.cols
//   y: [n_tokens, w.rows] f32, row stride w.rows
// Supported w.type: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
// REQUIRES: w.cols is a multiple of BlockElements(w.type).
void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

// Converts `n` values of `type` at `src` (a whole number of blocks) to f32 at `dst`.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// The instruction sets MatMul has kernels for. By default MatMul uses the best one the CPU
// supports (checked once, at run time, with CPUID): AVX-512 needs F, BW, VL, DQ and VNNI;
// AVX2 needs AVX2, FMA and F16C.
enum class MatMulIsa { kScalar, kAvx2, kAvx512 };

// Whether this build has kernels for `isa` and this CPU can run them.
bool MatMulIsaSupported(MatMulIsa isa);
// The instruction set MatMul uses now.
MatMulIsa ActiveMatMulIsa();
// "scalar", "avx2", "avx512".
const char* MatMulIsaName(MatMulIsa isa);

// Test hook: makes MatMul use `isa` from now on (process-wide; not thread-safe against
// concurrent MatMul calls). REQUIRES: MatMulIsaSupported(isa).
void SetMatMulIsaForTesting(MatMulIsa isa);
// Test hook: back to the default choice.
void ResetMatMulIsaForTesting();

}  // namespace spillway::engine::cpu
