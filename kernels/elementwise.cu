// The row-wise and element-wise kernels of a Llama layer; launchers declared in elementwise.h.
// NOTE(cuda): correct-first and simple: one thread per value (or one block per row for the
// norms), f32 arithmetic in the CPU backend's order where it matters (RoPE angles are formed
// in double and rounded once, as CpuBackend::Rope does), no templates to instantiate.
#include <cuda_bf16.h>

#include "kernels/common.cuh"
#include "kernels/elementwise.h"

namespace spillway::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void EmbedKernel(const __nv_bfloat16* table, const int32_t* tokens, int64_t n,
                            int64_t hidden, float* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n * hidden) return;
  const int64_t t = i / hidden;
  const int64_t c = i % hidden;
  out[i] = __bfloat162float(table[int64_t{tokens[t]} * hidden + c]);
}

// One block per row: sum of squares (after the residual add), then the scaled row.
__global__ void RmsNormKernel(float* residual, const float* x, const float* w, int64_t cols,
                              float eps, float* out, __nv_bfloat16* out_bf16) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  float* rr = residual != nullptr ? residual + row * cols : nullptr;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = xr[i];
    if (rr != nullptr) {
      v += rr[i];
      rr[i] = v;
    }
    sum += v * v;
  }
  __shared__ float partial[kThreads / kWarp];
  sum = WarpSum(sum);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sum;
  __syncthreads();
  if (threadIdx.x < kWarp) {
    float s = threadIdx.x < blockDim.x / kWarp ? partial[threadIdx.x] : 0.0f;
    s = WarpSum(s);
    if (threadIdx.x == 0) partial[0] = s;
  }
  __syncthreads();
  const float scale = rsqrtf(partial[0] / static_cast<float>(cols) + eps);
  const float* src = rr != nullptr ? rr : xr;  // each thread rereads only what it wrote
  float* o = out + row * cols;
  __nv_bfloat16* ob = out_bf16 != nullptr ? out_bf16 + row * cols : nullptr;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = src[i] * scale * w[i];
    o[i] = v;
    if (ob != nullptr) ob[i] = __float2bfloat16_rn(v);
  }
}

// One thread per (token, head, pair).
__global__ void RopeKernel(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                           int64_t num_heads, int64_t head_dim, bool neox) {
  const int64_t pairs = head_dim / 2;
  const int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (idx >= rows * num_heads * pairs) return;
  const int64_t i = idx % pairs;
  const int64_t h = (idx / pairs) % num_heads;
  const int64_t t = idx / (pairs * num_heads);
  const float angle = static_cast<float>(static_cast<double>(positions[t]) * inv_freq[i]);
  float s, c;
  sincosf(angle, &s, &c);
  float* v = x + t * num_heads * head_dim + h * head_dim;
  const int64_t a = neox ? i : 2 * i;
  const int64_t b = neox ? i + pairs : 2 * i + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, float* out,
                             __nv_bfloat16* out_bf16) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  const float v = g / (1.0f + expf(-g)) * up[i];
  out[i] = v;
  if (out_bf16 != nullptr) out_bf16[i] = __float2bfloat16_rn(v);
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows, int64_t cols) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= rows * cols) return;
  y[i] += bias[i % cols];
}

__global__ void F32ToBf16Kernel(const float* src, int64_t n, __nv_bfloat16* dst) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void GatherRowsKernel(const float* x, const int32_t* rows, int64_t num_rows,
                                 int64_t cols, float* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= num_rows * cols) return;
  out[i] = x[int64_t{rows[i / cols]} * cols + i % cols];
}

}  // namespace

cudaError_t EmbedBf16(const uint16_t* table, const int32_t* tokens, int64_t num_tokens,
                      int64_t hidden, float* out, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  EmbedKernel<<<BlocksFor(num_tokens * hidden, kThreads), kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(table), tokens, num_tokens, hidden, out);
  return cudaGetLastError();
}

cudaError_t RmsNorm(float* residual, const float* x, const float* w, int64_t rows, int64_t cols,
                    float eps, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      residual, x, w, cols, eps, out, reinterpret_cast<__nv_bfloat16*>(out_bf16));
  return cudaGetLastError();
}

cudaError_t Rope(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                 int64_t num_heads, int64_t head_dim, bool neox, cudaStream_t stream) {
  const int64_t n = rows * num_heads * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  RopeKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(x, positions, inv_freq, rows,
                                                              num_heads, head_dim, neox);
  return cudaGetLastError();
}

cudaError_t SwiGlu(const float* gate, const float* up, int64_t n, float* out, uint16_t* out_bf16,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(
      gate, up, n, out, reinterpret_cast<__nv_bfloat16*>(out_bf16));
  return cudaGetLastError();
}

cudaError_t AddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  AddBiasKernel<<<BlocksFor(rows * cols, kThreads), kThreads, 0, stream>>>(y, bias, rows, cols);
  return cudaGetLastError();
}

cudaError_t F32ToBf16(const float* src, int64_t n, uint16_t* dst, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  F32ToBf16Kernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(
      src, n, reinterpret_cast<__nv_bfloat16*>(dst));
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* x, const int32_t* rows, int64_t num_rows, int64_t cols,
                       float* out, cudaStream_t stream) {
  if (num_rows * cols == 0) return cudaSuccess;
  GatherRowsKernel<<<BlocksFor(num_rows * cols, kThreads), kThreads, 0, stream>>>(x, rows, num_rows,
                                                                                  cols, out);
  return cudaGetLastError();
}

}  // namespace spillway::kernels
