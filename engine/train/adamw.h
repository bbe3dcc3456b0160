// AdamW (decoupled weight decay, Loshchilov & Hutter; torch.optim.AdamW's update), the
// learning-rate schedule (linear warmup, then cosine decay to a floor) and global-norm
// gradient clipping (torch.nn.utils.clip_grad_norm_) for the LoRA parameters of a training
// job. Plain state, one thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace spillway::engine::train {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

// lr(step) for optimizer step `step` (0-based) of `total`: peak·(step+1)/warmup during the
// warmup, then cosine from peak down to peak·min_ratio at the last step.
float ScheduledLearningRate(float peak, int64_t step, int64_t warmup, int64_t total,
                            float min_ratio);

// Scales `grad` so its L2 norm is at most max_norm (no-op when max_norm <= 0 or the norm is
// smaller); returns the norm before clipping.
double ClipGradNorm(std::span<float> grad, double max_norm);

class AdamW {
 public:
  AdamW() = default;
  AdamW(int64_t num_params, const AdamWOptions& options)
      : options_(options), m_(num_params, 0.0f), v_(num_params, 0.0f) {}

  // One update of `params` with `grad` at learning rate `lr`:
  //   p -= lr·wd·p; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²;
  //   p -= lr · (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
  void Update(std::span<float> params, std::span<const float> grad, float lr);
  // The same update in pieces: BeginStep, then UpdateRange over ranges covering all the
  // parameters (element-wise, so the result is Update's bit for bit).
  void BeginStep() { ++steps_; }
  void UpdateRange(std::span<float> params, std::span<const float> grad, float lr, int64_t begin,
                   int64_t end);

  int64_t steps() const { return steps_; }
  // For checkpoints.
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  AdamWOptions options_;
  std::vector<float> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace spillway::engine::train
