// TrainEngine: where a LoRA training job's forward and backward passes run — the host
// (HostTrainEngine over TrainModel<float>) or a GPU (engine/cuda/cuda_train_model.h). A
// TrainingJob drives one through Begin/Advance, piece by piece, in the engine's idle time
// (issue #7); the LoRA parameters, their gradient and the optimizer stay on the host whatever
// the engine (they are small: a LoRA of rank 16 on every projection of an 8B model is 42 M
// parameters), so a job's checkpoints and adapters do not depend on where it trained.
// One thread drives an engine at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/lora/lora_adapter.h"
#include "engine/train/train_model.h"

namespace spillway::engine::train {

class TrainEngine {
 public:
  // One forward (and backward) pass under way.
  class Pass {
   public:
    virtual ~Pass() = default;
    // The loss summed so far (final once Advance returned true).
    virtual const LossSum& loss() const = 0;
    virtual bool done() const = 0;
  };

  virtual ~TrainEngine() = default;
  // "cpu" or "cuda".
  virtual std::string_view device() const = 0;
  virtual const ModelConfig& config() const = 0;

  // TrainModel::Begin's contract: `lora` and `grad` (host memory, layout.num_params() values;
  // grad may be null for a forward only) and `seqs`' tokens and masks must outlive the pass,
  // and `lora` must not change while it runs; d(summed loss)/d(lora) is added to `grad` by the
  // time Advance returns true (a GPU engine copies it back then).
  virtual absl::StatusOr<std::unique_ptr<Pass>> Begin(std::span<const TrainSequence> seqs,
                                                      const lora::LoraLayout& layout, float scale,
                                                      const float* lora, float* grad,
                                                      LoraDropout dropout) = 0;
  // Runs the next piece (bounded work, finished before it returns); true when the pass is
  // complete. Must not be called again after it returned true. REQUIRES: `pass` came from
  // this engine's Begin.
  virtual bool Advance(Pass& pass) = 0;

  // The logits ([vocab]) of the last position of `tokens`, with the adapter (a layout with no
  // parameters and lora == nullptr: the base model).
  virtual absl::StatusOr<std::vector<float>> LastLogits(std::span<const TokenId> tokens,
                                                        const lora::LoraLayout& layout,
                                                        float scale, const float* lora) = 0;

  // The memory a micro-batch of `tokens` tokens with `targets` targets keeps while it runs, in
  // the engine's device memory (bytes).
  virtual int64_t ActivationBytes(int64_t tokens, int64_t max_seq_len, int64_t targets) const = 0;

  // Runs a whole pass (Begin, then Advance until done) and returns its loss.
  absl::StatusOr<LossSum> ForwardBackward(std::span<const TrainSequence> seqs,
                                          const lora::LoraLayout& layout, float scale,
                                          const float* lora, float* grad,
                                          LoraDropout dropout = {});
};

// The host engine: TrainModel<float> on the CPU's thread pool.
class HostTrainEngine final : public TrainEngine {
 public:
  explicit HostTrainEngine(std::unique_ptr<TrainModel<float>> model);

  std::string_view device() const override { return "cpu"; }
  const ModelConfig& config() const override { return model_->config(); }
  absl::StatusOr<std::unique_ptr<Pass>> Begin(std::span<const TrainSequence> seqs,
                                              const lora::LoraLayout& layout, float scale,
                                              const float* lora, float* grad,
                                              LoraDropout dropout) override;
  bool Advance(Pass& pass) override;
  absl::StatusOr<std::vector<float>> LastLogits(std::span<const TokenId> tokens,
                                                const lora::LoraLayout& layout, float scale,
                                                const float* lora) override;
  int64_t ActivationBytes(int64_t tokens, int64_t max_seq_len, int64_t targets) const override {
    return model_->ActivationBytes(tokens, max_seq_len, targets);
  }

  TrainModel<float>& model() { return *model_; }

 private:
  std::unique_ptr<TrainModel<float>> model_;
};

}  // namespace spillway::engine::train
