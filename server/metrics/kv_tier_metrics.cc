#include "server/metrics/kv_tier_metrics.h"

#include <utility>
#include <vector>

namespace spillway::server::metrics {
namespace {

std::string Key(const std::string& family, const std::map<std::string, std::string>& labels) {
  std::string key = family;
  for (const auto& [k, v] : labels) key += "|" + k + "=" + v;
  return key;
}

}  // namespace

KvTierMetrics::KvTierMetrics(prometheus::Registry& r, std::string model,
                             prometheus::Family<prometheus::Gauge>& blocks,
                             prometheus::Family<prometheus::Gauge>& usage,
                             prometheus::Family<prometheus::Counter>& prefix_hits)
    : model_(std::move(model)), blocks_(blocks), usage_(usage), prefix_hits_(prefix_hits) {
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(r);
  };
  spills_ = counter("spillway_kv_spill_blocks_total",
                    "KV blocks moved down a tier (device->host, host->disk).");
  loads_ = counter("spillway_kv_load_blocks_total",
                   "KV blocks brought back up a tier (disk->host, host->device).");
  bytes_ = counter("spillway_kv_bytes_moved_total", "Bytes moved between KV tiers.");
  errors_ = counter("spillway_kv_tier_errors_total",
                    "KV tier failures by tier and kind (a failed or corrupt block is a miss).");
  copies_in_flight_ = &prometheus::BuildGauge()
                           .Name("spillway_kv_copies_in_flight")
                           .Help("Device<->host KV block copies started and not yet complete.")
                           .Register(r);
  copy_waits_ = counter("spillway_kv_copy_waits_total",
                        "Times the engine thread blocked on a device<->host KV copy in flight.");
  std::vector<double> bounds(kvcache::kLoadSecondsBuckets.begin(),
                             kvcache::kLoadSecondsBuckets.end());
  load_seconds_ =
      &prometheus::BuildHistogram()
           .Name("spillway_kv_load_seconds")
           .Help("Time to bring one KV block back (disk->host read, host->device copy).")
           .Register(r)
           .Add({{"model", model_}}, bounds);
  for (const char* tier : {"device", "host", "disk"}) {
    prefix_hits_.Add({{"model", model_}, {"tier", tier}});
  }
}

void KvTierMetrics::Grow(prometheus::Family<prometheus::Counter>& family,
                         const std::map<std::string, std::string>& labels, int64_t now) {
  std::map<std::string, std::string> all = labels;
  all["model"] = model_;
  int64_t& last = last_[Key(family.GetName(), all)];
  prometheus::Counter& c = family.Add(all);
  if (now > last) {
    c.Increment(static_cast<double>(now - last));
    last = now;
  }
}

void KvTierMetrics::Update(const scheduler::EngineStats& s) {
  for (int t = 0; t < kvcache::kNumTiers; ++t) {
    Grow(prefix_hits_, {{"tier", std::string(kvcache::TierName(static_cast<kvcache::Tier>(t)))}},
         s.prefix_cache_hits_by_tier[t]);
  }
  if (!s.tiers.has_value()) return;
  const kvcache::TierStats& k = *s.tiers;
  auto set_tier = [&](const char* tier, int64_t used, int64_t total) {
    blocks_.Add({{"model", model_}, {"tier", tier}, {"state", "used"}}).Set(used);
    blocks_.Add({{"model", model_}, {"tier", tier}, {"state", "free"}}).Set(total - used);
    usage_.Add({{"model", model_}, {"tier", tier}})
        .Set(total > 0 ? static_cast<double>(used) / total : 0.0);
  };
  set_tier("host", k.host_used, k.host_slots);
  if (k.disk_enabled) set_tier("disk", k.disk_blocks, k.disk_capacity_blocks);

  Grow(*spills_, {{"from", "device"}, {"to", "host"}}, k.spills_device_host);
  Grow(*spills_, {{"from", "host"}, {"to", "disk"}}, k.spills_host_disk);
  Grow(*loads_, {{"from", "host"}, {"to", "device"}}, k.loads_host_device);
  Grow(*loads_, {{"from", "disk"}, {"to", "host"}}, k.loads_disk_host);
  Grow(*bytes_, {{"from", "device"}, {"to", "host"}}, k.bytes_device_host);
  Grow(*bytes_, {{"from", "host"}, {"to", "disk"}}, k.bytes_host_disk);
  Grow(*bytes_, {{"from", "host"}, {"to", "device"}}, k.bytes_host_device);
  Grow(*bytes_, {{"from", "disk"}, {"to", "host"}}, k.bytes_disk_host);
  Grow(*errors_, {{"tier", "host"}, {"kind", "copy"}}, k.host_errors);
  copies_in_flight_->Add({{"model", model_}, {"from", "device"}, {"to", "host"}})
      .Set(k.spills_in_flight);
  copies_in_flight_->Add({{"model", model_}, {"from", "host"}, {"to", "device"}})
      .Set(k.loads_in_flight);
  Grow(*copy_waits_, {}, k.copy_waits);
  if (k.disk_enabled) {
    for (int r = 1; r < kvcache::kNumDiskResults; ++r) {
      Grow(*errors_,
           {{"tier", "disk"},
            {"kind", std::string(kvcache::DiskResultName(static_cast<kvcache::DiskResult>(r)))}},
           k.disk_errors[r]);
    }
    Grow(*errors_, {{"tier", "disk"}, {"kind", "key_mismatch"}}, k.disk_key_mismatches);
    blocks_.Add({{"model", model_}, {"tier", "disk"}, {"state", "degraded"}})
        .Set(k.disk_degraded ? 1 : 0);
  }

  std::vector<double> increments(k.load_buckets.size());
  bool any = false;
  for (size_t i = 0; i < k.load_buckets.size(); ++i) {
    increments[i] = static_cast<double>(k.load_buckets[i] - last_buckets_[i]);
    any |= increments[i] > 0;
  }
  if (any) {
    load_seconds_->ObserveMultiple(increments, k.load_seconds_sum - last_load_sum_);
    last_buckets_ = k.load_buckets;
    last_load_sum_ = k.load_seconds_sum;
  }
}

}  // namespace spillway::server::metrics
