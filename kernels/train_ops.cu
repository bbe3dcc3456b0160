// The CUDA kernels of LoRA training: forward ops that keep what backward needs and their
// hand-written backward; launchers declared in train_ops.h, CPU twins in engine/train/ops.h.
//
// NOTE(trainkern): correct-first and deterministic, as the inference kernels of elementwise.cu:
// one thread per value for the element-wise ops, one block per row for the row reductions
// (RMSNorm, cross-entropy), and for attention one block per (sequence, head, query row) over
// the materialised probabilities (the host's layout, which backward reads back). No atomics
// anywhere: every output element has exactly one writer, and every reduction runs in a fixed
// order, so two runs of a pass give the same bits. Where the host twin computes a scalar in
// double (the RMSNorm scale, the sigmoid, RoPE's cos/sin, the cross-entropy's exp and
// log-sum-exp, the dropout uniform) so does the kernel; the long sums are f32 as in
// TrainModel<float>. Ops the tests require bit-exact (Add, Axpy, ScatterAddRows, Dropout, the
// rotation of RoPE) use round-to-nearest intrinsics where nvcc would otherwise fuse a multiply
// and an add that the host rounds separately.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/train_ops.h"

namespace spillway::kernels::train {
namespace {

constexpr int kThreads = 256;      // element-wise ops and RMSNorm rows
constexpr int kCeThreads = 512;    // cross-entropy rows (vocab up to 256k)
constexpr int kAttnThreads = 128;  // attention rows
constexpr int kMaxWarps = 1024 / kWarp;
constexpr int kMaxHeadDim = 256;  // Llama 128, SmolLM2 64; kept in shared memory

// ---- block reductions (every thread of the block gets the result) ----
// `red` is shared scratch of kMaxWarps entries; the leading barrier lets a kernel call these
// back to back with the same scratch. blockDim.x must be a multiple of kWarp.

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T, typename Op>
__device__ __forceinline__ T WarpReduce(T v, Op op) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// `identity`: what the lanes past the block's last warp contribute.
template <typename T, typename Op>
__device__ T BlockReduce(T v, T identity, T* red, Op op) {
  v = WarpReduce(v, op);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) red[threadIdx.x / kWarp] = v;
  __syncthreads();
  const int lane = threadIdx.x % kWarp;
  return WarpReduce(lane < static_cast<int>(blockDim.x / kWarp) ? red[lane] : identity, op);
}

__device__ float BlockSum(float v, float* red) { return BlockReduce(v, 0.0f, red, SumOp{}); }
__device__ float BlockMax(float v, float* red) { return BlockReduce(v, -INFINITY, red, MaxOp{}); }
__device__ double BlockSumD(double v, double* red) { return BlockReduce(v, 0.0, red, SumOp{}); }

// (value, index) pairs: the larger value wins, equal values go to the lower index.
__device__ __forceinline__ void ArgmaxMerge(float& v, int64_t& i, float ov, int64_t oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__device__ void BlockArgmax(float& v, int64_t& i, float* red_v, int64_t* red_i) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    ArgmaxMerge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  }
  __syncthreads();
  if (threadIdx.x % kWarp == 0) {
    red_v[threadIdx.x / kWarp] = v;
    red_i[threadIdx.x / kWarp] = i;
  }
  __syncthreads();
  const int lane = threadIdx.x % kWarp;
  const bool have = lane < static_cast<int>(blockDim.x / kWarp);
  v = have ? red_v[lane] : -INFINITY;
  i = have ? red_i[lane] : INT64_MAX;
  for (int o = kWarp / 2; o > 0; o /= 2) {
    ArgmaxMerge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  }
}

// ---- RMSNorm: one block per row ----

__global__ void __launch_bounds__(kThreads)
    RmsNormForwardKernel(const float* x, const float* w, int64_t cols, float eps, float* y,
                         float* inv) {
  __shared__ float red[kMaxWarps];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += xr[j] * xr[j];
  ss = BlockSum(ss, red);
  // As the twin: the scale in double from the (here f32) sum of squares, rounded once.
  const float r = static_cast<float>(
      1.0 / sqrt(static_cast<double>(ss) / static_cast<double>(cols) + static_cast<double>(eps)));
  if (threadIdx.x == 0) inv[row] = r;
  float* yr = y + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = xr[j] * r * w[j];
}

__global__ void __launch_bounds__(kThreads)
    RmsNormBackwardKernel(const float* x, const float* w, const float* inv, const float* dy,
                          int64_t cols, float* dx) {
  __shared__ float red[kMaxWarps];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  const float* dyr = dy + row * cols;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dot += dyr[j] * w[j] * xr[j];
  dot = BlockSum(dot, red);
  const float r = inv[row];
  const float c = r * r * r * dot / static_cast<float>(cols);
  float* dxr = dx + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    dxr[j] += r * dyr[j] * w[j] - xr[j] * c;
  }
}

// ---- RoPE: one thread per (row, head, pair) ----

__global__ void RopeKernel(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                           int64_t num_heads, int64_t head_dim, bool neox, bool inverse) {
  const int64_t pairs = head_dim / 2;
  const int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (idx >= rows * num_heads * pairs) return;
  const int64_t i = idx % pairs;
  const int64_t h = (idx / pairs) % num_heads;
  const int64_t t = idx / (pairs * num_heads);
  // The twin's float angle (the exact product rounded once), then cos and sin in double
  // rounded to f32, so the factors match the host's bit for bit but for the last-ulp
  // differences of the two libraries' double sin/cos.
  const float angle = static_cast<float>(static_cast<double>(positions[t]) * inv_freq[i]);
  double sd, cd;
  sincos(static_cast<double>(angle), &sd, &cd);
  const float c = static_cast<float>(cd);
  const float s = inverse ? -static_cast<float>(sd) : static_cast<float>(sd);
  float* v = x + t * num_heads * head_dim + h * head_dim;
  const int64_t a = neox ? i : 2 * i;
  const int64_t b = neox ? i + pairs : 2 * i + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  v[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// ---- attention ----

// One block of the attention kernels: block b is (sequence, head, row) with the row fastest;
// `head` is a query head for the row kernels, a KV head for the key-row kernel. Rows past the
// sequence's length (shorter than max_len) have nothing to do.
struct AttnBlock {
  int64_t seq, head, row, start, len;
  int64_t kv_head;              // the query head's KV head (row kernels)
  int64_t q_stride, kv_stride;  // floats per token of q / dout and of k / v
};

__device__ __forceinline__ AttnBlock DecodeBlock(const int32_t* seq_starts, int64_t max_len,
                                                 int64_t block_heads, int64_t heads,
                                                 int64_t kv_heads, int hd) {
  AttnBlock r;
  const int64_t b = blockIdx.x;
  r.row = b % max_len;
  r.head = (b / max_len) % block_heads;
  r.seq = b / (max_len * block_heads);
  r.start = seq_starts[r.seq];
  r.len = seq_starts[r.seq + 1] - r.start;
  r.kv_head = r.head / (heads / kv_heads);
  r.q_stride = heads * hd;
  r.kv_stride = kv_heads * hd;
  return r;
}

// Copies the hd floats at src into shared memory for the whole block.
__device__ void LoadHead(const float* src, int hd, float* dst) {
  for (int e = threadIdx.x; e < hd; e += blockDim.x) dst[e] = src[e];
  __syncthreads();
}

// row[j] = scale · (x · base[j · stride .. + hd]) for j ≤ i: one warp per key, lanes across
// the head (coalesced reads); x in shared memory. Returns the largest value this thread's warp
// wrote (−inf if none). The caller's next barrier publishes `row`.
__device__ float WarpDots(const float* x, const float* base, int64_t stride, int64_t i, int hd,
                          float scale, float* row) {
  const int lane = threadIdx.x % kWarp;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x / kWarp; j <= i; j += blockDim.x / kWarp) {
    const float* bj = base + j * stride;
    float dot = 0.0f;
    for (int e = lane; e < hd; e += kWarp) dot += x[e] * bj[e];
    const float s = WarpSum(dot) * scale;
    if (lane == 0) row[j] = s;
    mx = fmaxf(mx, s);
  }
  return mx;
}

// dst[e] (+)= Σ_{t < n} coef[t] · (base + t · stride)[e] for e < hd, by the whole block. With
// hd below the block size the terms are split among blockDim / hd groups of hd threads whose
// partial sums meet in `partial` (kAttnThreads floats) in a fixed order. Every thread of the
// block must call it (it has barriers); the leading one lets `coef` be written just before.
__device__ void WeightedRowSum(int64_t n, int hd, const float* coef, const float* base,
                               int64_t stride, float* partial, float* dst, bool add) {
  __syncthreads();
  const int groups = hd >= static_cast<int>(blockDim.x) ? 1 : static_cast<int>(blockDim.x) / hd;
  if (groups == 1) {
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
      float acc = 0.0f;
      for (int64_t t = 0; t < n; ++t) acc += coef[t] * base[t * stride + e];
      dst[e] = add ? dst[e] + acc : acc;
    }
    return;
  }
  const int g = threadIdx.x / hd, e = threadIdx.x % hd;
  float acc = 0.0f;
  if (g < groups) {
    for (int64_t t = g; t < n; t += groups) acc += coef[t] * base[t * stride + e];
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < hd) {
    float sum = 0.0f;
    for (int k = 0; k < groups; ++k) sum += partial[k * hd + threadIdx.x];
    dst[threadIdx.x] = add ? dst[threadIdx.x] + sum : sum;
  }
}

// One block per (sequence, head, query row i): scores of keys 0..i into the probabilities row,
// block max and sum, normalised in place, the rest of the row zeroed, then
// out_i = Σ_j p_ij v_j.
__global__ void __launch_bounds__(kAttnThreads)
    AttentionForwardKernel(const float* q, const float* k, const float* v,
                           const int32_t* seq_starts, const int64_t* prob_starts, int64_t max_len,
                           int64_t heads, int64_t kv_heads, int hd, float scale, float* out,
                           float* probs) {
  __shared__ float qs[kMaxHeadDim];
  __shared__ float red[kMaxWarps];
  __shared__ float partial[kAttnThreads];
  const AttnBlock r = DecodeBlock(seq_starts, max_len, heads, heads, kv_heads, hd);
  if (r.row >= r.len) return;  // the whole block: no barrier is left waiting
  const int64_t i = r.row, len = r.len;
  const int64_t q_off = (r.start + i) * r.q_stride + r.head * hd;
  const int64_t kv_off = r.start * r.kv_stride + r.kv_head * hd;
  LoadHead(q + q_off, hd, qs);
  float* p = probs + prob_starts[r.seq] + (r.head * len + i) * len;
  // BlockMax's barriers also publish the scores.
  const float mx = BlockMax(WarpDots(qs, k + kv_off, r.kv_stride, i, hd, scale, p), red);

  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
    const float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = BlockSum(sum, red);
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) p[j] = j <= i ? p[j] / sum : 0.0f;
  WeightedRowSum(i + 1, hd, p, v + kv_off, r.kv_stride, partial, out + q_off, /*add=*/false);
}

// Backward, pass 1: one block per (sequence, head, query row i). dp_j = dout_i · v_j (kept in
// the ds row), dot = Σ_j p_ij dp_j, ds_ij = p_ij (dp_j − dot) · scale, dq_i += Σ_j ds_ij k_j.
__global__ void __launch_bounds__(kAttnThreads)
    AttentionBackwardRowsKernel(const float* k, const float* v, const float* probs,
                                const float* dout, const int32_t* seq_starts,
                                const int64_t* prob_starts, int64_t max_len, int64_t heads,
                                int64_t kv_heads, int hd, float scale, float* dq, float* ds) {
  __shared__ float dos[kMaxHeadDim];
  __shared__ float red[kMaxWarps];
  __shared__ float partial[kAttnThreads];
  const AttnBlock r = DecodeBlock(seq_starts, max_len, heads, heads, kv_heads, hd);
  if (r.row >= r.len) return;
  const int64_t i = r.row, len = r.len;
  const int64_t q_off = (r.start + i) * r.q_stride + r.head * hd;
  const int64_t kv_off = r.start * r.kv_stride + r.kv_head * hd;
  LoadHead(dout + q_off, hd, dos);
  const int64_t off = prob_starts[r.seq] + (r.head * len + i) * len;
  const float* p = probs + off;
  float* d = ds + off;
  WarpDots(dos, v + kv_off, r.kv_stride, i, hd, 1.0f, d);
  __syncthreads();
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) dot += p[j] * d[j];
  dot = BlockSum(dot, red);
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    d[j] = j <= i ? p[j] * (d[j] - dot) * scale : 0.0f;
  }
  WeightedRowSum(i + 1, hd, d, k + kv_off, r.kv_stride, partial, dq + q_off, /*add=*/true);
}

// Backward, pass 2: one block per (sequence, KV head, key row j), summing over the heads h of
// its group and the query rows i ≥ j: dk_j += Σ ds_hij q_hi, dv_j += Σ p_hij dout_hi. Threads
// as WeightedRowSum: blockDim / hd groups split the query rows, their partials meet in shared
// memory in a fixed order.
__global__ void __launch_bounds__(kAttnThreads)
    AttentionBackwardKeysKernel(const float* q, const float* probs, const float* dout,
                                const float* ds, const int32_t* seq_starts,
                                const int64_t* prob_starts, int64_t max_len, int64_t heads,
                                int64_t kv_heads, int hd, float* dk, float* dv) {
  __shared__ float partial_k[kAttnThreads];
  __shared__ float partial_v[kAttnThreads];
  const AttnBlock r = DecodeBlock(seq_starts, max_len, kv_heads, heads, kv_heads, hd);
  if (r.row >= r.len) return;
  const int64_t j = r.row, len = r.len;
  const int64_t group = heads / kv_heads;
  const int64_t q_stride = r.q_stride, kv_stride = r.kv_stride;
  const int64_t pbase = prob_starts[r.seq];
  const int groups = hd >= static_cast<int>(blockDim.x) ? 1 : static_cast<int>(blockDim.x) / hd;
  float* dkj = dk + (r.start + j) * kv_stride + r.head * hd;
  float* dvj = dv + (r.start + j) * kv_stride + r.head * hd;

  // Thread (g, e): query rows i = j + g, j + g + groups, … of every head in the group, for
  // dimension e (and e + blockDim, … when hd exceeds the block).
  const int g = groups == 1 ? 0 : threadIdx.x / hd;
  const int e0 = groups == 1 ? threadIdx.x : threadIdx.x % hd;
  const int e_step = groups == 1 ? blockDim.x : hd;
  for (int e = e0; e < hd && g < groups; e += e_step) {
    float acc_k = 0.0f, acc_v = 0.0f;
    for (int64_t hh = r.head * group; hh < (r.head + 1) * group; ++hh) {
      const int64_t col = pbase + hh * len * len + j;  // (hh, i, j) = col + i·len
      for (int64_t i = j + g; i < len; i += groups) {
        const int64_t qo = (r.start + i) * q_stride + hh * hd + e;
        acc_k += ds[col + i * len] * q[qo];
        acc_v += probs[col + i * len] * dout[qo];
      }
    }
    if (groups == 1) {
      dkj[e] += acc_k;
      dvj[e] += acc_v;
    } else {
      partial_k[threadIdx.x] = acc_k;
      partial_v[threadIdx.x] = acc_v;
    }
  }
  if (groups == 1) return;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < hd) {
    float sk = 0.0f, sv = 0.0f;
    for (int k = 0; k < groups; ++k) {
      sk += partial_k[k * hd + threadIdx.x];
      sv += partial_v[k * hd + threadIdx.x];
    }
    dkj[threadIdx.x] += sk;
    dvj[threadIdx.x] += sv;
  }
}

// ---- SwiGLU: one thread per value; the sigmoid in double as the twin ----

__device__ __forceinline__ float Sigmoid(float g) {
  return static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(g))));
}

__global__ void SwiGluForwardKernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = g * Sigmoid(g) * up[i];
}

__global__ void SwiGluBackwardKernel(const float* gate, const float* up, const float* dout,
                                     int64_t n, float* dgate, float* dup) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i], u = up[i], d = dout[i];
  const float sig = Sigmoid(g);
  dup[i] += d * (g * sig);
  dgate[i] += d * u * sig * (1.0f + g * (1.0f - sig));
}

// ---- cross-entropy: one block per row ----
// Every read of the row happens before the barrier ahead of the write loop, and in the write
// loop each thread reads only the values it then overwrites: so dlogits may alias logits.

__global__ void __launch_bounds__(kCeThreads)
    CrossEntropyKernel(const float* logits, const int32_t* targets, int64_t vocab, float* dlogits,
                       double* loss, int32_t* correct) {
  __shared__ float red_v[kMaxWarps];
  __shared__ int64_t red_i[kMaxWarps];
  __shared__ double red_d[kMaxWarps];
  const int64_t row = blockIdx.x;
  const float* l = logits + row * vocab;
  const int64_t target = targets[row];
  const bool valid = target >= 0 && target < vocab;
  const float l_target = valid ? l[target] : NAN;

  // Argmax (the lowest id on ties: each thread keeps its first maximum, the merge the lowest
  // index among equal values); its value is the row's max.
  float best = -INFINITY;
  int64_t best_id = INT64_MAX;
  if (threadIdx.x < vocab) {
    best = l[threadIdx.x];
    best_id = threadIdx.x;
  }
  for (int64_t j = threadIdx.x + blockDim.x; j < vocab; j += blockDim.x) {
    if (l[j] > best) {
      best = l[j];
      best_id = j;
    }
  }
  BlockArgmax(best, best_id, red_v, red_i);
  const float mx = best;

  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    sum += exp(static_cast<double>(l[j] - mx));
  }
  sum = BlockSumD(sum, red_d);  // ends with a barrier: every read of the row is done
  const double lse = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) {
    // An out-of-range target is the caller's bug: a NaN loss shows it without a stray read.
    loss[row] = lse - static_cast<double>(l_target);
    correct[row] = valid && best_id == target ? 1 : 0;
  }
  float* dl = dlogits + row * vocab;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    float d = static_cast<float>(exp(static_cast<double>(l[j]) - lse));
    if (j == target) d -= 1.0f;
    dl[j] = d;
  }
}

// ---- element-wise ----

// splitmix64's step: engine/train/train_model.cc Mix, bit for bit.
__device__ __forceinline__ uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__global__ void DropoutKernel(float p, uint64_t key, float keep_scale, const float* x,
                              int64_t count, float* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= count) return;
  const double u = static_cast<double>(Mix(key ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
  out[i] = u < p ? 0.0f : x[i] * keep_scale;
}

__global__ void AddKernel(const float* a, const float* b, int64_t n, float* y) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  y[i] = a[i] + b[i];
}

__global__ void AxpyKernel(float alpha, const float* x, int64_t n, float* y) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= n) return;
  y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));  // the host's two roundings, not an FMA
}

__global__ void ScatterAddRowsKernel(const float* src, const int32_t* rows, int64_t num_rows,
                                     int64_t cols, float* dst) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= num_rows * cols) return;
  dst[int64_t{rows[i / cols]} * cols + i % cols] += src[i];
}

// The attention launchers' shared checks: a head size the kernels hold in shared memory, a
// whole number of query heads per KV head, a grid that fits.
bool AttentionShapeOk(int64_t num_seqs, int64_t max_len, int64_t heads, int64_t kv_heads,
                      int64_t head_dim) {
  return head_dim > 0 && head_dim <= kMaxHeadDim && kv_heads > 0 && heads >= kv_heads &&
         heads % kv_heads == 0 && num_seqs * heads * max_len <= int64_t{0x7fffffff};
}

float AttentionScale(int64_t head_dim) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));  // as the twin
}

}  // namespace

cudaError_t RmsNormForward(const float* x, const float* w, int64_t rows, int64_t cols, float eps,
                           float* y, float* inv, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormForwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, cols, eps, y,
                                                                             inv);
  return cudaGetLastError();
}

cudaError_t RmsNormBackward(const float* x, const float* w, const float* inv, const float* dy,
                            int64_t rows, int64_t cols, float* dx, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormBackwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, inv, dy, cols,
                                                                              dx);
  return cudaGetLastError();
}

cudaError_t Rope(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                 int64_t num_heads, int64_t head_dim, bool neox, bool inverse,
                 cudaStream_t stream) {
  const int64_t n = rows * num_heads * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  RopeKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(x, positions, inv_freq, rows,
                                                              num_heads, head_dim, neox, inverse);
  return cudaGetLastError();
}

cudaError_t AttentionForward(const float* q, const float* k, const float* v,
                             const int32_t* seq_starts, const int64_t* prob_starts,
                             int64_t num_seqs, int64_t max_len, int64_t heads, int64_t kv_heads,
                             int64_t head_dim, float* out, float* probs, cudaStream_t stream) {
  if (num_seqs == 0 || max_len == 0 || heads == 0) return cudaSuccess;
  if (!AttentionShapeOk(num_seqs, max_len, heads, kv_heads, head_dim)) {
    return cudaErrorInvalidValue;
  }
  const auto blocks = static_cast<unsigned>(num_seqs * heads * max_len);
  AttentionForwardKernel<<<blocks, kAttnThreads, 0, stream>>>(
      q, k, v, seq_starts, prob_starts, max_len, heads, kv_heads, static_cast<int>(head_dim),
      AttentionScale(head_dim), out, probs);
  return cudaGetLastError();
}

cudaError_t AttentionBackward(const float* q, const float* k, const float* v, const float* probs,
                              const float* dout, const int32_t* seq_starts,
                              const int64_t* prob_starts, int64_t num_seqs, int64_t max_len,
                              int64_t heads, int64_t kv_heads, int64_t head_dim, float* dq,
                              float* dk, float* dv, float* ds, cudaStream_t stream) {
  if (num_seqs == 0 || max_len == 0 || heads == 0) return cudaSuccess;
  if (!AttentionShapeOk(num_seqs, max_len, heads, kv_heads, head_dim)) {
    return cudaErrorInvalidValue;
  }
  const int hd = static_cast<int>(head_dim);
  AttentionBackwardRowsKernel<<<static_cast<unsigned>(num_seqs * heads * max_len), kAttnThreads, 0,
                                stream>>>(k, v, probs, dout, seq_starts, prob_starts, max_len,
                                          heads, kv_heads, hd, AttentionScale(head_dim), dq, ds);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  AttentionBackwardKeysKernel<<<static_cast<unsigned>(num_seqs * kv_heads * max_len), kAttnThreads,
                                0, stream>>>(q, probs, dout, ds, seq_starts, prob_starts, max_len,
                                             heads, kv_heads, hd, dk, dv);
  return cudaGetLastError();
}

cudaError_t SwiGluForward(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluForwardKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t SwiGluBackward(const float* gate, const float* up, const float* dout, int64_t n,
                           float* dgate, float* dup, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluBackwardKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(gate, up, dout, n, dgate,
                                                                        dup);
  return cudaGetLastError();
}

cudaError_t CrossEntropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                         float* dlogits, double* loss, int32_t* correct, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (vocab <= 0) return cudaErrorInvalidValue;
  CrossEntropyKernel<<<static_cast<unsigned>(rows), kCeThreads, 0, stream>>>(
      logits, targets, vocab, dlogits, loss, correct);
  return cudaGetLastError();
}

cudaError_t Dropout(float p, uint64_t key, const float* x, int64_t count, float* out,
                    cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const float keep_scale = 1.0f / (1.0f - p);  // in f32, as ApplyDropout<float>
  DropoutKernel<<<BlocksFor(count, kThreads), kThreads, 0, stream>>>(p, key, keep_scale, x, count,
                                                                     out);
  return cudaGetLastError();
}

cudaError_t Add(const float* a, const float* b, int64_t n, float* y, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(a, b, n, y);
  return cudaGetLastError();
}

cudaError_t Axpy(float alpha, const float* x, int64_t n, float* y, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AxpyKernel<<<BlocksFor(n, kThreads), kThreads, 0, stream>>>(alpha, x, n, y);
  return cudaGetLastError();
}

cudaError_t ScatterAddRows(const float* src, const int32_t* rows, int64_t num_rows, int64_t cols,
                           float* dst, cudaStream_t stream) {
  if (num_rows * cols == 0) return cudaSuccess;
  ScatterAddRowsKernel<<<BlocksFor(num_rows * cols, kThreads), kThreads, 0, stream>>>(
      src, rows, num_rows, cols, dst);
  return cudaGetLastError();
}

}  // namespace spillway::kernels::train
