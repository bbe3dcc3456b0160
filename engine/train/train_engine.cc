#include "engine/train/train_engine.h"

#include <utility>

#include "common/check.h"
#include "common/status_macros.h"

namespace spillway::engine::train {
namespace {

// A host pass is a TrainModel<float>::Run; its loss and phase are the Run's.
class HostPass final : public TrainEngine::Pass {
 public:
  explicit HostPass(std::unique_ptr<TrainModel<float>::Run> run) : run_(std::move(run)) {}
  const LossSum& loss() const override { return run_->loss(); }
  bool done() const override { return run_->done(); }
  TrainModel<float>::Run& run() { return *run_; }

 private:
  std::unique_ptr<TrainModel<float>::Run> run_;
};

}  // namespace

absl::StatusOr<LossSum> TrainEngine::ForwardBackward(std::span<const TrainSequence> seqs,
                                                     const lora::LoraLayout& layout, float scale,
                                                     const float* lora, float* grad,
                                                     LoraDropout dropout) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<Pass> pass, Begin(seqs, layout, scale, lora, grad, dropout));
  while (!Advance(*pass)) {
  }
  return pass->loss();
}

HostTrainEngine::HostTrainEngine(std::unique_ptr<TrainModel<float>> model)
    : model_(std::move(model)) {
  SPW_CHECK(model_ != nullptr);
}

absl::StatusOr<std::unique_ptr<TrainEngine::Pass>> HostTrainEngine::Begin(
    std::span<const TrainSequence> seqs, const lora::LoraLayout& layout, float scale,
    const float* lora, float* grad, LoraDropout dropout) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<TrainModel<float>::Run> run,
                       model_->Begin(seqs, layout, scale, lora, grad, dropout));
  return std::make_unique<HostPass>(std::move(run));
}

bool HostTrainEngine::Advance(Pass& pass) {
  // NOTE(ftcuda): a checked cast, not a static_cast: a pass handed to the wrong engine is a
  // bug, and one dynamic_cast per piece (milliseconds of work) costs nothing measurable.
  auto* host = dynamic_cast<HostPass*>(&pass);
  SPW_CHECK(host != nullptr);
  return model_->Advance(host->run());
}

absl::StatusOr<std::vector<float>> HostTrainEngine::LastLogits(std::span<const TokenId> tokens,
                                                               const lora::LoraLayout& layout,
                                                               float scale, const float* lora) {
  return model_->LastLogits(tokens, layout, scale, lora);
}

}  // namespace spillway::engine::train
