// LoRA row kernels for CpuBackend::AddLora: y[t] += scale * B · (A · x[t]) for one token row,
// with A (rank x in) and B (out x rank) dense f32. The low-rank product is a few thousand FLOPs
// per row, far too small for the MatMul tiles and a thread-pool dispatch each, so AddLora hands
// whole rows of every segment to one ParallelFor and runs them here.
#pragma once

#include <cstdint>

namespace spillway::engine::cpu {

// A dense row-major f32 matrix view: element (r, c) at data[r * stride + c].
struct LoraMatrixF32 {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // floats from one row to the next, >= cols
};

// y[o] += scale * sum_j b[o, j] * (sum_c a[j, c] * x[c]) for o < b.rows.
//   x: a.cols floats; y: b.rows floats; u: a.rows floats of scratch.
// REQUIRES: b.cols == a.rows. The result depends only on x, a, b and scale (not on the thread
// or the other rows of the batch).
void LoraAddRow(const float* x, const LoraMatrixF32& a, const LoraMatrixF32& b, float scale,
                float* u, float* y);

}  // namespace spillway::engine::cpu
