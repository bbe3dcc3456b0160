// Paged KV write and causal GQA attention over the f16 cache; launchers in paged_attention.h.
//
// NOTE(cuda): one kernel serves decode and prefill. A block takes one work item (up to
// MaxAttentionRows / group consecutive tokens of one chunk) for one KV head and one key range
// (split): it stages 32 keys and values at a time in shared memory as f32, and each warp runs
// the online softmax of one query row (token x query head of the KV head's group) over them:
// lane j scores key j, the row's max and sum are warp reductions, the weighted values are
// accumulated in shared memory. So prefill tiles read each key once per 64 query rows, and a
// decode token with a long context is spread over num_splits blocks (flash-decoding) whose
// partial (max, sum, acc) a second kernel merges. Head size is a runtime value (no template
// fan), at most kMaxHeadDim.
#include <cuda_fp16.h>

#include <cmath>

#include "kernels/common.cuh"
#include "kernels/paged_attention.h"

namespace spillway::kernels {
namespace {

constexpr int kBlockTokens = 16;  // kvcache::kBlockTokens (static_assert in the backend)
constexpr int kTile = 32;         // keys staged per step: one per lane
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;

__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slots, int64_t n,
                              int64_t width, __half* cache_k, __half* cache_v) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n * width) return;
  const int64_t t = i / width;
  const int64_t dst = int64_t{slots[t]} * width + i % width;
  cache_k[dst] = __float2half_rn(k[i]);
  cache_v[dst] = __float2half_rn(v[i]);
}

size_t SharedBytes(int max_rows, int d) {
  return sizeof(float) * (2 * size_t(max_rows) * d + 2 * size_t(max_rows) + kTile * size_t(d + 1) +
                          kTile * size_t(d) + kWarps * kTile);
}

__global__ void __launch_bounds__(kThreads) AttentionKernel(AttentionArgs a) {
  extern __shared__ float smem[];
  const int d = a.head_dim;
  const int group = a.num_heads / a.num_kv_heads;
  const AttentionItem item = a.items[blockIdx.x];
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int rows = (item.token_end - item.token_begin) * group;
  const int max_rows = a.max_item_tokens * group;
  float* qs = smem;                  // [max_rows][d]
  float* acc = qs + max_rows * d;    // [max_rows][d]
  float* ml = acc + max_rows * d;    // [max_rows][2]: running max, running sum
  float* ks = ml + 2 * max_rows;     // [kTile][d + 1] (padded: lane j reads row j)
  float* vs = ks + kTile * (d + 1);  // [kTile][d]
  float* ps = vs + kTile * d;        // [kWarps][kTile]: one row's weights per warp
  const int q_width = a.num_heads * d;
  const int64_t kv_width = int64_t{a.num_kv_heads} * d;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;

  for (int idx = threadIdx.x; idx < rows * d; idx += kThreads) {
    const int r = idx / d, i = idx % d;
    const int t = item.token_begin + r / group;
    const int h = kvh * group + r % group;
    qs[idx] = a.q[int64_t{t} * q_width + h * d + i];
    acc[idx] = 0.0f;
  }
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    ml[2 * r] = -INFINITY;
    ml[2 * r + 1] = 0.0f;
  }
  const int num_keys = a.positions[item.token_end - 1] + 1;
  const int k_begin = a.num_splits == 1 ? 0 : split * a.split_keys;
  const int k_end = a.num_splits == 1 ? num_keys : min(num_keys, k_begin + a.split_keys);
  const int32_t* table = a.block_tables + item.table_start;
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  __syncthreads();

  for (int tile = k_begin; tile < k_end; tile += kTile) {
    const int n_tile = min(kTile, k_end - tile);
    // Stage keys and values as f32: 8 halves (16 bytes) per load when the head size allows
    // (every real model: 64, 80, 96, 128, 256), else one at a time.
    const int step = d % 8 == 0 ? 8 : 1;
    const int per_key = d / step;
    for (int idx = threadIdx.x; idx < kTile * per_key; idx += kThreads) {
      const int j = idx / per_key, i = (idx % per_key) * step;
      float kf[8] = {}, vf[8] = {};
      if (j < n_tile) {
        const int key = tile + j;
        const int64_t slot = int64_t{table[key / kBlockTokens]} * kBlockTokens + key % kBlockTokens;
        const int64_t off = slot * kv_width + int64_t{kvh} * d + i;
        const auto* kp = reinterpret_cast<const __half*>(a.cache_k) + off;
        const auto* vp = reinterpret_cast<const __half*>(a.cache_v) + off;
        if (step == 8) {
          const uint4 kq = *reinterpret_cast<const uint4*>(kp);
          const uint4 vq = *reinterpret_cast<const uint4*>(vp);
          const auto* kh = reinterpret_cast<const __half2*>(&kq);
          const auto* vh = reinterpret_cast<const __half2*>(&vq);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 k2 = __half22float2(kh[e]), v2 = __half22float2(vh[e]);
            kf[2 * e] = k2.x;
            kf[2 * e + 1] = k2.y;
            vf[2 * e] = v2.x;
            vf[2 * e + 1] = v2.y;
          }
        } else {
          kf[0] = __half2float(*kp);
          vf[0] = __half2float(*vp);
        }
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {  // constant indices keep kf/vf in registers
        if (e < step) {
          ks[j * (d + 1) + i + e] = kf[e];
          vs[j * d + i + e] = vf[e];
        }
      }
    }
    __syncthreads();
    for (int r = warp; r < rows; r += kWarps) {
      const int t = item.token_begin + r / group;
      const int key = tile + lane;
      float s = -INFINITY;
      if (lane < n_tile && key <= a.positions[t]) {
        const float* qr = qs + r * d;
        const float* kr = ks + lane * (d + 1);
        float dot = 0.0f;
        for (int i = 0; i < d; ++i) dot += qr[i] * kr[i];
        s = dot * scale;
      }
      const float tile_max = WarpMax(s);
      if (tile_max == -INFINITY) continue;  // the whole tile is in this row's future
      const float m_old = ml[2 * r];
      const float m_new = fmaxf(m_old, tile_max);
      const float alpha = expf(m_old - m_new);  // 0 for the first keys (m_old = -inf)
      const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
      const float p_sum = WarpSum(p);
      ps[warp * kTile + lane] = p;
      __syncwarp();
      for (int i = lane; i < d; i += kWarp) {
        float o = acc[r * d + i] * alpha;
        for (int j = 0; j < n_tile; ++j) o += ps[warp * kTile + j] * vs[j * d + i];
        acc[r * d + i] = o;
      }
      if (lane == 0) {
        ml[2 * r] = m_new;
        ml[2 * r + 1] = ml[2 * r + 1] * alpha + p_sum;
      }
      __syncwarp();
    }
    __syncthreads();
  }

  for (int idx = threadIdx.x; idx < rows * d; idx += kThreads) {
    const int r = idx / d, i = idx % d;
    const int t = item.token_begin + r / group;
    const int h = kvh * group + r % group;
    if (a.num_splits == 1) {
      a.out[int64_t{t} * q_width + h * d + i] = acc[idx] / ml[2 * r + 1];
    } else {
      float* part = a.partials + ((int64_t{t} * a.num_heads + h) * a.num_splits + split) * (d + 2);
      part[2 + i] = acc[idx];
      if (i == 0) {
        part[0] = ml[2 * r];
        part[1] = ml[2 * r + 1];
      }
    }
  }
}

// One block per (token, query head): merges the num_splits partial results.
__global__ void CombineKernel(AttentionArgs a) {
  const int d = a.head_dim;
  const int64_t row = blockIdx.x;  // t * num_heads + h
  const float* base = a.partials + row * a.num_splits * (d + 2);
  float m = -INFINITY;
  for (int s = 0; s < a.num_splits; ++s) m = fmaxf(m, base[s * (d + 2)]);
  float l = 0.0f;
  for (int s = 0; s < a.num_splits; ++s) {
    const float ms = base[s * (d + 2)];
    if (ms != -INFINITY) l += base[s * (d + 2) + 1] * expf(ms - m);
  }
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < a.num_splits; ++s) {
      const float ms = base[s * (d + 2)];
      if (ms != -INFINITY) o += base[s * (d + 2) + 2 + i] * expf(ms - m);
    }
    a.out[row * d + i] = o / l;
  }
}

}  // namespace

cudaError_t WriteKv(const float* k, const float* v, const int32_t* slots, int64_t num_tokens,
                    int64_t width, uint16_t* cache_k, uint16_t* cache_v, cudaStream_t stream) {
  if (num_tokens * width == 0) return cudaSuccess;
  WriteKvKernel<<<BlocksFor(num_tokens * width, 256), 256, 0, stream>>>(
      k, v, slots, num_tokens, width, reinterpret_cast<__half*>(cache_k),
      reinterpret_cast<__half*>(cache_v));
  return cudaGetLastError();
}

int MaxAttentionRows(int head_dim) { return head_dim <= 128 ? 64 : 32; }

cudaError_t PagedAttention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.num_items == 0) return cudaSuccess;
  if (args.head_dim <= 0 || args.head_dim > kMaxHeadDim || args.num_kv_heads <= 0 ||
      args.num_heads % args.num_kv_heads != 0 || args.num_splits < 1 ||
      (args.num_splits > 1 && (args.partials == nullptr || args.split_keys % kTile != 0))) {
    return cudaErrorInvalidValue;
  }
  const int group = args.num_heads / args.num_kv_heads;
  const size_t smem = SharedBytes(args.max_item_tokens * group, args.head_dim);
  // The attribute is per kernel and process-wide; raise it only when a launch needs more.
  static size_t smem_allowed = 48 << 10;
  if (smem > smem_allowed) {
    const cudaError_t e = cudaFuncSetAttribute(
        AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    smem_allowed = smem;
  }
  const dim3 grid(static_cast<unsigned>(args.num_items), static_cast<unsigned>(args.num_kv_heads),
                  static_cast<unsigned>(args.num_splits));
  AttentionKernel<<<grid, kThreads, smem, stream>>>(args);
  if (args.num_splits > 1) {
    CombineKernel<<<static_cast<unsigned>(args.num_tokens) * args.num_heads, kThreads, 0, stream>>>(
        args);
  }
  return cudaGetLastError();
}

}  // namespace spillway::kernels
