// Host launchers of the row-wise and element-wise CUDA kernels of a Llama layer (elementwise.cu).
// Each one enqueues on `stream` and returns at once; every pointer is device memory and every
// activation is a dense row-major f32 [rows, cols] buffer. Called by the CudaBackend
// (engine/cuda/) on the engine-loop thread. Plain C++: compiles without nvcc.
//
// CPU twins (tests/gpu/kernels_test.cc compares them): EmbedBf16 ~ CpuBackend::Embed,
// RmsNorm / AddRmsNorm ~ CpuBackend::RmsNorm / AddRmsNorm, Rope ~ CpuBackend::Rope, SwiGlu ~
// CpuBackend::SwiGlu, AddBias ~ CpuBackend::AddBias, GatherRows ~ CpuBackend::GatherRows.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace spillway::kernels {

// out[t] = f32(table[tokens[t]]): table bf16 [vocab, hidden].
cudaError_t EmbedBf16(const uint16_t* table, const int32_t* tokens, int64_t num_tokens,
                      int64_t hidden, float* out, cudaStream_t stream);

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * w. With `residual` non-null: residual[r] += x[r]
// first, and the sum is what is normalised (the fused residual add). `out` may not alias x.
// With `out_bf16` non-null, also writes bf16(out) there (the next GEMM's input).
cudaError_t RmsNorm(float* residual, const float* x, const float* w, int64_t rows, int64_t cols,
                    float eps, float* out, uint16_t* out_bf16, cudaStream_t stream);

// Rotates each of the `num_heads` heads of x[t] ([rows, num_heads * head_dim]) by
// positions[t] * inv_freq[i] for pair i: adjacent pairs (2i, 2i+1) or, with `neox`, halves
// (i, i + head_dim/2). inv_freq: [head_dim / 2] f32.
cudaError_t Rope(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                 int64_t num_heads, int64_t head_dim, bool neox, cudaStream_t stream);

// out = silu(gate) * up over n values; out may alias gate. With `out_bf16` non-null, also
// writes bf16(out) there.
cudaError_t SwiGlu(const float* gate, const float* up, int64_t n, float* out, uint16_t* out_bf16,
                   cudaStream_t stream);

// y[r] += bias for each of `rows` rows of `cols`.
cudaError_t AddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// dst = bf16(src), round to nearest even: the GEMM inputs.
cudaError_t F32ToBf16(const float* src, int64_t n, uint16_t* dst, cudaStream_t stream);

// out[i] = x[rows[i]] for i < num_rows; rows of `cols` floats.
cudaError_t GatherRows(const float* x, const int32_t* rows, int64_t num_rows, int64_t cols,
                       float* out, cudaStream_t stream);

}  // namespace spillway::kernels
