// LlamaModel: the Llama-family decoder (Llama 2/3/3.1, SmolLM, Mistral, Qwen2) written once on
// top of the Backend interface, so that the CPU and CUDA backends run the same code.
// Created at start-up from a ModelFile; owns its backend weights and the backend's KV tensors.
// Engine-loop thread only.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/lora/lora_adapter.h"
#include "engine/model.h"

namespace spillway::engine {

class LlamaModel final : public Model {
 public:
  // Loads the weights of `file` into `backend` and allocates a KV cache of `kv_blocks` blocks.
  // `file` and `backend` must outlive the model (CPU weights point into the file's mapping).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const ModelFile& file, Backend& backend,
                                                            int32_t kv_blocks);

  const ModelConfig& config() const override { return config_; }
  [[nodiscard]] absl::Status Forward(const Batch& batch, std::vector<float>* logits) override;
  bool SupportsDeviceSampling() const override { return backend_.SupportsSampling(); }
  // Decode graphs (Backend::RunDecodeGraph): steps of at most kMaxDecodeGraphRows one-token
  // chunks, all wanting logits and each without an adapter or with one the backend made a
  // table of (BackendLoraAdapter::table), run as the graph of their row bucket and adapted
  // projections. FailedPrecondition on a backend without them. Off by default.
  [[nodiscard]] absl::Status SetDecodeGraphs(bool on) override;
  [[nodiscard]] absl::Status ForwardAndSample(const Batch& batch, const BatchSampling& sampling,
                                              std::vector<SampleResult>* samples) override;
  // The backend weight made of the file's tensor `name` (GGUF naming), or null. The weights
  // never change after Create, so other users on other threads may read them (CudaTrainModel
  // trains on the serving model's GPU weights) while the model lives.
  const BackendWeight* FindWeight(std::string_view name) const;

 private:
  struct Layer {
    std::unique_ptr<BackendWeight> attn_norm, wq, wk, wv, wo, bq, bk, bv;
    std::unique_ptr<BackendWeight> ffn_norm, gate, up, down;
  };

  LlamaModel(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}
  absl::Status LoadWeights(const ModelFile& file);
  absl::Status CheckBatch(const Batch& batch) const;
  // Runs `batch` up to the logits of its want_logits chunks ([num_wanted, vocab_size] in the
  // backend; no rows when none wants them).
  absl::StatusOr<Activation> RunToLogits(const Batch& batch);
  // The ops from Embed to the logits of a pass over `n` rows (after BeginForward); the logits
  // of the logit_rows_ (gather) or of every row.
  Activation RunOps(int64_t n, bool gather);
  // Whether `batch` (whose layout arrays are built) runs as a decode graph; RunDecodeGraph
  // pads it to its bucket and runs it so.
  bool UseDecodeGraph(const Batch& batch) const;
  Activation RunDecodeGraph(const Batch& batch);
  // Runs layer `l` on hidden state `x` (its residual stream), given the previous layer's
  // FFN output `prev_out` (added to x first; empty for layer 0).
  Activation RunLayer(int64_t l, Activation x, Activation prev_out);
  // ys[i] += the LoRA of projection modules[i] of layer `l` (projections that read the same
  // input x) for the rows of chunks with an adapter.
  void ApplyLora(int64_t l, std::span<const lora::LoraModule> modules, Activation x,
                 std::span<const Activation> ys);

  ModelConfig config_;
  Backend& backend_;
  RopeTable rope_;
  std::unique_ptr<BackendWeight> token_embd_, output_norm_, output_;
  std::map<std::string, const BackendWeight*, std::less<>> weights_by_name_;  // FindWeight
  std::vector<Layer> layers_;
  int32_t kv_blocks_ = 0;
  kvcache::BlockId spare_block_ = -1;  // the padding rows' KV block (decode graphs), or -1
  bool decode_graphs_ = false;
  std::vector<TokenId> graph_tokens_;  // a decode graph's tokens, padded
  // Per-forward layout arrays, kept to avoid reallocating.
  std::vector<int32_t> positions_, chunk_starts_, first_positions_, table_starts_, logit_rows_;
  std::vector<kvcache::BlockId> tables_;
  // Runs of batch rows that share an adapter (this forward's), and the segments of one call.
  struct LoraSpan {
    int32_t begin, end;
    const lora::BackendLoraAdapter* adapter;
  };
  std::vector<LoraSpan> lora_spans_;
  std::vector<LoraRows> lora_rows_;
  // A decode graph's row adapters (padded), and the projections they adapt while its ops are
  // issued (ApplyLora then calls AddLoraByRow); 0 otherwise.
  std::vector<const BackendLoraTable*> graph_row_lora_;
  uint32_t graph_lora_mask_ = 0;
};

// Inverse rotary frequencies of `config` (with its scaling, and GGUF's per-pair factors in
// `freq_factors` when the file has `rope_freqs.weight`).
RopeTable MakeRopeTable(const ModelConfig& config, std::span<const float> freq_factors);

}  // namespace spillway::engine
