// TrainingJob: one LoRA fine-tuning job, advanced in bounded pieces so that the scheduler can
// run it in the engine's idle time (issue #7). Its passes run on a TrainEngine (train_engine.h:
// the host's TrainModel<float>, or a GPU); the LoRA parameters, gradient and AdamW state stay
// here, on the host, whatever the engine. A micro-batch (a few examples, at most
// max_micro_batch_tokens tokens, or one longer example) runs forward and backward in pieces:
// each StepPiece() is one TrainEngine::Advance (half a layer, or one lm_head slice), a few
// milliseconds, so a request arriving in the idle slot waits for one piece, not a whole
// micro-batch. When the micro-batches of an optimizer step are done the last piece clips the
// gradient and applies AdamW. Step() runs the pieces of one micro-batch. Checkpoints hold
// everything needed to resume bit for bit (parameters, AdamW moments, the pending gradient,
// the position in the data), written atomically, and are taken between micro-batches only.
//
// Loss: cross-entropy on the examples' target tokens (TrainingExample::loss_mask), averaged
// over the target tokens of an optimizer step (not per micro-batch), so the update does not
// depend on how the step was split.
// Engine-loop thread only (one thread drives a job; a host engine's matmuls use its ThreadPool).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cpu/thread_pool.h"
#include "engine/lora/lora_adapter.h"
#include "engine/train/adamw.h"
#include "engine/train/train_engine.h"
#include "engine/train/train_model.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::train {

struct TrainingExample {
  std::vector<TokenId> tokens;
  std::vector<uint8_t> loss_mask;  // as TrainSequence::loss_mask; same length as tokens
};

struct TrainingOptions {
  // lora.dropout in [0, 1): LoRA dropout in training (LoraDropout; never in EvalLoss or serving).
  lora::LoraConfig lora;
  int32_t epochs = 3;
  int32_t batch_size = 4;  // examples per optimizer step
  // A micro-batch packs whole examples up to this many tokens (at least one example).
  int32_t max_micro_batch_tokens = 256;
  float learning_rate = 1e-4f;
  int32_t warmup_steps = 0;
  float min_lr_ratio = 0.1f;   // the cosine decay's floor, relative to learning_rate
  float max_grad_norm = 1.0f;  // <= 0: no clipping
  AdamWOptions adamw;
  // The host engine only (the Create that builds a TrainModel<float>): how the frozen base
  // weights are kept — F16 halves their memory (4 bytes per base parameter for W and Wᵀ) and
  // the step time against F32 — and how the lm_head is cut into pieces (TrainModel::Create).
  GgmlType frozen_type = GgmlType::kF16;
  HeadPieces head_pieces;
  // LoRA parameters per piece of the AdamW update (the clipping is one piece before them).
  int64_t optimizer_piece_params = 256 * 1024;
  bool shuffle = true;  // a new order of the examples each epoch, from `seed`
  uint64_t seed = 0;
};

struct StepReport {
  int64_t micro_batches = 0;  // run so far, this one included
  int32_t tokens = 0;         // tokens in this micro-batch
  int32_t targets = 0;        // target tokens in this micro-batch
  double micro_loss = 0;      // mean loss of this micro-batch's targets
  double micro_accuracy = 0;  // token accuracy of its targets (LossSum::num_correct)
  bool optimizer_stepped = false;
  // When optimizer_stepped:
  int64_t step = 0;          // optimizer steps done, this one included
  double step_loss = 0;      // mean loss over the step's targets
  double step_accuracy = 0;  // token accuracy over the step's targets, in [0, 1]
  double grad_norm = 0;      // before clipping
  float learning_rate = 0;
  bool finished = false;  // the job has run all its steps
  double seconds = 0;     // wall time of this micro-batch's pieces
};

struct PieceReport {
  double seconds = 0;  // wall time of this piece
  // Set when this piece completed a micro-batch (and maybe an optimizer step).
  std::optional<StepReport> micro_batch;
};

struct EvalPieceReport {
  double seconds = 0;   // wall time of this piece
  bool done = false;    // the evaluation is complete; then:
  double loss = 0;      // mean loss over the examples' targets
  double accuracy = 0;  // token accuracy over them (LossSum::num_correct), in [0, 1]
};

class TrainingJob {
 public:
  // A job whose passes run on `engine` (the job owns it), with a fresh adapter for the
  // engine's model. InvalidArgument for no examples, an example without tokens or targets, a
  // mask of the wrong length, bad options. Whatever `engine` needs (its model file, thread
  // pool) must outlive the job.
  static absl::StatusOr<std::unique_ptr<TrainingJob>> Create(std::unique_ptr<TrainEngine> engine,
                                                             std::vector<TrainingExample> examples,
                                                             const TrainingOptions& options);
  // On the host: builds TrainModel<float> from `file` (dequantized, options.frozen_type and
  // head_pieces) in a HostTrainEngine, then the Create above; errors of TrainModel::Create
  // too. `file` and `pool` must outlive the job.
  static absl::StatusOr<std::unique_ptr<TrainingJob>> Create(const ModelFile& file,
                                                             std::vector<TrainingExample> examples,
                                                             const TrainingOptions& options,
                                                             cpu::ThreadPool* pool);

  // Runs one piece of the micro-batch under way (starting the next one if none is), and the
  // optimizer step when the piece completes the micro-batches of one. FailedPrecondition
  // when finished(); InvalidArgument from the model for a bad example.
  absl::StatusOr<PieceReport> StepPiece();
  // Runs pieces until a micro-batch completes (the rest of the one under way, if any).
  absl::StatusOr<StepReport> Step();
  // No micro-batch is under way (checkpoints can be taken).
  bool at_micro_batch_boundary() const { return run_ == nullptr && !pending_.has_value(); }

  bool finished() const { return step_ >= total_steps_; }
  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  const TrainingOptions& options() const { return options_; }
  // The adapter as of now (between optimizer steps: the last update).
  const lora::LoraAdapter& adapter() const { return adapter_; }
  // Where the passes run (model().device(): "cpu" or "cuda").
  TrainEngine& model() { return *model_; }
  // Parameters, gradient and AdamW state: 16 bytes per LoRA parameter. The static form needs
  // only the config (a job's memory is checked before the job is built).
  static int64_t StateBytes(const lora::LoraLayout& layout);
  int64_t StateBytes() const { return StateBytes(adapter_.layout); }

  // Mean loss of `examples` (targets only) with the current adapter; no gradient. The same
  // as BeginEval and EvalPiece until done.
  absl::StatusOr<double> EvalLoss(const std::vector<TrainingExample>& examples);
  // EvalLoss with the token accuracy: the last EvalPiece's report (done is true).
  absl::StatusOr<EvalPieceReport> Evaluate(const std::vector<TrainingExample>& examples);
  // EvalLoss in pieces (one example at a time, each a TrainEngine pass, forward only): `examples`
  // must outlive the evaluation; a BeginEval drops one under way. The evaluation reads the
  // parameters as they are at each piece, so a training piece that completes an optimizer
  // step in between changes what it measures. FailedPrecondition from EvalPiece without an
  // evaluation under way.
  void BeginEval(const std::vector<TrainingExample>& examples);
  absl::StatusOr<EvalPieceReport> EvalPiece();

  // Writes a checkpoint to `path` (temporary file, fsync, rename, fsync of the directory).
  // FailedPrecondition in the middle of a micro-batch (!at_micro_batch_boundary()): its
  // activations are not saved.
  [[nodiscard]] absl::Status SaveCheckpoint(const std::string& path) const;
  // Restores a checkpoint written by a job with the same model shape, LoRA layout and data
  // size; a micro-batch under way is dropped. InvalidArgument for a corrupt or mismatched
  // file; NotFound when missing.
  [[nodiscard]] absl::Status RestoreCheckpoint(const std::string& path);

 private:
  TrainingJob() = default;
  void StartEpoch();

  TrainingOptions options_;
  std::vector<TrainingExample> examples_;
  std::unique_ptr<TrainEngine> model_;
  lora::LoraAdapter adapter_;
  AdamW adamw_;
  std::vector<float> grad_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  // Position: optimizer steps done, micro-batches run, the epoch's order, and the next example.
  int64_t step_ = 0;
  int64_t micro_batches_ = 0;
  int64_t epoch_ = 0;
  std::vector<int32_t> order_;
  int64_t next_ = 0;  // index into order_
  // The step under way: loss summed over its targets so far, their number, and how many the
  // logits predicted.
  double step_loss_sum_ = 0;
  int64_t step_targets_ = 0;
  int64_t step_correct_ = 0;
  // The micro-batch under way (null between micro-batches): its pieces' state, its tokens and
  // the time its pieces took so far.
  std::unique_ptr<TrainEngine::Pass> run_;
  int32_t run_tokens_ = 0;
  double run_seconds_ = 0;
  // The optimizer step under way after the step's last micro-batch: its report so far, and
  // the next parameter to update (-1: the gradient is not clipped yet).
  std::optional<StepReport> pending_;
  int64_t optimizer_pos_ = -1;
  // The evaluation under way (BeginEval).
  struct Eval {
    const std::vector<TrainingExample>* examples = nullptr;
    size_t next = 0;  // the next example to start
    std::unique_ptr<TrainEngine::Pass> run;
    double loss_sum = 0;
    int64_t targets = 0;
    int64_t correct = 0;
  };
  std::optional<Eval> eval_;
};

// Greedy decoding with the model and an adapter (or none: adapter == nullptr), recomputing the
// whole sequence each token (tests and tools; not the serving path). Stops after max_tokens
// or at a token in `stop`.
absl::StatusOr<std::vector<TokenId>> GreedyGenerate(TrainEngine& model,
                                                    const lora::LoraAdapter* adapter,
                                                    std::vector<TokenId> prompt, int32_t max_tokens,
                                                    std::span<const TokenId> stop);

}  // namespace spillway::engine::train
