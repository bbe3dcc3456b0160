// Model: one forward pass over a flat batch (DESIGN.md "flow of a request", step 3). A batch
// holds chunks of many sequences side by side — prefill chunks and single decode tokens in the
// same call — each with its positions and KV block table. Engine-loop thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler/batch_sampling.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "engine/weights/model_file.h"
#include "kvcache/ids.h"

namespace spillway::engine {

namespace lora {
class BackendLoraAdapter;  // engine/lora/backend_adapter.h
}  // namespace lora

// Tokens [first_position, first_position + num_tokens) of one sequence.
struct BatchChunk {
  int32_t num_tokens = 0;
  int32_t first_position = 0;
  // Covers at least first_position + num_tokens tokens (kvcache::KvCache::Grow).
  std::span<const kvcache::BlockId> block_table = {};
  bool want_logits = false;  // logits of this chunk's last token
  // The LoRA adapter this chunk's sequence runs with; nullptr = the base model. Chunks with
  // different adapters (or none) share one batch.
  const lora::BackendLoraAdapter* adapter = nullptr;
};

struct Batch {
  std::vector<TokenId> tokens;  // all chunks' tokens, chunk after chunk
  std::vector<BatchChunk> chunks;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Runs `batch` and writes, for each chunk with want_logits (in chunk order), its last
  // token's logits to `logits` ([num_wanted, vocab_size], resized here). Fails with
  // InvalidArgument on a malformed batch and Unavailable/Internal on a backend failure.
  [[nodiscard]] virtual absl::Status Forward(const Batch& batch, std::vector<float>* logits) = 0;
  // Whether ForwardAndSample is implemented (the backend samples where the logits are,
  // Backend::SupportsSampling).
  virtual bool SupportsDeviceSampling() const { return false; }
  // Forward() that samples instead of returning logits: the logits row of the i-th chunk with
  // want_logits becomes (*samples)[i], as sampling.rows[i] describes it (Sampler::DescribeRow);
  // only ids and logprobs leave the backend. InvalidArgument when the row counts differ.
  [[nodiscard]] virtual absl::Status ForwardAndSample(
      [[maybe_unused]] const Batch& batch, [[maybe_unused]] const BatchSampling& sampling,
      [[maybe_unused]] std::vector<SampleResult>* samples) {
    return absl::UnimplementedError("this model does not sample on its backend");
  }
  // CUDA graphs for decode steps (docs/gpu.md): on or off (the default); FailedPrecondition
  // where the backend has none.
  [[nodiscard]] virtual absl::Status SetDecodeGraphs(bool on) {
    return on ? absl::FailedPreconditionError("this model has no CUDA graphs for decode steps")
              : absl::OkStatus();
  }
};

}  // namespace spillway::engine
