// Host launcher of the decode GEMV (gemv.cu): y = x · Wᵀ for the few token rows of a small
// decode step, where a step is bound by reading the weights once from HBM (issue #5's batch-1
// goal: TPOT ≥ 85% of the HBM roofline). CudaBackend::MatMul sends steps of at most
// kGemvMaxRows rows here when the row length allows 16-byte loads, and the rest to cuBLAS.
// Same arithmetic as the cuBLAS path: bf16 x and W, f32 accumulation (in another order).
// Plain C++: compiles without nvcc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace spillway::kernels {

// The most token rows one GEMV launch takes.
constexpr int kGemvMaxRows = 4;

// Whether GemvBf16 takes rows of `in` values: 16-byte loads of W's rows (`in` a multiple of 8,
// W and x 16-byte aligned, as device allocations are).
inline bool GemvFits(int64_t rows, int64_t in) {
  return rows >= 1 && rows <= kGemvMaxRows && in % 8 == 0;
}

// y[t, o] = Σ_k x[t, k] · w[o, k] for t < rows (GemvFits), o < out: w bf16 [out, in] and x
// bf16 [rows, in] row-major, y f32 [rows, out]; y may not alias x or w.
cudaError_t GemvBf16(const uint16_t* w, const uint16_t* x, int64_t rows, int64_t in, int64_t out,
                     float* y, cudaStream_t stream);

}  // namespace spillway::kernels
