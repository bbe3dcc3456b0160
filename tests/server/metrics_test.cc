// ServerMetrics' exposition (names, labels, HELP/TYPE lines) and MeteredEngine's per-request
// observations, with a fake engine that answers synchronously.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/metered_engine.h"
#include "server/metrics/server_metrics.h"

namespace spillway::server::metrics {
namespace {

using ::testing::HasSubstr;

scheduler::EngineStats Stats() {
  return {.running_seqs = 3,
          .waiting_requests = 2,
          .kv_used_blocks = 25,
          .kv_cached_blocks = 10,
          .kv_total_blocks = 100,
          .preemptions = 4,
          .prefix_cache_queries = 64,
          .prefix_cache_hits = 32,
          .steps = 9,
          .prefix_cache_hits_by_tier = {32, 0, 0}};
}

TEST(ServerMetricsTest, ExposesEveryMetricWithHelpAndType) {
  ServerMetrics m("tiny");
  const std::string text = m.Render(Stats());
  for (const char* h :
       {"spillway_time_to_first_token_seconds", "spillway_inter_token_latency_seconds",
        "spillway_e2e_request_latency_seconds", "spillway_request_queue_time_seconds",
        "spillway_request_prompt_tokens", "spillway_request_generation_tokens",
        "spillway_iteration_tokens"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + h + " histogram\n")) << h;
    EXPECT_THAT(text, HasSubstr(std::string("# HELP ") + h + " ")) << h;
  }
  for (const char* g : {"spillway_requests_running", "spillway_requests_waiting",
                        "spillway_kv_blocks", "spillway_kv_usage_ratio"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + g + " gauge\n")) << g;
    EXPECT_THAT(text, HasSubstr(std::string("# HELP ") + g + " ")) << g;
  }
  for (const char* c : {"spillway_prompt_tokens_total", "spillway_generation_tokens_total",
                        "spillway_requests_total", "spillway_prefix_cache_queries_total",
                        "spillway_prefix_cache_hits_total", "spillway_preemptions_total"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + c + " counter\n")) << c;
  }
  EXPECT_THAT(text, HasSubstr("spillway_requests_running{model=\"tiny\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("spillway_requests_waiting{model=\"tiny\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_usage_ratio{model=\"tiny\",tier=\"device\"} 0.25\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"used\",tier=\"device\"} 25\n"));
  EXPECT_THAT(
      text, HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"cached\",tier=\"device\"} 10\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"free\",tier=\"device\"} 75\n"));
  EXPECT_THAT(text, HasSubstr("spillway_preemptions_total{model=\"tiny\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("spillway_prefix_cache_queries_total{model=\"tiny\"} 64\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_prefix_cache_hits_total{model=\"tiny\",tier=\"device\"} 32\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_prefix_cache_hits_total{model=\"tiny\",tier=\"host\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("spillway_requests_total{api=\"grpc\",finish_reason=\"length\",model="
                              "\"tiny\"} 0\n"));
  // Counters follow EngineStats by difference and never go back.
  scheduler::EngineStats later = Stats();
  later.preemptions = 6;
  EXPECT_THAT(m.Render(later), HasSubstr("spillway_preemptions_total{model=\"tiny\"} 6\n"));
  EXPECT_THAT(m.Render(Stats()), HasSubstr("spillway_preemptions_total{model=\"tiny\"} 6\n"));
}

TEST(ServerMetricsTest, ReservedBlocksAreNeitherUsedNorFree) {
  // A fine-tuning job holds 50 of the 100 blocks: serving's pool is the other 50.
  ServerMetrics m("tiny");
  scheduler::EngineStats s = Stats();
  s.kv_reserved_blocks = 50;
  const std::string text = m.Render(s);
  EXPECT_THAT(
      text,
      HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"reserved\",tier=\"device\"} 50\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"free\",tier=\"device\"} 25\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_usage_ratio{model=\"tiny\",tier=\"device\"} 0.5\n"));
}

TEST(ServerMetricsTest, KvTierSeriesFollowTheTierStats) {
  ServerMetrics m("tiny");
  scheduler::EngineStats s = Stats();
  kvcache::TierStats t{.host_slots = 8,
                       .host_used = 2,
                       .disk_enabled = true,
                       .disk_capacity_blocks = 100,
                       .disk_blocks = 25,
                       .spills_device_host = 7,
                       .spills_host_disk = 3,
                       .loads_host_device = 5,
                       .loads_disk_host = 1,
                       .bytes_device_host = 7 * 1024};
  t.disk_errors[static_cast<int>(kvcache::DiskResult::kChecksumMismatch)] = 2;
  t.load_buckets[0] = 4;
  t.load_seconds_sum = 0.0002;
  s.tiers = t;
  s.prefix_cache_hits_by_tier = {16, 48, 32};
  const std::string text = m.Render(s);
  for (const char* c : {"spillway_kv_spill_blocks_total", "spillway_kv_load_blocks_total",
                        "spillway_kv_bytes_moved_total", "spillway_kv_tier_errors_total"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + c + " counter\n")) << c;
  }
  EXPECT_THAT(text, HasSubstr("# TYPE spillway_kv_load_seconds histogram\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"used\",tier=\"host\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_kv_blocks{model=\"tiny\",state=\"free\",tier=\"disk\"} 75\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_usage_ratio{model=\"tiny\",tier=\"host\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_spill_blocks_total{from=\"device\",model=\"tiny\","
                              "to=\"host\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_load_blocks_total{from=\"disk\",model=\"tiny\","
                              "to=\"host\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_bytes_moved_total{from=\"device\",model=\"tiny\","
                              "to=\"host\"} 7168\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_tier_errors_total{kind=\"checksum\",model=\"tiny\","
                              "tier=\"disk\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("spillway_prefix_cache_hits_total{model=\"tiny\",tier=\"host\"} 48\n"));
  EXPECT_THAT(text, HasSubstr("spillway_kv_load_seconds_count{model=\"tiny\"} 4\n"));
  // Counters grow by the difference.
  s.tiers->spills_device_host = 9;
  EXPECT_THAT(m.Render(s),
              HasSubstr("spillway_kv_spill_blocks_total{from=\"device\",model=\"tiny\","
                        "to=\"host\"} 9\n"));
}

// Copies in flight are a gauge of the last scrape's stats (by direction, in the from/to labels
// of the other tier series); the engine thread's waits on them a counter.
TEST(ServerMetricsTest, KvCopiesInFlightAndWaits) {
  ServerMetrics m("tiny");
  scheduler::EngineStats s = Stats();
  s.tiers = kvcache::TierStats{
      .host_slots = 8, .spills_in_flight = 3, .loads_in_flight = 1, .copy_waits = 4};
  // The three series as the scrape of `stats` shows them.
  auto expect_series = [&](const scheduler::EngineStats& stats, int spills, int loads, int waits) {
    const std::string text = m.Render(stats);
    EXPECT_THAT(text, HasSubstr("# TYPE spillway_kv_copies_in_flight gauge\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE spillway_kv_copy_waits_total counter\n"));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("spillway_kv_copies_in_flight{from=\"device\",model=",
                                             "\"tiny\",to=\"host\"} ", spills, "\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("spillway_kv_copies_in_flight{from=\"host\",model=",
                                             "\"tiny\",to=\"device\"} ", loads, "\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("spillway_kv_copy_waits_total{model=\"tiny\"} ", waits,
                                             "\n")));
  };
  expect_series(s, 3, 1, 4);
  // The copies complete (the gauge goes down) and two more waits happen.
  s.tiers->spills_in_flight = 0;
  s.tiers->loads_in_flight = 0;
  s.tiers->copy_waits = 6;
  expect_series(s, 0, 0, 6);
}

TEST(ServerMetricsTest, IterationTokensAndErrors) {
  ServerMetrics m("tiny");
  m.OnStep({.start = std::chrono::steady_clock::now(), .num_tokens = 5, .num_seqs = 2});
  m.CountError("http", absl::ResourceExhaustedError("full"));
  const std::string text = m.Render(Stats());
  EXPECT_THAT(text, HasSubstr("spillway_iteration_tokens_count{model=\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("spillway_iteration_tokens_bucket{model=\"tiny\",le=\"4\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("spillway_iteration_tokens_bucket{model=\"tiny\",le=\"8\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE spillway_errors_total counter\n"));
  EXPECT_THAT(text, HasSubstr("spillway_errors_total{api=\"http\",code=\"RESOURCE_EXHAUSTED\","
                              "model=\"tiny\"} 1\n"));
}

// Answers each Submit at once: `tokens` events for choice 0, the last one finishing with
// kLength and carrying usage; or fails with `refuse`.
class FakeEngine final : public openai::GenerationEngine {
 public:
  absl::Status Submit(scheduler::Request r) override {
    if (!refuse.ok()) return refuse;
    for (int i = 0; i < tokens; ++i) {
      scheduler::TokenEvent e{.token_ids = {7}, .text = "x"};
      if (i + 1 == tokens) {
        e.finish_reason = scheduler::FinishReason::kLength;
        e.usage = scheduler::Usage{.prompt_tokens = static_cast<int32_t>(r.prompt.size()),
                                   .completion_tokens = tokens};
      }
      r.channel->Push(std::move(e));
    }
    r.channel->Close();
    return absl::OkStatus();
  }
  void Cancel(scheduler::RequestId) override {}
  scheduler::RequestId NextRequestId() override { return 1; }
  scheduler::EngineStats stats() const override { return {}; }

  int tokens = 3;
  absl::Status refuse;
};

TEST(MeteredEngineTest, ForwardsEventsAndRecordsTheRequest) {
  ServerMetrics m("tiny");
  FakeEngine fake;
  MeteredEngine engine(fake, m, "grpc");
  auto channel = std::make_shared<scheduler::TokenChannel>();
  ASSERT_TRUE(engine.Submit({.id = 1, .prompt = {1, 2, 3, 4}, .channel = channel}).ok());
  bool closed = false;
  std::vector<scheduler::TokenEvent> events = channel->Drain(&closed);
  EXPECT_TRUE(closed);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].finish_reason, scheduler::FinishReason::kLength);

  const std::string text = m.Render({});
  EXPECT_THAT(text, HasSubstr("spillway_requests_total{api=\"grpc\",finish_reason=\"length\","
                              "model=\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("spillway_prompt_tokens_total{api=\"grpc\",model=\"tiny\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("spillway_generation_tokens_total{api=\"grpc\",model=\"tiny\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("spillway_time_to_first_token_seconds_count{api=\"grpc\",model="
                              "\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("spillway_inter_token_latency_seconds_count{api=\"grpc\",model="
                              "\"tiny\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("spillway_e2e_request_latency_seconds_count{api=\"grpc\",model="
                              "\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("spillway_request_generation_tokens_sum{api=\"grpc\",model="
                              "\"tiny\"} 3\n"));
}

TEST(MeteredEngineTest, CountsRefusals) {
  ServerMetrics m("tiny");
  FakeEngine fake;
  fake.refuse = absl::ResourceExhaustedError("queue full");
  MeteredEngine engine(fake, m, "http");
  auto channel = std::make_shared<scheduler::TokenChannel>();
  EXPECT_EQ(engine.Submit({.id = 1, .prompt = {1}, .channel = channel}).code(),
            absl::StatusCode::kResourceExhausted);
  const std::string text = m.Render({});
  EXPECT_THAT(text, HasSubstr("spillway_errors_total{api=\"http\",code=\"RESOURCE_EXHAUSTED\","
                              "model=\"tiny\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr("spillway_e2e_request_latency_seconds_count{api=\"http\",model=\"tiny\"} 0\n"));
}

}  // namespace
}  // namespace spillway::server::metrics
