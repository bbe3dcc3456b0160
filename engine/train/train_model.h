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
};

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
                                                            GgmlType frozen_type = GgmlType::kF32);
  ~TrainModel();

  const ModelConfig& config() const { return config_; }

  // Runs `seqs` as one flat batch with the adapter (`layout`, scaling `scale`, parameters
  // `lora`) and returns the summed cross-entropy of the target tokens. If `grad` is not null
  // it must hold layout.num_params() values, and d(summed loss)/d(lora) is added to it.
  // InvalidArgument for an empty or over-long sequence, a bad token or a mask of another size.
  absl::StatusOr<LossSum> ForwardBackward(std::span<const TrainSequence> seqs,
                                          const lora::LoraLayout& layout, T scale, const T* lora,
                                          T* grad);

  // The logits ([vocab]) of the last position of `tokens`, with the adapter (a layout with
  // no parameters and lora == nullptr: the base model).
  absl::StatusOr<std::vector<T>> LastLogits(std::span<const TokenId> tokens,
                                            const lora::LoraLayout& layout, T scale, const T* lora);

  // Activation and logit memory a micro-batch of `tokens` tokens with `targets` targets keeps
  // (bytes), for sizing micro-batches.
  int64_t ActivationBytes(int64_t tokens, int64_t max_seq_len, int64_t targets) const;

 private:
  struct Layer;
  struct LayerActs;
  struct Pass;

  TrainModel() = default;
  absl::Status Load(const ModelFile& file);
  absl::Status CheckSequences(std::span<const TrainSequence> seqs) const;
  // Forward through every layer; fills pass (activations of layers >= keep_from).
  void Forward(Pass& pass, const lora::LoraLayout& layout, T scale, const T* lora,
               int64_t keep_from);
  void LayerForward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout, T scale,
                    const T* lora);
  void LayerBackward(int64_t l, Pass& pass, LayerActs& acts, const lora::LoraLayout& layout,
                     T scale, const T* lora, T* grad, std::vector<T>& dx);
  void Linear(const FrozenMatrix<T>& w, const std::vector<T>* bias, const lora::LoraSlot& slot,
              T scale, const T* lora, const std::vector<T>& x, int64_t n, std::vector<T>& u,
              std::vector<T>& y);
  void LinearBackward(const FrozenMatrix<T>& w, const lora::LoraSlot& slot, T scale, const T* lora,
                      const std::vector<T>& x, const std::vector<T>& u, const std::vector<T>& dy,
                      int64_t n, T* grad, std::vector<T>& dx);

  ModelConfig config_;
  cpu::ThreadPool* pool_ = nullptr;
  GgmlType frozen_type_ = GgmlType::kF32;
  RopeTable rope_;
  const WeightTensor* embedding_ = nullptr;
  std::vector<T> output_norm_;
  std::unique_ptr<FrozenMatrix<T>> lm_head_;
  std::vector<Layer> layers_;
};

extern template class TrainModel<float>;
extern template class TrainModel<double>;

}  // namespace spillway::engine::train
