// ServerMetrics: the Prometheus metrics of one served model (docs/operating.md lists them),
// kept in a prometheus-cpp registry and exposed as text format by GET /metrics on the HTTP
// port through our own router (prometheus-cpp's civetweb exposer is not used).
//   - Per-request histograms and counters are observed by MeteredEngine (metered_engine.h),
//     which sees every TokenEvent of the requests one front end (api "http" or "grpc") submits.
//   - spillway_iteration_tokens comes from the engine loop (scheduler::MetricsSink::OnStep).
//   - Gauges and the cumulative engine counters (preemptions, prefix cache, KV tiers through
//     KvTierMetrics) are read from EngineStats at scrape time (Render).
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "scheduler/api/token_event.h"
#include "scheduler/engine_loop.h"
#include "scheduler/metrics_sink.h"
#include "server/metrics/kv_tier_metrics.h"
#include "server/http/router.h"

namespace spillway::server::metrics {

// What one finished request measured (MeteredEngine fills it in).
struct RequestRecord {
  std::string_view api;  // "http" or "grpc"
  double queue_s = -1;   // < 0: unknown (the request never ran)
  double ttft_s = -1;    // < 0: no token was generated
  double e2e_s = 0;
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  scheduler::FinishReason finish_reason = scheduler::FinishReason::kStop;
};

class ServerMetrics final : public scheduler::MetricsSink {
 public:
  explicit ServerMetrics(std::string model_name);

  // scheduler::MetricsSink (engine-loop thread).
  void OnStep(const scheduler::StepMetrics& step) override;
  // When the latest step's forward pass began (for the queue time of requests it started).
  std::chrono::steady_clock::time_point last_step_start() const;

  // Fine-tuning in idle time (server/admin/fine_tune_jobs.h): each training Step() (engine
  // loop), each optimizer step's loss, and the jobs by status.
  void ObserveTrainingPiece(double seconds);
  void ObserveTrainingStep(double loss);
  void SetFineTuneJobs(const std::map<std::string, int64_t>& by_status);

  void ObserveInterTokenLatency(std::string_view api, double seconds);
  void ObserveRequest(const RequestRecord& r);
  // Counts an error: `status` is not OK; its code names the label (e.g. RESOURCE_EXHAUSTED).
  void CountError(std::string_view api, const absl::Status& status);

  // Sets the gauges from `stats`, then returns the whole registry in Prometheus text format.
  std::string Render(const scheduler::EngineStats& stats);

  // Adds GET /metrics to `router`, rendering `stats()` at each scrape.
  void RegisterEndpoint(http::Router& router, std::function<scheduler::EngineStats()> stats);

  // "stop", "length", "cancelled", "error" (the finish_reason label).
  static std::string_view FinishReasonLabel(scheduler::FinishReason reason);

 private:
  prometheus::Histogram& Hist(prometheus::Family<prometheus::Histogram>& f, std::string_view api,
                              const prometheus::Histogram::BucketBoundaries& b);

  const std::string model_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<int64_t> last_step_start_ns_{0};

  prometheus::Family<prometheus::Gauge>* finetune_jobs_;
  prometheus::Counter* finetune_steps_;
  prometheus::Gauge* finetune_loss_;
  prometheus::Counter* busy_inference_;
  prometheus::Counter* busy_training_;
  prometheus::Family<prometheus::Histogram>* ttft_;
  prometheus::Family<prometheus::Histogram>* itl_;
  prometheus::Family<prometheus::Histogram>* e2e_;
  prometheus::Family<prometheus::Histogram>* queue_;
  prometheus::Family<prometheus::Histogram>* prompt_hist_;
  prometheus::Family<prometheus::Histogram>* gen_hist_;
  prometheus::Histogram* iteration_tokens_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_used_;
  prometheus::Gauge* kv_cached_;
  prometheus::Gauge* kv_free_;
  prometheus::Gauge* kv_reserved_;
  prometheus::Gauge* kv_usage_;
  prometheus::Family<prometheus::Counter>* prompt_total_;
  prometheus::Family<prometheus::Counter>* gen_total_;
  prometheus::Family<prometheus::Counter>* requests_total_;
  prometheus::Family<prometheus::Counter>* errors_total_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* preemptions_;
  std::unique_ptr<KvTierMetrics> tier_metrics_;  // also spillway_prefix_cache_hits_total

  absl::Mutex render_mu_;
  // EngineStats' cumulative counters at the last Render (counters only grow by the difference).
  scheduler::EngineStats last_ ABSL_GUARDED_BY(render_mu_);
};

}  // namespace spillway::server::metrics
