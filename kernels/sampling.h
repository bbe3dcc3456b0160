// Host launcher of the sampling kernel (sampling.cu): turns each row of a logits batch into a
// token id (and, when asked, its logprob and the top-N logprobs) on the device, with the
// row's own parameters, so that only ids and logprobs come back to the host. Called by the
// CudaBackend (engine/cuda/) on the engine-loop thread. Plain C++: compiles without nvcc.
//
// CPU twin: engine::Sampler::Sample (engine/sampler/sampler.h), whose order of operations
// and per-token float arithmetic it follows: stop mask -> logit_bias -> repetition, frequency,
// presence penalties -> greedy argmax (ties: lowest id), or temperature -> top_k (ties with
// the k-th stay) -> top_p (rank order: larger logit, then lower id) -> min_p -> the first kept
// token, in id order, whose cumulative weight exceeds uniform × the kept weight. Logprobs are
// the log-softmax of the raw logits (after the stop mask only). tests/gpu/sampling_test.cc
// compares the two.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/sampler/batch_sampling.h"

namespace spillway::kernels {

struct SamplingArgs {
  // [rows, vocab] f32. The stop-mask entries of each row are set to -inf in place.
  float* logits = nullptr;
  // [rows, vocab] f32 scratch: the processed logits of the rows that have edits.
  float* processed = nullptr;
  int32_t rows = 0;
  int64_t vocab = 0;
  const engine::SampleRow* params = nullptr;  // [rows]
  const engine::TokenEdit* edits = nullptr;   // indexed by SampleRow::edits_begin/end
  // Results: tokens[rows] (-1 when a row has no finite logit), logprobs[rows], and the top
  // logprobs of row r at [r * kMaxDeviceTopLogprobs, + SampleRow::logprobs).
  int32_t* tokens = nullptr;
  float* logprobs = nullptr;
  int32_t* top_tokens = nullptr;
  float* top_logprobs = nullptr;
};

// One block per row. REQUIRES: every row's logprobs <= engine::kMaxDeviceTopLogprobs; edits of
// a row distinct and inside the vocabulary.
cudaError_t SampleRows(const SamplingArgs& args, cudaStream_t stream);

}  // namespace spillway::kernels
