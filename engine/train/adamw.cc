#include "engine/train/adamw.h"

#include <cmath>
#include <numbers>

#include "common/check.h"

namespace spillway::engine::train {

float ScheduledLearningRate(float peak, int64_t step, int64_t warmup, int64_t total,
                            float min_ratio) {
  if (step < warmup) return peak * static_cast<float>(step + 1) / static_cast<float>(warmup);
  const int64_t decay_steps = total - warmup;
  if (decay_steps <= 1) return peak;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(decay_steps - 1);
  const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(progress, 1.0)));
  return static_cast<float>(peak * (min_ratio + (1.0 - min_ratio) * cosine));
}

double ClipGradNorm(std::span<float> grad, double max_norm) {
  double ss = 0;
  for (float g : grad) ss += static_cast<double>(g) * g;
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    // torch adds 1e-6 to the norm here.
    const float c = static_cast<float>(max_norm / (norm + 1e-6));
    for (float& g : grad) g *= c;
  }
  return norm;
}

void AdamW::Update(std::span<float> params, std::span<const float> grad, float lr) {
  BeginStep();
  UpdateRange(params, grad, lr, 0, static_cast<int64_t>(params.size()));
}

void AdamW::UpdateRange(std::span<float> params, std::span<const float> grad, float lr,
                        int64_t begin, int64_t end) {
  SPW_CHECK(params.size() == m_.size() && grad.size() == m_.size());
  SPW_CHECK(0 <= begin && begin <= end && end <= static_cast<int64_t>(params.size()));
  SPW_CHECK(steps_ > 0);
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double c2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  const float decay = 1.0f - lr * options_.weight_decay;
  for (int64_t i = begin; i < end; ++i) {
    const double g = grad[i];
    m_[i] = static_cast<float>(b1 * m_[i] + (1.0 - b1) * g);
    v_[i] = static_cast<float>(b2 * v_[i] + (1.0 - b2) * g * g);
    const double update = (m_[i] / c1) / (std::sqrt(v_[i] / c2) + options_.eps);
    params[i] = static_cast<float>(params[i] * decay - lr * update);
  }
}

}  // namespace spillway::engine::train
