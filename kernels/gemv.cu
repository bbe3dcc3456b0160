// The decode GEMV behind gemv.h: a warp per output row, each lane reading 16 bytes (8 bf16) of
// the weight row per iteration, coalesced across the warp (512 contiguous bytes), and the same
// 16 bytes of each token's x (small, L1/L2-resident); f32 sums, reduced across the warp.
// NOTE(cuda): written for HBM streaming but never measured on a GPU; gpu_bench times decode
// with it and without (CudaBackend::SetDecodeGemv) so the first GPU run decides the default.
#include <cuda_bf16.h>

#include "kernels/common.cuh"
#include "kernels/gemv.h"

namespace spillway::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

__global__ void __launch_bounds__(kThreads)
    GemvBf16Kernel(const __nv_bfloat16* w, const __nv_bfloat16* x, int rows, int64_t in,
                   int64_t out, float* y) {
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int64_t o = int64_t{blockIdx.x} * kRowsPerBlock + warp;
  if (o >= out) return;  // the whole warp
  const auto* wr = reinterpret_cast<const uint4*>(w + o * in);
  const int64_t vectors = in / 8;
  float acc[kGemvMaxRows] = {};
  // Loops over tokens run to the constant kGemvMaxRows (guarded by `rows`) so that acc stays
  // in registers: a runtime index would put it in local memory.
  for (int64_t j = lane; j < vectors; j += kWarp) {
    const uint4 wq = wr[j];
    const auto* wv = reinterpret_cast<const __nv_bfloat16*>(&wq);
    float wf[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) wf[e] = __bfloat162float(wv[e]);
#pragma unroll
    for (int t = 0; t < kGemvMaxRows; ++t) {
      if (t >= rows) break;
      const uint4 xq = reinterpret_cast<const uint4*>(x + t * in)[j];
      const auto* xv = reinterpret_cast<const __nv_bfloat16*>(&xq);
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) s += wf[e] * __bfloat162float(xv[e]);
      acc[t] += s;
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t) {
    if (t >= rows) break;
    const float sum = WarpSum(acc[t]);
    if (lane == 0) y[t * out + o] = sum;
  }
}

}  // namespace

cudaError_t GemvBf16(const uint16_t* w, const uint16_t* x, int64_t rows, int64_t in, int64_t out,
                     float* y, cudaStream_t stream) {
  if (!GemvFits(rows, in)) return cudaErrorInvalidValue;
  if (out == 0) return cudaSuccess;
  GemvBf16Kernel<<<BlocksFor(out, kRowsPerBlock), kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(w), reinterpret_cast<const __nv_bfloat16*>(x),
      static_cast<int>(rows), in, out, y);
  return cudaGetLastError();
}

}  // namespace spillway::kernels
