// MeteredEngine: a GenerationEngine decorator that records the Prometheus metrics of every
// request one front end submits (api "http" or "grpc"). Submit interposes a channel between
// the engine loop and the front end's channel: on the loop's thread it timestamps each event
// (TTFT, inter-token latency, queue time, end-to-end latency, token counts, finish reason) and
// forwards it unchanged, so the front ends need no metrics code.
// Thread safety: as GenerationEngine (every method from any thread).
#pragma once

#include <string>

#include "server/metrics/server_metrics.h"
#include "server/openai/generation_engine.h"

namespace spillway::server::metrics {

class MeteredEngine final : public openai::GenerationEngine {
 public:
  // `inner` and `metrics` must outlive this.
  MeteredEngine(openai::GenerationEngine& inner, ServerMetrics& metrics, std::string api);

  [[nodiscard]] absl::Status Submit(scheduler::Request request) override;
  void Cancel(scheduler::RequestId id) override { inner_.Cancel(id); }
  scheduler::RequestId NextRequestId() override { return inner_.NextRequestId(); }
  scheduler::EngineStats stats() const override { return inner_.stats(); }

 private:
  openai::GenerationEngine& inner_;
  ServerMetrics& metrics_;
  const std::string api_;
};

}  // namespace spillway::server::metrics
