// Device helpers shared by the .cu files of kernels/: warp reductions and launch arithmetic.
// Device code only; include from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace spillway::kernels {

constexpr int kWarp = 32;

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Blocks of `threads` threads covering n items (at least one block so that an empty launch is
// still a valid one).
inline unsigned BlocksFor(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b > 0 ? b : 1);
}

}  // namespace spillway::kernels
