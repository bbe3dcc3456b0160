// The emulation's own checks (emu.h), on small kernels written for them: a wrong emulation
// would let the emu tier pass bugs, so each check it claims is shown to fire. This file is CUDA
// (it goes through cu_to_cc.py like kernels/*.cu) but only ever runs under the emulation.
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace {

constexpr int kBlock = 128;

__global__ void __launch_bounds__(kBlock) BlockSumKernel(const float* x, float* out) {
  __shared__ float red[kBlock / 32];
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int w = 0; w < kBlock / 32; ++w) s += red[w];
    out[blockIdx.x] = s;
  }
}

// Each thread reads its neighbour's slot with no barrier after the writes: a race on a GPU.
__global__ void MissingBarrierKernel(float* out) {
  __shared__ float slot[1024];
  slot[threadIdx.x] = static_cast<float>(threadIdx.x);
  out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

__global__ void CopyKernel(const float* x, int n, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i];
}

// Half the warp shuffles with a full mask while the other half waits at a barrier.
__global__ void DivergentShuffleKernel(float* out) {
  float v = 1.0f;
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

std::vector<float> Get(const float* d, int n) {
  std::vector<float> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

float* Put(const std::vector<float>& v) {
  float* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, v.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

TEST(CudaEmuRuntimeTest, BarriersAndShufflesComputeABlockSum) {
  std::vector<float> x(3 * kBlock);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  float* dx = Put(x);
  float* out = Put(std::vector<float>(3, 0.0f));
  BlockSumKernel<<<3, kBlock>>>(dx, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got = Get(out, 3);
  for (int b = 0; b < 3; ++b) {
    float want = 0;
    for (int t = 0; t < kBlock; ++t) want += x[b * kBlock + t];
    EXPECT_EQ(got[b], want) << b;
  }
  cudaFree(dx);
  cudaFree(out);
}

TEST(CudaEmuRuntimeTest, LaunchesBeyondTheLimitsFailAsOnTheDevice) {
  float* out = Put(std::vector<float>(4, 0.0f));
  BlockSumKernel<<<1, 2 * kBlock>>>(out, out);  // above its __launch_bounds__
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  CopyKernel<<<1, 2048>>>(out, 4, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  CopyKernel<<<0, 32>>>(out, 4, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  cudaFree(out);
}

TEST(CudaEmuRuntimeTest, AMissingBarrierReadsFreshSharedMemory) {
  // Whatever the thread order, some thread reads a slot not yet written in this block: shared
  // memory starts each block as NaN, so the race shows in the output.
  float* out = Put(std::vector<float>(kBlock, 0.0f));
  MissingBarrierKernel<<<1, kBlock>>>(out);
  const std::vector<float> got = Get(out, kBlock);
  int nans = 0;
  for (float v : got) nans += std::isnan(v);
  EXPECT_GT(nans, 0);
  cudaFree(out);
}

TEST(CudaEmuRuntimeTest, ReadsPastAnAllocationAreNaNAndWritesStopTheProgram) {
  float* x = Put(std::vector<float>(5, 1.0f));
  float* y = Put(std::vector<float>(6, 0.0f));
  CopyKernel<<<1, 32>>>(x, 6, y);  // reads x[5], one past its end
  const std::vector<float> got = Get(y, 6);
  EXPECT_EQ(got[4], 1.0f);
  EXPECT_TRUE(std::isnan(got[5]));
  float* z = Put(std::vector<float>(6, 3.0f));
  EXPECT_DEATH(
      {
        CopyKernel<<<1, 32>>>(z, 6, x);  // writes x[5]
        cudaDeviceSynchronize();
      },
      "a write outside a 20-byte device allocation \\(at byte 20\\), by kernel CopyKernel");
  cudaFree(x);
  cudaFree(y);
  cudaFree(z);
}

TEST(CudaEmuRuntimeTest, DivergentShufflesAndHostPointersStopTheProgram) {
  float* out = Put(std::vector<float>(32, 0.0f));
  EXPECT_DEATH(
      {
        DivergentShuffleKernel<<<1, 32>>>(out);
        cudaDeviceSynchronize();
      },
      "warp 0 diverges at a shuffle");
  std::vector<float> host(32);
  EXPECT_DEATH(CopyKernel<<<1, 32>>>(host.data(), 32, out),
               "kernel CopyKernel: argument 0 is a pointer outside device memory");
  cudaFree(out);
}

TEST(CudaEmuRuntimeTest, KernelsOnANonBlockingStreamRunWhenItIsSynchronized) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  float* x = Put(std::vector<float>(4, 2.0f));
  float* y = Put(std::vector<float>(4, 0.0f));
  CopyKernel<<<1, 32, 0, s>>>(x, 4, y);
  EXPECT_EQ(Get(y, 4)[0], 0.0f);  // the legacy stream's copy does not wait for s
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(Get(y, 4)[0], 2.0f);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  cudaFree(x);
  cudaFree(y);
}

}  // namespace
