// Host launcher of the gathered LoRA kernels (lora.cu): y[t] += scale · B · bf16(A · x[t]) for
// the rows of many adapters at once, two launches whatever the mix of adapters. The segments
// travel by value in the kernels' parameters, so nothing is uploaded and a launch is the same
// work in a CUDA graph. CudaBackend::AddLora sends decode-sized segments here (a decode batch
// of sequences with 8 adapters, one row each, would otherwise be 8 pairs of cuBLAS calls per
// projection and layer) and large prefill segments to cuBLAS. Plain C++: compiles without nvcc.
//
// Arithmetic (the same as AddLora's cuBLAS path, tests/gpu/kernels_test.cc checks both): bf16
// x, A and B, f32 accumulation, the rank-sized product u rounded to bf16 before the second
// product, y accumulated in f32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace spillway::kernels {

struct LoraSegment {
  const uint16_t* a = nullptr;  // bf16 [rank, in], row-major
  const uint16_t* b = nullptr;  // bf16 [out, rank], row-major
  int32_t begin = 0;            // rows [begin, end) of x and y use this adapter
  int32_t end = 0;
  int32_t rank = 0;
  float scale = 1.0f;
};

// Segments per launch (they are kernel parameters: 32 × 32 bytes of the 4 KiB allowed).
constexpr int kMaxLoraSegments = 32;
// The largest rank the gathered kernels take (u's row lives in shared memory).
constexpr int kMaxGatheredLoraRank = 256;

// For each of segments[0, count) (count ≤ kMaxLoraSegments, rank ≤ kMaxGatheredLoraRank, no
// two overlapping): y[t] += scale · B · bf16(A · x[t]) for t in [begin, end). x: bf16 [rows, in]
// row-major; y: f32 [rows, out]; u: scratch of at least Σ(end - begin) · max rank floats.
cudaError_t AddLoraGathered(const uint16_t* x, int64_t in, const LoraSegment* segments, int count,
                            float* u, float* y, int64_t out, cudaStream_t stream);

// One (layer, projection) of an adapter as the by-row kernels read it: an adapter's table holds
// one entry per slot (CudaBackend::MakeLoraTable), a null `a` where it leaves the projection
// alone.
struct LoraTableEntry {
  const uint16_t* a = nullptr;  // bf16 [rank, in]
  const uint16_t* b = nullptr;  // bf16 [out, rank]
  int32_t rank = 0;             // at most kMaxGatheredLoraRank
  float scale = 1.0f;
};

// One output of AddLoraByRow: slot `slot` of each row's table added to y ([rows, out] f32).
struct LoraByRowOutput {
  int64_t slot = 0;
  float* y = nullptr;
  int64_t out = 0;
};
// Outputs per AddLoraByRow launch: q, k and v read the same x.
constexpr int kMaxLoraByRowOutputs = 3;

// The same update for decode graphs, where the adapters of a step change from replay to replay
// but a graph's launches may not: row r in [0, rows) takes its adapter from the device array
// `tables` (tables[r]: its adapter's table, or null for a row without one) and, for each of
// outputs[0, count) (count ≤ kMaxLoraByRowOutputs), adds entry `slot` of it to row r of that
// output's y; rows whose table is null or whose entry has no A add nothing. Two launches
// whatever the count; the grids depend on `rows` and the outputs' widths only. Each row's
// arithmetic is the gathered kernels', bit for bit. u: scratch of count · rows ·
// kMaxGatheredLoraRank floats.
cudaError_t AddLoraByRow(const uint16_t* x, int64_t in, const LoraTableEntry* const* tables,
                         const LoraByRowOutput* outputs, int count, int rows, float* u,
                         cudaStream_t stream);

}  // namespace spillway::kernels
