// CudaTrainModel: LoRA training passes on an NVIDIA GPU (issue #7, "on the CPU backend and
// the CUDA backend"): TrainModel's forward that keeps what backward needs and its hand-written
// backward, op for op, with the frozen weights in BF16 on the device and cuBLAS GEMMs.
//
// Numerics (tests/gpu/train_model_test.cc compares it with TrainModel<float> over BF16-rounded
// weights): frozen projections are cuBLAS bf16 × bf16 with f32 accumulation, the activation or
// output gradient rounded to bf16 first (as the CudaBackend's MatMul); the embedding table is
// bf16; LoRA products, norms, RoPE, attention (materialised probabilities, as the host),
// SwiGLU and the cross-entropy are f32 (the log-sum-exp in double), in kernels/train_ops.h.
//
// Pieces: as TrainModel::Advance — half a layer forward or backward; the head (final norm,
// lm_head, cross-entropy and its backward) one chunk of target rows per piece. Each Advance
// waits for its work on the device before it returns, so a piece's wall time is its cost and a
// request arriving in the idle slot waits for at most one piece.
//
// Memory: the frozen weights are the serving model's own when CudaTrainOptions::device_weights
// gives them (a GPU server: LlamaModel::FindWeight over the CudaBackend's weights, read-only on
// another stream, so no second copy); otherwise they are uploaded at Create (2 bytes per
// parameter; the lm_head shares the embedding table when tied), with the model's own stream
// and cuBLAS handle, so a job can be prepared on another thread while the engine loop serves.
// A pass's activations are one device allocation, made at Begin (kept for the next pass when
// big enough).
// One thread drives a CudaTrainModel at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/train/train_engine.h"

namespace spillway::engine::cuda {

struct CudaTrainOptions {
  int ordinal = 0;  // the device
  // Target rows per head piece (their logits are kept whole: rows × vocab f32).
  int64_t head_chunk_rows = 256;
  // The serving model's weights, trained on in place of a copy: the device data of the file's
  // tensor `name` on this device (bf16 [rows, cols] for a matrix, f32 for a vector, as
  // UploadBf16Matrix / UploadF32Vector lay them out), or null to upload that tensor. What it
  // returns must not change and must outlive the model. Unset: every tensor is uploaded.
  std::function<const void*(std::string_view name)> device_weights = {};
};

class CudaTrainModel final : public train::TrainEngine {
 public:
  // Uploads `file`'s weights to device `options.ordinal`. Unavailable without a GPU;
  // InvalidArgument for a missing tensor or a bad shape; ResourceExhausted when the device
  // memory is short. `file` may be dropped afterwards.
  static absl::StatusOr<std::unique_ptr<CudaTrainModel>> Create(
      const ModelFile& file, const CudaTrainOptions& options = {});
  ~CudaTrainModel() override;

  std::string_view device() const override { return "cuda"; }
  const ModelConfig& config() const override { return config_; }
  absl::StatusOr<std::unique_ptr<Pass>> Begin(std::span<const train::TrainSequence> seqs,
                                              const lora::LoraLayout& layout, float scale,
                                              const float* lora, float* grad,
                                              train::LoraDropout dropout) override;
  bool Advance(Pass& pass) override;
  absl::StatusOr<std::vector<float>> LastLogits(std::span<const TokenId> tokens,
                                                const lora::LoraLayout& layout, float scale,
                                                const float* lora) override;
  int64_t ActivationBytes(int64_t tokens, int64_t max_seq_len, int64_t targets) const override {
    return ActivationBytes(config_, tokens, max_seq_len, targets, options_.head_chunk_rows);
  }

  // Device bytes of a pass over `tokens` tokens (longest sequence max_seq_len) with `targets`
  // targets: kept activations, the LoRA parameters and gradient, and the head's chunk.
  static int64_t ActivationBytes(const ModelConfig& c, int64_t tokens, int64_t max_seq_len,
                                 int64_t targets, int64_t head_chunk_rows = 256);
  // Device bytes of the frozen weights (bf16 matrices, f32 vectors).
  static int64_t FrozenBytes(const ModelConfig& c);
  // Bytes uploaded at Create, and bytes of the serving model's weights used in place.
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t shared_weight_bytes() const { return shared_weight_bytes_; }
  // The largest pass arena so far (kept for reuse between passes): what ActivationBytes, plus
  // 8 bytes per LoRA parameter, must bound (tests).
  int64_t arena_bytes() const;

 private:
  struct Impl;
  class CudaPass;
  explicit CudaTrainModel(const CudaTrainOptions& options);

  CudaTrainOptions options_;
  ModelConfig config_;
  int64_t weight_bytes_ = 0;
  int64_t shared_weight_bytes_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spillway::engine::cuda
