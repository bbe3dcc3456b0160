// The gathered LoRA kernels behind lora.h, and their by-row twins for decode graphs: four
// blocks per row for the shrink (u = bf16(A · x), a warp per rank index), one block per (row,
// 128 outputs) for the expand (y += scale · B · u).
// NOTE(cuda): a decode row reads its adapter's A (rank × in bf16, 128 KiB at rank 16 and in
// 4096) from L2 after the first row of that adapter has brought it in; that is small against
// the base GEMM's weight bytes, and segments of many rows go to cuBLAS instead. What limits
// these kernels is latency, not bytes: with one shrink block per row, a 32-row step at rank 16
// had 128 warps on the whole GPU, each walking 4 ranks × in/32 two-byte loads in a row (≈ 1,800
// dependent steps for the down projection's 14,336 inputs), an estimated ~20 µs per launch and
// ~3 ms per Llama-3-8B step over 224 projections, against a ~4 ms base step; hence four blocks
// per row and 16-byte loads (~16× fewer steps per warp). An estimate by counting, never
// measured: gpu_bench's 8-adapter lines are the figure.
#include <cuda_bf16.h>

#include "kernels/common.cuh"
#include "kernels/lora.h"

namespace spillway::kernels {
namespace {

constexpr int kShrinkThreads = 128;
constexpr int kShrinkGroups = 4;  // blocks per row in the shrink launches (grid.y)
constexpr int kExpandThreads = 128;

struct Segments {
  LoraSegment s[kMaxLoraSegments];
  int count;
};

// The segment and row of the launch's `i`-th row: rows are numbered segment after segment.
__device__ __forceinline__ int FindRow(const Segments& segs, int i, int* row) {
  for (int k = 0; k < segs.count; ++k) {
    const int n = segs.s[k].end - segs.s[k].begin;
    if (i < n) {
      *row = segs.s[k].begin + i;
      return k;
    }
    i -= n;
  }
  return -1;
}

// u_row[r] = bf16(Σ_k xr[k] · A[r, k]) for r < rank: a warp per rank index, the
// kShrinkGroups blocks of a row taking every (kShrinkGroups · 4)-th rank from their own start,
// so a rank-16 row has 16 warps at once. Lanes read 8 bf16 (16 bytes) of x and of A's row per
// step when `in` is a multiple of 8 (the rows are then 16-byte aligned). The gathered and the
// by-row kernels share it (and ExpandRow), so both give the same bits.
__device__ __forceinline__ void ShrinkRow(const __nv_bfloat16* xr, int64_t in,
                                          const __nv_bfloat16* a, int rank, float* u_row) {
  constexpr int kWarps = kShrinkThreads / kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp,
            lane = static_cast<int>(threadIdx.x) % kWarp;
  for (int r = static_cast<int>(blockIdx.y) * kWarps + warp; r < rank;
       r += kShrinkGroups * kWarps) {
    const __nv_bfloat16* ar = a + r * in;
    float acc = 0.0f;
    if (in % 8 == 0) {
      const auto* xv = reinterpret_cast<const uint4*>(xr);
      const auto* av = reinterpret_cast<const uint4*>(ar);
      for (int64_t j = lane; j < in / 8; j += kWarp) {
        const uint4 xq = xv[j], aq = av[j];
        const auto* xe = reinterpret_cast<const __nv_bfloat16*>(&xq);
        const auto* ae = reinterpret_cast<const __nv_bfloat16*>(&aq);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc += __bfloat162float(xe[e]) * __bfloat162float(ae[e]);
      }
    } else {
      for (int64_t j = lane; j < in; j += kWarp)
        acc += __bfloat162float(xr[j]) * __bfloat162float(ar[j]);
    }
    acc = WarpSum(acc);
    if (lane == 0) u_row[r] = __bfloat162float(__float2bfloat16_rn(acc));
  }
}

// yr[o] += scale · Σ_r B[o, r] · u_row[r] for this block's 128 outputs (o = blockIdx.x · 128 +
// thread), r in order; B's row is read 8 bf16 at a time when the rank is a multiple of 8 (the
// same sum). `ur`: shared memory of kMaxGatheredLoraRank floats.
__device__ __forceinline__ void ExpandRow(const __nv_bfloat16* b, int rank, float scale,
                                          const float* u_row, float* ur, float* yr, int64_t out) {
  for (int r = static_cast<int>(threadIdx.x); r < rank; r += kExpandThreads) ur[r] = u_row[r];
  __syncthreads();
  const int64_t o = int64_t{blockIdx.x} * kExpandThreads + threadIdx.x;
  if (o >= out) return;
  const __nv_bfloat16* bo = b + o * rank;
  float acc = 0.0f;
  if (rank % 8 == 0) {
    for (int r = 0; r < rank; r += 8) {
      const uint4 bq = *reinterpret_cast<const uint4*>(bo + r);
      const auto* be = reinterpret_cast<const __nv_bfloat16*>(&bq);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += __bfloat162float(be[e]) * ur[r + e];
    }
  } else {
    for (int r = 0; r < rank; ++r) acc += __bfloat162float(bo[r]) * ur[r];
  }
  yr[o] += scale * acc;
}

// u[i, r] for the launch's row i (u rows of max_rank floats).
__global__ void __launch_bounds__(kShrinkThreads)
    LoraShrinkKernel(const __nv_bfloat16* x, int64_t in, Segments segs, float* u, int max_rank) {
  int row = 0;
  const int k = FindRow(segs, static_cast<int>(blockIdx.x), &row);
  if (k < 0) return;
  const LoraSegment& s = segs.s[k];
  ShrinkRow(x + row * in, in, reinterpret_cast<const __nv_bfloat16*>(s.a), s.rank,
            u + int64_t{blockIdx.x} * max_rank);
}

// y[row] += scale · B · u[i] for the launch's row i = blockIdx.y.
__global__ void __launch_bounds__(kExpandThreads)
    LoraExpandKernel(Segments segs, const float* u, int max_rank, float* y, int64_t out) {
  __shared__ float ur[kMaxGatheredLoraRank];
  int row = 0;
  const int k = FindRow(segs, static_cast<int>(blockIdx.y), &row);
  if (k < 0) return;
  const LoraSegment& s = segs.s[k];
  ExpandRow(reinterpret_cast<const __nv_bfloat16*>(s.b), s.rank, s.scale,
            u + int64_t{blockIdx.y} * max_rank, ur, y + row * out, out);
}

struct ByRowOutputs {
  LoraByRowOutput o[kMaxLoraByRowOutputs];
};
static_assert(kMaxLoraByRowOutputs == 3);

// outs.o[blockIdx.z], by constant indices: a runtime index into a kernel parameter would copy
// the whole array to the stack (local memory).
__device__ __forceinline__ LoraByRowOutput ThisOutput(const ByRowOutputs& outs) {
  return blockIdx.z == 0 ? outs.o[0] : blockIdx.z == 1 ? outs.o[1] : outs.o[2];
}

// Row `row`'s entry `slot`, or null when the row adds nothing there.
__device__ __forceinline__ const LoraTableEntry* RowEntry(const LoraTableEntry* const* tables,
                                                          int64_t slot, int row) {
  const LoraTableEntry* t = tables[row];
  if (t == nullptr || t[slot].a == nullptr) return nullptr;
  return t + slot;
}

// u[z, row] for output z = blockIdx.z (u blocks of rows · kMaxGatheredLoraRank floats).
__global__ void __launch_bounds__(kShrinkThreads)
    LoraShrinkByRowKernel(const __nv_bfloat16* x, int64_t in, const LoraTableEntry* const* tables,
                          ByRowOutputs outs, float* u) {
  const int row = static_cast<int>(blockIdx.x);
  const int64_t rows = gridDim.x;
  const LoraTableEntry* e = RowEntry(tables, ThisOutput(outs).slot, row);
  if (e == nullptr) return;
  ShrinkRow(x + row * in, in, reinterpret_cast<const __nv_bfloat16*>(e->a), e->rank,
            u + (blockIdx.z * rows + row) * kMaxGatheredLoraRank);
}

__global__ void __launch_bounds__(kExpandThreads)
    LoraExpandByRowKernel(const LoraTableEntry* const* tables, ByRowOutputs outs, const float* u) {
  __shared__ float ur[kMaxGatheredLoraRank];
  const LoraByRowOutput out = ThisOutput(outs);
  // The grid covers the widest output; this block may lie past a narrower one (the whole block).
  if (int64_t{blockIdx.x} * kExpandThreads >= out.out) return;
  const int row = static_cast<int>(blockIdx.y);
  const int64_t rows = gridDim.y;
  const LoraTableEntry* e = RowEntry(tables, out.slot, row);
  if (e == nullptr) return;
  ExpandRow(reinterpret_cast<const __nv_bfloat16*>(e->b), e->rank, e->scale,
            u + (blockIdx.z * rows + row) * kMaxGatheredLoraRank, ur, out.y + row * out.out,
            out.out);
}

}  // namespace

cudaError_t AddLoraGathered(const uint16_t* x, int64_t in, const LoraSegment* segments, int count,
                            float* u, float* y, int64_t out, cudaStream_t stream) {
  if (count < 0 || count > kMaxLoraSegments) return cudaErrorInvalidValue;
  Segments segs{};
  int rows = 0, max_rank = 0;
  for (int k = 0; k < count; ++k) {
    const LoraSegment& s = segments[k];
    if (s.rank <= 0 || s.rank > kMaxGatheredLoraRank || s.end < s.begin) {
      return cudaErrorInvalidValue;
    }
    segs.s[k] = s;
    rows += s.end - s.begin;
    if (s.rank > max_rank) max_rank = s.rank;
  }
  segs.count = count;
  if (rows == 0) return cudaSuccess;
  const dim3 shrink_grid(static_cast<unsigned>(rows), kShrinkGroups);
  LoraShrinkKernel<<<shrink_grid, kShrinkThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), in, segs, u, max_rank);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const dim3 grid(BlocksFor(out, kExpandThreads), static_cast<unsigned>(rows));
  LoraExpandKernel<<<grid, kExpandThreads, 0, stream>>>(segs, u, max_rank, y, out);
  return cudaGetLastError();
}

cudaError_t AddLoraByRow(const uint16_t* x, int64_t in, const LoraTableEntry* const* tables,
                         const LoraByRowOutput* outputs, int count, int rows, float* u,
                         cudaStream_t stream) {
  if (rows < 0 || count < 0 || count > kMaxLoraByRowOutputs) return cudaErrorInvalidValue;
  if (rows == 0 || count == 0) return cudaSuccess;
  ByRowOutputs outs{};
  int64_t widest = 0;
  for (int i = 0; i < count; ++i) {
    if (outputs[i].slot < 0 || outputs[i].out <= 0) return cudaErrorInvalidValue;
    outs.o[i] = outputs[i];
    if (outputs[i].out > widest) widest = outputs[i].out;
  }
  const dim3 shrink_grid(static_cast<unsigned>(rows), kShrinkGroups, static_cast<unsigned>(count));
  LoraShrinkByRowKernel<<<shrink_grid, kShrinkThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), in, tables, outs, u);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const dim3 grid(BlocksFor(widest, kExpandThreads), static_cast<unsigned>(rows),
                  static_cast<unsigned>(count));
  LoraExpandByRowKernel<<<grid, kExpandThreads, 0, stream>>>(tables, outs, u);
  return cudaGetLastError();
}

}  // namespace spillway::kernels
