// KvTierMetrics: the Prometheus series of the tiered KV cache (docs/kv-tiers.md, issue #6) —
// host and SSD occupancy in spillway_kv_blocks / spillway_kv_usage_ratio (whose device series
// ServerMetrics keeps), prefix-cache hits by tier, blocks and bytes moved between tiers, load
// times, device<->host copies in flight and the engine thread's waits on them, tier errors.
// ServerMetrics owns one and calls Update at each scrape with the engine's stats; counters
// grow by the difference from the last scrape.
// Thread safety: Update is called under ServerMetrics' render lock only.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "scheduler/engine_loop.h"

namespace spillway::server::metrics {

class KvTierMetrics {
 public:
  // `blocks` and `usage` are ServerMetrics' spillway_kv_blocks / spillway_kv_usage_ratio
  // families; `prefix_hits` its spillway_prefix_cache_hits_total family (labels model, tier).
  KvTierMetrics(prometheus::Registry& registry, std::string model,
                prometheus::Family<prometheus::Gauge>& blocks,
                prometheus::Family<prometheus::Gauge>& usage,
                prometheus::Family<prometheus::Counter>& prefix_hits);

  void Update(const scheduler::EngineStats& stats);

 private:
  // Adds `now - last` to the counter with `labels` (created on first use) and remembers now.
  void Grow(prometheus::Family<prometheus::Counter>& family,
            const std::map<std::string, std::string>& labels, int64_t now);

  const std::string model_;
  prometheus::Family<prometheus::Gauge>& blocks_;
  prometheus::Family<prometheus::Gauge>& usage_;
  prometheus::Family<prometheus::Counter>& prefix_hits_;
  prometheus::Family<prometheus::Counter>* spills_;
  prometheus::Family<prometheus::Counter>* loads_;
  prometheus::Family<prometheus::Counter>* bytes_;
  prometheus::Family<prometheus::Counter>* errors_;
  prometheus::Family<prometheus::Gauge>* copies_in_flight_;
  prometheus::Family<prometheus::Counter>* copy_waits_;
  prometheus::Histogram* load_seconds_;
  // The last value added per counter series (by its label string).
  std::map<std::string, int64_t> last_;
  std::array<int64_t, kvcache::kLoadSecondsBuckets.size() + 1> last_buckets_{};
  double last_load_sum_ = 0;
};

}  // namespace spillway::server::metrics
