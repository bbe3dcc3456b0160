#include "server/metrics/server_metrics.h"

#include <algorithm>
#include <utility>

#include "prometheus/text_serializer.h"

namespace spillway::server::metrics {
namespace {

using prometheus::Histogram;

// Latencies from 1 ms (a decode step of a small model) to 10 minutes (a long generation).
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries* b = new Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
      1,     1.5,    2,     2.5,  5,    7.5,  10,   15,   20,  30,   45,  60,  120, 300, 600};
  return *b;
}

// Token counts: powers of two from 1 to 32768.
const Histogram::BucketBoundaries& TokenBuckets() {
  static const Histogram::BucketBoundaries* b = [] {
    auto* v = new Histogram::BucketBoundaries;
    for (double x = 1; x <= 32768; x *= 2) v->push_back(x);
    return v;
  }();
  return *b;
}

int64_t Nanos(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

ServerMetrics::ServerMetrics(std::string model_name)
    : model_(std::move(model_name)), registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  auto hist = [&](const char* name, const char* help) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(r);
  };
  ttft_ = hist("spillway_time_to_first_token_seconds",
               "Time from a request's arrival to its first generated token.");
  itl_ = hist("spillway_inter_token_latency_seconds",
              "Time between consecutive generated tokens of one choice.");
  e2e_ = hist("spillway_e2e_request_latency_seconds",
              "Time from a request's arrival to its last event.");
  queue_ = hist("spillway_request_queue_time_seconds",
                "Time from a request's arrival to the start of the step that produced its first "
                "token.");
  prompt_hist_ = hist("spillway_request_prompt_tokens", "Prompt tokens per request.");
  gen_hist_ =
      hist("spillway_request_generation_tokens", "Generated tokens per request (all choices).");
  iteration_tokens_ = &hist("spillway_iteration_tokens", "Tokens per engine step (batch size).")
                           ->Add({{"model", model_}}, TokenBuckets());

  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(r);
  };
  running_ = &gauge("spillway_requests_running", "Sequences running (decoding or prefilling).")
                  ->Add({{"model", model_}});
  waiting_ =
      &gauge("spillway_requests_waiting", "Requests waiting to start.")->Add({{"model", model_}});
  auto* blocks = gauge("spillway_kv_blocks",
                       "KV cache blocks by state: used (referenced by a sequence), cached "
                       "(indexed for prefix reuse; overlaps used), reserved (held for a "
                       "fine-tuning job's memory), free (total - used - reserved).");
  kv_used_ = &blocks->Add({{"model", model_}, {"tier", "device"}, {"state", "used"}});
  kv_cached_ = &blocks->Add({{"model", model_}, {"tier", "device"}, {"state", "cached"}});
  kv_reserved_ = &blocks->Add({{"model", model_}, {"tier", "device"}, {"state", "reserved"}});
  kv_free_ = &blocks->Add({{"model", model_}, {"tier", "device"}, {"state", "free"}});
  auto* usage = gauge("spillway_kv_usage_ratio",
                      "Used KV blocks / the blocks serving can use (total - reserved) (0-1).");
  kv_usage_ = &usage->Add({{"model", model_}, {"tier", "device"}});

  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r);
  };
  prompt_total_ = counter("spillway_prompt_tokens_total", "Prompt tokens of finished requests.");
  gen_total_ = counter("spillway_generation_tokens_total", "Generated tokens.");
  requests_total_ = counter("spillway_requests_total", "Finished requests by finish reason.");
  errors_total_ =
      counter("spillway_errors_total", "Requests refused or ended by an error, by status code.");
  prefix_queries_ = &counter("spillway_prefix_cache_queries_total",
                             "Prompt tokens looked up in the prefix cache.")
                         ->Add({{"model", model_}});
  // NOTE(tiers): hits are labelled by the tier the tokens came from (device, host, disk);
  // KvTierMetrics keeps them, and sum() over tier is the old total.
  auto* prefix_hits = counter("spillway_prefix_cache_hits_total",
                              "Prompt tokens found in the prefix cache, by the tier they came from.");
  tier_metrics_ = std::make_unique<KvTierMetrics>(r, model_, *blocks, *usage, *prefix_hits);
  preemptions_ =
      &counter("spillway_preemptions_total", "Sequences preempted because KV blocks ran out.")
           ->Add({{"model", model_}});
  finetune_jobs_ = gauge("spillway_finetune_jobs", "Fine-tuning jobs by status.");
  for (const char* st :
       {"validating_files", "queued", "running", "succeeded", "failed", "cancelled"}) {
    finetune_jobs_->Add({{"model", model_}, {"state", st}});
  }
  finetune_steps_ = &counter("spillway_finetune_steps_total",
                             "Optimizer steps of fine-tuning jobs (run in idle time).")
                         ->Add({{"model", model_}});
  finetune_loss_ = &gauge("spillway_finetune_loss",
                          "Training loss of the latest optimizer step of the running job.")
                        ->Add({{"model", model_}});
  auto* busy = counter("spillway_device_busy_seconds_total",
                       "Seconds the engine loop spent computing, by work: inference (forward "
                       "steps) or training (fine-tuning steps in idle time).");
  busy_inference_ = &busy->Add({{"model", model_}, {"work", "inference"}});
  busy_training_ = &busy->Add({{"model", model_}, {"work", "training"}});
  // Series that exist from the start, so that rate() and absent() work before traffic.
  for (const char* api : {"http", "grpc"}) {
    for (auto reason : {scheduler::FinishReason::kStop, scheduler::FinishReason::kLength,
                        scheduler::FinishReason::kCancelled, scheduler::FinishReason::kError}) {
      requests_total_->Add({{"model", model_},
                            {"api", api},
                            {"finish_reason", std::string(FinishReasonLabel(reason))}});
    }
    for (auto* f : {ttft_, itl_, e2e_, queue_}) Hist(*f, api, LatencyBuckets());
    for (auto* f : {prompt_hist_, gen_hist_}) Hist(*f, api, TokenBuckets());
    prompt_total_->Add({{"model", model_}, {"api", api}});
    gen_total_->Add({{"model", model_}, {"api", api}});
  }
}

std::string_view ServerMetrics::FinishReasonLabel(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kLength:
      return "length";
    case scheduler::FinishReason::kCancelled:
      return "cancelled";
    case scheduler::FinishReason::kError:
      return "error";
    case scheduler::FinishReason::kStop:
    case scheduler::FinishReason::kNone:
      break;
  }
  return "stop";
}

Histogram& ServerMetrics::Hist(prometheus::Family<Histogram>& f, std::string_view api,
                               const Histogram::BucketBoundaries& b) {
  return f.Add({{"model", model_}, {"api", std::string(api)}}, b);
}

void ServerMetrics::OnStep(const scheduler::StepMetrics& step) {
  last_step_start_ns_.store(Nanos(step.start), std::memory_order_relaxed);
  iteration_tokens_->Observe(step.num_tokens);
  // OnStep is called right after the step's forward pass.
  busy_inference_->Increment(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step.start).count());
}

void ServerMetrics::ObserveTrainingPiece(double seconds) { busy_training_->Increment(seconds); }

void ServerMetrics::ObserveTrainingStep(double loss) {
  finetune_steps_->Increment();
  finetune_loss_->Set(loss);
}

void ServerMetrics::SetFineTuneJobs(const std::map<std::string, int64_t>& by_status) {
  for (const auto& [status, n] : by_status) {
    finetune_jobs_->Add({{"model", model_}, {"state", status}}).Set(static_cast<double>(n));
  }
}

std::chrono::steady_clock::time_point ServerMetrics::last_step_start() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::nanoseconds(last_step_start_ns_.load(std::memory_order_relaxed)));
}

void ServerMetrics::ObserveInterTokenLatency(std::string_view api, double seconds) {
  Hist(*itl_, api, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::ObserveRequest(const RequestRecord& r) {
  const std::string api(r.api);
  if (r.queue_s >= 0) Hist(*queue_, api, LatencyBuckets()).Observe(r.queue_s);
  if (r.ttft_s >= 0) Hist(*ttft_, api, LatencyBuckets()).Observe(r.ttft_s);
  Hist(*e2e_, api, LatencyBuckets()).Observe(r.e2e_s);
  Hist(*prompt_hist_, api, TokenBuckets()).Observe(static_cast<double>(r.prompt_tokens));
  Hist(*gen_hist_, api, TokenBuckets()).Observe(static_cast<double>(r.generation_tokens));
  prompt_total_->Add({{"model", model_}, {"api", api}})
      .Increment(static_cast<double>(r.prompt_tokens));
  gen_total_->Add({{"model", model_}, {"api", api}})
      .Increment(static_cast<double>(r.generation_tokens));
  requests_total_
      ->Add({{"model", model_},
             {"api", api},
             {"finish_reason", std::string(FinishReasonLabel(r.finish_reason))}})
      .Increment();
}

void ServerMetrics::CountError(std::string_view api, const absl::Status& status) {
  errors_total_
      ->Add({{"model", model_},
             {"api", std::string(api)},
             {"code", absl::StatusCodeToString(status.code())}})
      .Increment();
}

std::string ServerMetrics::Render(const scheduler::EngineStats& s) {
  {
    absl::MutexLock lock(&render_mu_);
    running_->Set(s.running_seqs);
    waiting_->Set(s.waiting_requests);
    kv_used_->Set(s.kv_used_blocks);
    kv_cached_->Set(s.kv_cached_blocks);
    // Reserved blocks (a fine-tuning job's memory) are neither used nor free: serving's pool is
    // the rest.
    const int32_t serving = s.kv_total_blocks - s.kv_reserved_blocks;
    kv_reserved_->Set(s.kv_reserved_blocks);
    kv_free_->Set(serving - s.kv_used_blocks);
    kv_usage_->Set(serving > 0 ? static_cast<double>(s.kv_used_blocks) / serving : 0.0);
    // EngineStats' counters only grow; a snapshot older than the last one adds nothing.
    auto grow = [](prometheus::Counter* c, int64_t now, int64_t& last) {
      if (now > last) {
        c->Increment(static_cast<double>(now - last));
        last = now;
      }
    };
    grow(prefix_queries_, s.prefix_cache_queries, last_.prefix_cache_queries);
    tier_metrics_->Update(s);
    grow(preemptions_, s.preemptions, last_.preemptions);
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void ServerMetrics::RegisterEndpoint(http::Router& router,
                                     std::function<scheduler::EngineStats()> stats) {
  router.Add("GET", "/metrics",
             [this, stats = std::move(stats)](const http::HttpRequest&, http::Exchange e) {
               e.Reply({.status = 200,
                        .content_type = "text/plain; version=0.0.4; charset=utf-8",
                        .body = Render(stats())});
             });
}

}  // namespace spillway::server::metrics
