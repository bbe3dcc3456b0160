// MetricsSink: what the engine loop reports to a metrics collector each step (server/metrics
// implements it for Prometheus). The loop calls it on its own thread, so an implementation must
// be cheap and must not block; it never calls back into the loop.
#pragma once

#include <chrono>
#include <cstdint>

namespace spillway::scheduler {

struct StepMetrics {
  std::chrono::steady_clock::time_point start;  // when the step's forward pass began
  int32_t num_tokens = 0;                       // tokens in the batch (decode + prompt chunks)
  int32_t num_seqs = 0;                         // sequences with a slice in the batch
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // Called after the step's forward pass and before its TokenEvents are pushed, so a channel's
  // notifier running during the push can read what this step reported.
  virtual void OnStep(const StepMetrics& step) = 0;
};

}  // namespace spillway::scheduler
