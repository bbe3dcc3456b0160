// EngineLoop on its own thread with the FakeModel: concurrent requests, the queue limit,
// cancellation and deadlines freeing blocks within a step, shutdown, and no spinning when idle.
#include "scheduler/engine_loop.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "absl/synchronization/notification.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"
#include "tests/scheduler/drain_channel.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::FakeModel;
using namespace std::chrono_literals;

constexpr int32_t kBlocks = 32;

using spillway::testing::DrainUntilClosed;

std::vector<TokenId> TokensOf(const std::vector<TokenEvent>& events) {
  std::vector<TokenId> out;
  for (const TokenEvent& e : events) out.insert(out.end(), e.token_ids.begin(), e.token_ids.end());
  return out;
}

class EngineLoopTest : public ::testing::Test {
 protected:
  explicit EngineLoopTest(FakeModel::NextTokenFn rule = &FakeModel::LastTokenRule,
                          int64_t context = 1024)
      : model_({.vocab_size = 258,
                .context_length = context,
                .num_blocks = kBlocks,
                .next_token = std::move(rule)}) {}

  Request MakeRequest(int max_tokens, std::vector<TokenId> prompt = {'a', 'b', 'c'}) {
    Request r;
    r.id = loop_->NextRequestId();
    r.prompt = std::move(prompt);
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = max_tokens;
    r.channel = std::make_shared<TokenChannel>();
    return r;
  }
  void MakeLoop(EngineLoopOptions options) {
    loop_ = std::make_unique<EngineLoop>(model_, kv_, *tokenizer_, options);
  }

  std::unique_ptr<engine::Tokenizer> tokenizer_ = spillway::testing::MakeByteTokenizer();
  FakeModel model_;
  kvcache::KvCache kv_{kBlocks};
  std::unique_ptr<EngineLoop> loop_;
};

TEST_F(EngineLoopTest, ServesConcurrentRequestsAndNotifies) {
  MakeLoop({.max_batch_tokens = 16, .max_running_seqs = 4});
  loop_->Start();
  std::vector<std::shared_ptr<TokenChannel>> channels;
  std::atomic<int> notified{0};
  for (int i = 0; i < 6; ++i) {
    Request r = MakeRequest(5 + i, {'a', static_cast<TokenId>('b' + i)});
    r.channel = std::make_shared<TokenChannel>([&notified] { ++notified; });
    channels.push_back(r.channel);
    ASSERT_TRUE(loop_->Submit(std::move(r)).ok());
  }
  for (int i = 0; i < 6; ++i) {
    const std::vector<TokenEvent> events = DrainUntilClosed(*channels[i]);
    std::vector<TokenId> expected = {'a', static_cast<TokenId>('b' + i)};
    for (int k = 0; k < 5 + i; ++k) expected.push_back(FakeModel::LastTokenRule(expected));
    EXPECT_EQ(TokensOf(events), std::vector<TokenId>(expected.begin() + 2, expected.end()));
    EXPECT_EQ(events.size(), static_cast<size_t>(5 + i));  // one event per step and token
    ASSERT_TRUE(events.back().usage.has_value());
    EXPECT_EQ(events.back().usage->completion_tokens, 5 + i);
  }
  EXPECT_GE(notified.load(), 6 * 6);
  const EngineStats stats = loop_->stats();
  EXPECT_EQ(stats.running_seqs, 0);
  EXPECT_EQ(stats.kv_used_blocks, 0);
  EXPECT_EQ(stats.kv_total_blocks, kBlocks);
  // Idle: the loop waits for work instead of stepping.
  std::this_thread::sleep_for(30ms);
  const int64_t steps = loop_->stats().steps;
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(loop_->stats().steps, steps);
}

TEST_F(EngineLoopTest, QueueLimitRefusesWithResourceExhaustedThenRecovers) {
  MakeLoop({.max_queued_requests = 2});
  Request a = MakeRequest(3), b = MakeRequest(3), c = MakeRequest(3);
  auto ca = a.channel, cb = b.channel, cc = c.channel;
  ASSERT_TRUE(loop_->Submit(std::move(a)).ok());
  ASSERT_TRUE(loop_->Submit(std::move(b)).ok());
  const absl::Status full = loop_->Submit(std::move(c));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  loop_->Start();
  DrainUntilClosed(*ca);
  DrainUntilClosed(*cb);
  bool closed = false;
  EXPECT_TRUE(cc->Drain(&closed).empty());
  EXPECT_FALSE(closed);
  Request d = MakeRequest(2);
  auto cd = d.channel;
  EXPECT_TRUE(loop_->Submit(std::move(d)).ok());
  EXPECT_EQ(TokensOf(DrainUntilClosed(*cd)).size(), 2u);
}

TEST_F(EngineLoopTest, StopWithoutStartEndsWhatWasSubmitted) {
  MakeLoop({});
  Request r = MakeRequest(3);
  auto channel = r.channel;
  ASSERT_TRUE(loop_->Submit(std::move(r)).ok());
  loop_->Stop();
  const std::vector<TokenEvent> events = DrainUntilClosed(*channel);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(events[0].error.code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineLoopTest, RefusesRequestsTheFrontEndShouldHaveCaught) {
  MakeLoop({});
  Request empty = MakeRequest(3, {});
  EXPECT_EQ(loop_->Submit(std::move(empty)).code(), absl::StatusCode::kInvalidArgument);
  Request too_long = MakeRequest(3, std::vector<TokenId>(1024, 'a'));
  EXPECT_EQ(loop_->Submit(std::move(too_long)).code(), absl::StatusCode::kInvalidArgument);
  Request bad_token = MakeRequest(3, {999});
  EXPECT_EQ(loop_->Submit(std::move(bad_token)).code(), absl::StatusCode::kInvalidArgument);
  Request bad_n = MakeRequest(3);
  bad_n.n = 0;
  EXPECT_EQ(loop_->Submit(std::move(bad_n)).code(), absl::StatusCode::kInvalidArgument);
  Request bad_temp = MakeRequest(3);
  bad_temp.sampling.temperature = -1;
  EXPECT_EQ(loop_->Submit(std::move(bad_temp)).code(), absl::StatusCode::kInvalidArgument);
}

// A model slow enough (1 ms per step) that a request is still running when cancelled.
class SlowEngineLoopTest : public EngineLoopTest {
 protected:
  SlowEngineLoopTest()
      : EngineLoopTest(
            [](std::span<const TokenId> context) {
              std::this_thread::sleep_for(1ms);
              return FakeModel::LastTokenRule(context);
            },
            /*context=*/100000) {}
};

TEST_F(SlowEngineLoopTest, CancelFreesTheBlocksWithinAStep) {
  MakeLoop({});
  loop_->Start();
  Request r = MakeRequest(100000);
  const RequestId id = r.id;
  auto channel = r.channel;
  ASSERT_TRUE(loop_->Submit(std::move(r)).ok());
  while (loop_->stats().kv_used_blocks == 0) std::this_thread::sleep_for(1ms);
  loop_->Cancel(id);
  const std::vector<TokenEvent> events = DrainUntilClosed(*channel);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(events.back().error.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(events.back().usage.has_value());
  // The blocks were freed in the same step that pushed the final event.
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  while (loop_->stats().kv_used_blocks != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(loop_->stats().kv_used_blocks, 0);
}

TEST_F(SlowEngineLoopTest, DeadlineEndsTheRequest) {
  MakeLoop({});
  loop_->Start();
  Request r = MakeRequest(100000);
  r.deadline = std::chrono::steady_clock::now() + 20ms;
  auto channel = r.channel;
  ASSERT_TRUE(loop_->Submit(std::move(r)).ok());
  const std::vector<TokenEvent> events = DrainUntilClosed(*channel);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(events.back().error.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(SlowEngineLoopTest, StopEndsEveryRequestWithUnavailable) {
  MakeLoop({.max_running_seqs = 1});
  loop_->Start();
  Request running = MakeRequest(100000), waiting = MakeRequest(100000);
  auto cr = running.channel, cw = waiting.channel;
  ASSERT_TRUE(loop_->Submit(std::move(running)).ok());
  ASSERT_TRUE(loop_->Submit(std::move(waiting)).ok());
  std::this_thread::sleep_for(10ms);
  loop_->Stop();
  for (auto* c : {cr.get(), cw.get()}) {
    const std::vector<TokenEvent> events = DrainUntilClosed(*c);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().error.code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(loop_->Submit(MakeRequest(1)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(kv_.occupancy().used_blocks, 0);
}

}  // namespace
}  // namespace spillway::scheduler
