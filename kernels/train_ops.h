// Host launchers of the CUDA kernels of LoRA training (train_ops.cu): the forward ops that keep
// what backward needs, and their hand-written backward. Each one enqueues on `stream` and
// returns at once; every pointer is device memory; activations are dense row-major f32
// [rows, cols]. Called by CudaTrainModel (engine/cuda/cuda_train_model.h). Plain C++: compiles
// without nvcc.
//
// CPU twins: engine/train/ops.h, the same math in the same conventions (every backward *adds*
// into its gradient outputs); tests/gpu/train_ops_test.cc compares each pair.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace spillway::kernels::train {

// y = x · inv · w, inv[r] = 1 / sqrt(mean(x[r]²) + eps), for `rows` rows of `cols`.
// Twin: RmsNormForward.
cudaError_t RmsNormForward(const float* x, const float* w, int64_t rows, int64_t cols, float eps,
                           float* y, float* inv, cudaStream_t stream);
// dx += inv · (dy∘w) − x · inv³ · mean((dy∘w) · x). Twin: RmsNormBackward.
cudaError_t RmsNormBackward(const float* x, const float* w, const float* inv, const float* dy,
                            int64_t rows, int64_t cols, float* dx, cudaStream_t stream);

// In place: each of the `num_heads` heads of row t turns pair i by ±positions[t]·inv_freq[i]
// (the float angle, as the inference kernels); adjacent pairs (2i, 2i+1) or, with `neox`,
// halves (i, i + head_dim/2). `inverse` turns by −angle: the backward. Twin: RopeInPlace.
cudaError_t Rope(float* x, const int32_t* positions, const float* inv_freq, int64_t rows,
                 int64_t num_heads, int64_t head_dim, bool neox, bool inverse,
                 cudaStream_t stream);

// Causal GQA attention over `num_seqs` sequences packed in one flat batch: sequence s has rows
// [seq_starts[s], seq_starts[s+1]) and its probabilities at probs + prob_starts[s]
// ([heads, len, len], row i the softmax over keys 0..i, the rest zero). q, out:
// [rows, heads·head_dim]; k, v: [rows, kv_heads·head_dim]. `max_len`: the longest sequence.
// seq_starts and prob_starts are device arrays of num_seqs + 1. Twin: AttentionForward per
// sequence. A larger max_len is allowed (rows past a sequence's end do nothing); head_dim at
// most 256, heads a multiple of kv_heads and num_seqs·heads·max_len < 2³¹, else
// cudaErrorInvalidValue before any launch.
cudaError_t AttentionForward(const float* q, const float* k, const float* v,
                             const int32_t* seq_starts, const int64_t* prob_starts,
                             int64_t num_seqs, int64_t max_len, int64_t heads, int64_t kv_heads,
                             int64_t head_dim, float* out, float* probs, cudaStream_t stream);
// dq, dk, dv += the gradients of out given dout. `ds`: scratch like probs (the softmax
// gradients, d(loss)/d(score) already times 1/sqrt(head_dim); zero past the diagonal).
// Deterministic (no atomics): one pass for dq and ds by query row, one for dk and dv by key
// row. The shape limits of AttentionForward. Twin: AttentionBackward.
cudaError_t AttentionBackward(const float* q, const float* k, const float* v, const float* probs,
                              const float* dout, const int32_t* seq_starts,
                              const int64_t* prob_starts, int64_t num_seqs, int64_t max_len,
                              int64_t heads, int64_t kv_heads, int64_t head_dim, float* dq,
                              float* dk, float* dv, float* ds, cudaStream_t stream);

// out = silu(gate) · up over n values. Twin: SwiGluForward.
cudaError_t SwiGluForward(const float* gate, const float* up, int64_t n, float* out,
                          cudaStream_t stream);
// dgate += dout · up · σ(gate) · (1 + gate · (1 − σ(gate))); dup += dout · silu(gate).
// Twin: SwiGluBackward.
cudaError_t SwiGluBackward(const float* gate, const float* up, const float* dout, int64_t n,
                           float* dgate, float* dup, cudaStream_t stream);

// For each of `rows` rows of logits [rows, vocab]: loss[r] = −log softmax(row)[targets[r]]
// (the log-sum-exp summed in double), dlogits[r] = softmax(row) − onehot(targets[r]) (weight 1),
// correct[r] = 1 when the row's argmax (the lowest id on ties) is its target, else 0.
// dlogits may alias logits. A target outside [0, vocab) (a caller's bug) gives a NaN loss and
// correct 0. Twin: CrossEntropy and the argmax of TrainModel's head.
cudaError_t CrossEntropy(const float* logits, const int32_t* targets, int64_t rows,
                         int64_t vocab, float* dlogits, double* loss, int32_t* correct,
                         cudaStream_t stream);

// out[i] = u_i < p ? 0 : x[i] · (1 / (1 − p)) for i < count, u_i = (Mix(key ^ i) >> 11) · 2⁻⁵³
// with Mix(z) = splitmix64's step (z + 0x9e3779b97f4a7c15, then its finaliser): the host's mask
// bit for bit (engine/train/train_model.cc ApplyDropout). out may alias x.
cudaError_t Dropout(float p, uint64_t key, const float* x, int64_t count, float* out,
                    cudaStream_t stream);

// y = a + b over n values (y may alias either). Twin: the residual adds of TrainModel.
cudaError_t Add(const float* a, const float* b, int64_t n, float* y, cudaStream_t stream);
// y += alpha · x over n values.
cudaError_t Axpy(float alpha, const float* x, int64_t n, float* y, cudaStream_t stream);

// dst[rows[i]] += src[i] for i < num_rows; rows of `cols` floats; the rows are distinct.
cudaError_t ScatterAddRows(const float* src, const int32_t* rows, int64_t num_rows, int64_t cols,
                           float* dst, cudaStream_t stream);

}  // namespace spillway::kernels::train
