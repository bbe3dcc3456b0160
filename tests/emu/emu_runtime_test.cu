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

// Dynamic shared memory: each thread writes its slot, then reads its neighbour's after the
// barrier; `extra` more slots than the launch gave are written past its end.
__global__ void DynamicSharedKernel(float* out, int extra) {
  extern __shared__ float buf[];
  buf[threadIdx.x] = static_cast<float>(threadIdx.x);
  if (threadIdx.x < static_cast<unsigned>(extra)) buf[blockDim.x + threadIdx.x] = 0.0f;
  __syncthreads();
  out[blockIdx.y * blockDim.x + threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

std::vector<float> Get(const float* d, int n) {
  std::vector<float> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

cudaStream_t NonBlockingStream() {
  cudaStream_t s = nullptr;
  EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  return s;
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
  cudaStream_t s = NonBlockingStream();
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

TEST(CudaEmuRuntimeTest, DynamicSharedMemoryIsCheckedAgainstItsSizeAndTheAttribute) {
  float* out = Put(std::vector<float>(64, 0.0f));
  DynamicSharedKernel<<<dim3(1, 2), 32, 32 * sizeof(float)>>>(out, 0);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> got = Get(out, 64);
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[63], 0.0f);  // block y = 1, thread 31 reads slot 0
  EXPECT_DEATH(
      {
        DynamicSharedKernel<<<1, 32, 32 * sizeof(float)>>>(out, 1);
        cudaDeviceSynchronize();
      },
      "a write past the end of its 128 bytes of dynamic shared memory");
  // Over 48 KiB needs the kernel's attribute raised first, as on the device.
  DynamicSharedKernel<<<1, 32, 64 << 10>>>(out, 0);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(DynamicSharedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 << 10),
            cudaSuccess);
  DynamicSharedKernel<<<1, 32, 64 << 10>>>(out, 0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(DynamicSharedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 300 << 10),
            cudaErrorInvalidValue);
  cudaFree(out);
}

TEST(CudaEmuRuntimeTest, ACaptureRecordsWorkThatEachGraphLaunchReplays) {
  cudaStream_t s = NonBlockingStream();
  float* x = Put(std::vector<float>(4, 2.0f));
  float* y = Put(std::vector<float>(4, 0.0f));
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  CopyKernel<<<1, 32, 0, s>>>(x, 4, y);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(Get(y, 4)[0], 0.0f);  // captured, not run
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(Get(y, 4)[0], 2.0f);
  // A replay reads the buffers as they are then.
  ASSERT_EQ(cudaMemcpy(x, std::vector<float>(4, 5.0f).data(), 16, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // s does not wait for the legacy stream
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(Get(y, 4)[3], 5.0f);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  cudaFree(x);
  cudaFree(y);
}

TEST(CudaEmuRuntimeTest, ACaptureRefusesSynchronisingCallsAndIsInvalidated) {
  cudaStream_t s = NonBlockingStream();
  float* x = Put(std::vector<float>(4, 2.0f));
  std::vector<float> host(4);
  void* more = nullptr;
  for (int call = 0; call < 6; ++call) {
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    cudaError_t e = cudaSuccess;
    switch (call) {
      case 0:
        e = cudaStreamSynchronize(s);
        break;
      case 1:
        e = cudaMemcpy(host.data(), x, 16, cudaMemcpyDeviceToHost);
        break;
      case 2:
        e = cudaMalloc(&more, 16);
        break;
      case 3:
        e = cudaDeviceSynchronize();
        break;
      case 4:
        e = cudaMemcpyAsync(host.data(), x, 16, cudaMemcpyDeviceToHost, s);
        break;
      case 5:
        e = cudaMemcpyAsync(x, host.data(), 16, cudaMemcpyHostToDevice, s);
        break;
    }
    EXPECT_EQ(e, cudaErrorStreamCaptureUnsupported) << call;
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated) << call;
    EXPECT_EQ(graph, nullptr);
  }
  // Relaxed mode allows cudaMalloc, never a synchronisation of the capturing stream.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&more, 16), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  cudaFree(more);
  cudaFree(x);
}

TEST(CudaEmuRuntimeTest, EventsCompleteWhenTheWorkBeforeThemHasRun) {
  cudaStream_t a = NonBlockingStream(), b = NonBlockingStream();
  float* x = Put(std::vector<float>(4, 2.0f));
  float* y = Put(std::vector<float>(4, 0.0f));
  float* host = nullptr;
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&host), 16, cudaHostAllocPortable), cudaSuccess);
  float* z = Put(std::vector<float>(4, 0.0f));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the uploads, before a and b use them
  cudaEvent_t e = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);  // never recorded
  CopyKernel<<<1, 32, 0, a>>>(x, 4, y);
  ASSERT_EQ(cudaEventRecord(e, a), cudaSuccess);
  // b's copy into pinned memory waits for a's kernel, and the host does not wait for it.
  ASSERT_EQ(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
  host[0] = -1.0f;
  ASSERT_EQ(cudaMemcpyAsync(host, y, 16, cudaMemcpyDeviceToHost, b), cudaSuccess);
  EXPECT_EQ(host[0], -1.0f);
  EXPECT_EQ(cudaEventQuery(e), cudaErrorNotReady);  // the device moves on as the host polls
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  EXPECT_EQ(host[0], -1.0f);  // b has not run yet
  cudaEvent_t done = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(done, b), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(done), cudaSuccess);
  EXPECT_EQ(host[0], 2.0f);
  // A pinned source is read when the copy runs, not when it is queued.
  host[1] = 7.0f;
  ASSERT_EQ(cudaMemcpyAsync(z, host, 16, cudaMemcpyHostToDevice, b), cudaSuccess);
  host[1] = 8.0f;
  ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
  EXPECT_EQ(Get(z, 4)[1], 8.0f);
  // 2-D copies: two rows of 8 bytes out of a 16-byte pitch; a third row is past the end.
  float* w = Put({0, 1, 2, 3, 4, 5, 6, 7});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> rows(4, 0.0f);
  ASSERT_EQ(cudaMemcpy2DAsync(rows.data(), 8, w, 16, 8, 2, cudaMemcpyDeviceToHost, b), cudaSuccess);
  EXPECT_EQ(rows, (std::vector<float>{0, 1, 4, 5}));
  EXPECT_DEATH(cudaMemcpy2DAsync(rows.data(), 8, w, 16, 8, 3, cudaMemcpyDeviceToHost, b),
               "40 bytes at offset 0 run past the end of a 32-byte device allocation");
  cudaFree(w);
  ASSERT_EQ(cudaEventDestroy(e), cudaSuccess);
  ASSERT_EQ(cudaEventDestroy(done), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(host), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(a), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(b), cudaSuccess);
  cudaFree(x);
  cudaFree(y);
  cudaFree(z);
}

}  // namespace
