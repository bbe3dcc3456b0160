// TrainModel<T>: the Llama-family decoder for LoRA training on the host — a forward pass that
// keeps what backward needs, and the hand-written backward down to the LoRA matrices (the
// base weights, embeddings and lm_head are frozen). T = float trains; T = double is for the
// gradient checks (tests/engine/train).
//
// The math is the inference model's (engine/llama/llama_model.cc: same RoPE table, same op
// order; a test checks that the logits agree) but without the paged KV cache: each training
// sequence attends to itself from position 0. NOTE(lora): this is a host implementation
// beside LlamaModel rather than LlamaModel on the Backend interface, because the Backend has
// no backward ops (transposed matmuls, attention backward) yet; the ops live in
// engine/train/ops.h so a Backend version can be written op by op against them.
//
// Base weights: dequantized once at Create() to T. For float, each linear weight is kept twice,
// packed for cpu::MatMul as W (forward, x·Wᵀ) and as Wᵀ (backward, dy·W): 8 bytes per base
// parameter (SmolLM2-135M: about 1.1 GB with the tied lm_head). The embedding table stays in
// the file (rows dequantized per lookup), so `file` must outlive the model.
// One thread drives a TrainModel; float matmuls run on the ThreadPool given to Create().
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cpu/thread_pool.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::train {

// One training sequence: tokens and which of them are targets. loss_mask[t] != 0 means token t
// is predicted from tokens [0, t) and counts in the loss (Hugging Face's labels != -100);
// loss_mask[0] is ignored.
struct TrainSequence {
  std::span<const TokenId> tokens;
  std::span<const uint8_t> loss_mask;
};

struct LossSum {
  double loss = 0;          // summed over target tokens
  int64_t num_targets = 0;  // target tokens counted
  // Target tokens the logits predict: argmax == target, ties to the lowest id (the sampler's
  // greedy choice), so num_correct / num_targets is the token accuracy OpenAI reports.
  int64_t num_correct = 0;
};

// How the lm_head part of a TrainModel::Run is cut into pieces: vocabulary rows per lm_head
// slice (one slice, forward or backward, per piece), target rows per chunk (the logits of a
// chunk are kept whole for the cross-entropy), and rows of the cross-entropy per piece.
// NOTE(ftpieces): a slice of 8192 rows for a chunk of 32 target rows is about the matmul work
// of half a SmolLM2 layer over 45 tokens, and 8 rows of softmax over 49152 logits about 3 ms,
// so no piece is much longer than the others; tests use small values to cross the boundaries.
struct HeadPieces {
  int64_t slice_rows = 8192;
  int64_t chunk_rows = 32;
  int64_t loss_rows = 8;
};

// LoRA dropout for one training pass (PEFT's lora_dropout: y = W x + s · B A dropout(x)):
// each adapted projection's LoRA branch sees its input with elements zeroed with
// probability p and the rest scaled by 1/(1 - p); the frozen W x sees x unchanged. Each
// projection of each layer has its own mask (as PEFT: one nn.Dropout per LoRA layer). The
// mask is a function of (seed, layer, module, row, column), counter-based, so a pass is
// reproduced from its seed and nothing of the mask is stored. p = 0: no dropout (the exact
// numbers of a model without it).
struct LoraDropout {
  float p = 0;
  uint64_t seed = 0;
};

// InvalidArgument unless `seqs` is a batch a model of `config` can train on: not empty, each
// sequence 1 to context_length tokens, token ids in the vocabulary, a loss mask empty or as
// long as its sequence. Both training engines (TrainModel, CudaTrainModel) check with it.
absl::Status CheckTrainSequences(const ModelConfig& config, std::span<const TrainSequence> seqs);

// The key of the dropout mask of `layer`'s module `m` in a pass whose LoraDropout has `seed`
// (the mask of element i is a function of the key and i; train_ops.h's Dropout draws the same).
uint64_t LoraDropoutKey(uint64_t seed, int64_t layer, lora::LoraModule m);

// A frozen linear weight [out, in]: y = x·Wᵀ and dx += dy·W.
template <typename T>
class FrozenMatrix;

template <typename T>
class TrainModel {
 public:
  // Dequantizes `file`'s weights. `pool` (may be null: one thread) runs the float matmuls and
  // must outlive the model. InvalidArgument for a missing tensor or an unsupported type.
  // `frozen_type` (float only; double keeps doubles): how the dequantized base weights are
  // stored for the matmuls — F32, or F16/BF16 (rounded; half the memory and memory traffic).
  static absl::StatusOr<std::unique_ptr<TrainModel>> Create(const ModelFile& file,
                                                            cpu::ThreadPool* pool,
                                                            GgmlType frozen_type = GgmlType::kF32,
                                                            HeadPieces head_pieces = {});
  ~TrainModel();

  const ModelConfig& config() const { return config_; }

  // Runs `seqs` as one flat batch with the adapter (`layout`, scaling `scale`, parameters
  // `lora`) and returns the summed cross-entropy of the target tokens (and how many of them
  // the logits predict: LossSum::num_correct, read off the logits the loss uses, so counting
  // changes no number of the loss or gradient). If `grad` is not null
  // it must hold layout.num_params() values, and d(summed loss)/d(lora) is added to it.
  // InvalidArgument for an empty or over-long sequence, a bad token or a mask of another size.
  // The same as Begin() and Advance() until it returns true.
  absl::StatusOr<LossSum> ForwardBackward(std::span<const TrainSequence> seqs,
                                          const lora::LoraLayout& layout, T scale, const T* lora,
                                          T* grad, LoraDropout dropout = {});

  // ForwardBackward in bounded pieces, so that the engine's idle slot can interleave it with
  // inference (issue #7): each Advance() runs half a layer (attention or FFN) forward or
  // backward, one lm_head slice forward or backward for a chunk of target rows, or the
  // cross-entropy of a few rows (HeadPieces), and keeps the activations in the Run between
  // calls. The result is bit-identical to ForwardBackward's
  // (which is this loop). `seqs`' tokens and masks, `layout`, `lora` and `grad` must outlive
  // the Run, and `lora` must not change while it runs (its gradient is of those parameters).
  class Run;
  absl::StatusOr<std::unique_ptr<Run>> Begin(std::span<const TrainSequence> seqs,
                                             const lora::LoraLayout& layout, T scale, const T* lora,
                                             T* grad, LoraDropout dropout = {});
  // Runs the next piece; true when the pass is complete (then Run::loss() is final). Must not
  // be called again after it returned true.
  bool Advance(Run& run);

  // The logits ([vocab]) of the last position of `tokens`, with the adapter (a layout with
  // no parameters and lora == nullptr: the base model).
  absl::StatusOr<std::vector<T>> LastLogits(std::span<const TokenId> tokens,
                                            const lora::LoraLayout& layout, T scale, const T* lora);

  // Activation and logit memory a micro-batch of `tokens` tokens with `targets` targets keeps
  // (bytes), for sizing micro-batches. The static form needs only the config (a job's memory
  // is checked before its model is built).
  static int64_t ActivationBytes(const ModelConfig& c, int64_t tokens, int64_t max_seq_len,
                                 int64_t targets);
  int64_t ActivationBytes(int64_t tokens, int64_t max_seq_len, int64_t targets) const {
    return ActivationBytes(config_, tokens, max_seq_len, targets);
  }

 private:
  struct Layer;
  struct LayerActs;
  struct Pass;

  TrainModel() = default;
  absl::Status Load(const ModelFile& file);
  // Sets up `pass` for `seqs` and looks up their embeddings (the residual stream's start).
  void Embed(std::span<const TrainSequence> seqs, Pass& pass) const;
  // A layer runs in two halves (attention, then the FFN), each one piece of a Run.
  void AttnHalfForward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout,
                       T scale, const T* lora);
  void FfnHalfForward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout,
                      T scale, const T* lora);
  void FfnHalfBackward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout,
                       T scale, const T* lora, T* grad, std::vector<T>& dx);
  void AttnHalfBackward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout,
                        T scale, const T* lora, T* grad, std::vector<T>& dx);
  // The head of a Run: one piece per call (a slice of the lm_head, forward or backward, for
  // a chunk of target rows). True when the head is done.
  bool HeadPiece(Run& run);
  // The columns of lm_head slice `slice` in logits [m, vocab], of the final norm's output
  // rows `x` [m, hidden]; `part` is scratch.
  void HeadSliceForward(size_t slice, const T* x, int64_t m, T* logits, std::vector<T>& part);
  // A LoRA branch's dropout: the pass's p and the mask's key for (layer, module); p == 0: none.
  struct SlotDropout {
    float p = 0;
    uint64_t key = 0;
  };
  static SlotDropout DropoutOf(const Pass& pass, int64_t l, lora::LoraModule m);
  void Linear(const FrozenMatrix<T>& w, const std::vector<T>* bias, const lora::LoraSlot& slot,
              T scale, const T* lora, const std::vector<T>& x, int64_t n, std::vector<T>& u,
              std::vector<T>& y, SlotDropout drop);
  void LinearBackward(const FrozenMatrix<T>& w, const lora::LoraSlot& slot, T scale, const T* lora,
                      const std::vector<T>& x, const std::vector<T>& u, const std::vector<T>& dy,
                      int64_t n, T* grad, std::vector<T>& dx, SlotDropout drop);

  ModelConfig config_;
  cpu::ThreadPool* pool_ = nullptr;
  GgmlType frozen_type_ = GgmlType::kF32;
  HeadPieces head_pieces_;
  RopeTable rope_;
  const WeightTensor* embedding_ = nullptr;
  std::vector<T> output_norm_;
  // The lm_head in slices of vocabulary rows, so that one piece of a Run runs a bounded part
  // of it (it is several layers' worth of matmul: SmolLM2's is 28 M parameters vs 3.5 M).
  std::vector<std::unique_ptr<FrozenMatrix<T>>> lm_head_;
  std::vector<Layer> layers_;
};

template <typename T>
class TrainModel<T>::Run {
 public:
  ~Run();
  // The loss summed so far (final once Advance returned true).
  const LossSum& loss() const { return loss_; }
  bool done() const { return phase_ == Phase::kDone; }
  // Pieces run so far.
  int64_t pieces() const { return pieces_; }

 private:
  friend class TrainModel;
  enum class Phase { kForward, kHead, kBackward, kDone };
  Run() = default;

  std::vector<TrainSequence> seqs_;
  const lora::LoraLayout* layout_ = nullptr;
  T scale_{};
  const T* lora_ = nullptr;
  T* grad_ = nullptr;
  int64_t keep_from_ = 0;
  std::unique_ptr<Pass> pass_;
  Phase phase_ = Phase::kForward;
  int64_t unit_ = 0;  // the next half layer (forward: upwards; backward: downwards)
  // The head: the final norm's output and 1/rms, the rows that predict a target and their
  // targets, the next of them, and d(loss)/d(final norm output).
  std::vector<T> hf_, invf_, dhf_;
  std::vector<int64_t> rows_;
  std::vector<TokenId> targets_;
  // The chunk of target rows under way: its first row, the next lm_head slice, the stage
  // (logits slice by slice, cross-entropy, backward slice by slice), and its rows' final norm
  // output, logits and their gradients.
  enum class HeadStage { kLogits, kLoss, kBackward };
  int64_t chunk_ = 0;
  size_t slice_ = 0;
  HeadStage head_stage_ = HeadStage::kLogits;
  int64_t ce_row_ = 0;  // the next row of the chunk's cross-entropy
  std::vector<T> sel_, logits_, dlogits_, dsel_, part_, tmp_;
  std::vector<T> dx_;  // backward: d(loss)/d(residual stream)
  LossSum loss_;
  int64_t pieces_ = 0;
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace spillway::engine::train
