// EngineLoop::ReserveKvBlocks / ReleaseKvBlocks (issue #7: a fine-tuning job's memory comes
// out of the KV pool): a reservation is granted only when the loop holds no request (so no
// sequence is ever preempted for it), the backend hook sees the blocks, stats show them,
// requests that arrive meanwhile are served from the smaller pool (and one that can never fit
// there is refused with the smaller figure), and a release gives them back.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/engine_loop.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"
#include "tests/scheduler/drain_channel.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::DrainUntilClosed;
using spillway::testing::FakeModel;
using namespace std::chrono_literals;

constexpr int32_t kBlocks = 16;

// The `granted` callback's status, as a future.
struct Granted {
  std::promise<absl::Status> promise;
  std::future<absl::Status> future = promise.get_future();
  absl::AnyInvocable<void(absl::Status) &&> Callback() {
    return [this](absl::Status st) { promise.set_value(std::move(st)); };
  }
  bool ready() { return future.wait_for(0s) == std::future_status::ready; }
  absl::Status Wait() {
    EXPECT_EQ(future.wait_for(5s), std::future_status::ready);
    return future.get();
  }
};

// The fake model, 1 ms a step: a request of a few hundred tokens is held long enough to post
// a reservation while it runs.
class SlowModel final : public engine::Model {
 public:
  explicit SlowModel(FakeModel& inner) : inner_(inner) {}
  const engine::ModelConfig& config() const override { return inner_.config(); }
  absl::Status Forward(const engine::Batch& batch, std::vector<float>* logits) override {
    std::this_thread::sleep_for(1ms);
    return inner_.Forward(batch, logits);
  }

 private:
  FakeModel& inner_;
};

class EngineLoopKvReservationTest : public ::testing::Test {
 protected:
  Request MakeRequest(int32_t prompt_tokens, int max_tokens) {
    Request r;
    r.id = loop_.NextRequestId();
    r.prompt.assign(prompt_tokens, 'a');
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = max_tokens;
    r.stop.ignore_eos = true;
    r.channel = std::make_shared<TokenChannel>();
    return r;
  }
  static void WaitFor(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(done());
  }

  std::unique_ptr<engine::Tokenizer> tokenizer_ = spillway::testing::MakeByteTokenizer();
  FakeModel fake_{{.vocab_size = 258,
                   .context_length = 1024,
                   .num_blocks = kBlocks,
                   .next_token = &FakeModel::LastTokenRule}};
  SlowModel model_{fake_};
  kvcache::KvCache kv_{kBlocks};
  absl::Mutex hook_mu_;
  std::vector<kvcache::BlockId> discarded_ ABSL_GUARDED_BY(hook_mu_);
  EngineLoop loop_{
      model_,
      kv_,
      *tokenizer_,
      {.max_batch_tokens = 64, .on_kv_reserved = [this](std::span<const kvcache::BlockId> b) {
         absl::MutexLock lock(&hook_mu_);
         discarded_.insert(discarded_.end(), b.begin(), b.end());
       }}};
};

TEST_F(EngineLoopKvReservationTest, GrantedWhenIdleServedFromTheSmallerPoolThenReleased) {
  loop_.Start();
  Granted granted;
  loop_.ReserveKvBlocks("job", 10, granted.Callback());
  EXPECT_TRUE(granted.Wait().ok());
  WaitFor([&] { return loop_.stats().kv_reserved_blocks == 10; });
  EXPECT_EQ(loop_.stats().kv_used_blocks, 0);
  EXPECT_EQ(loop_.stats().kv_total_blocks, kBlocks);
  {
    absl::MutexLock lock(&hook_mu_);
    EXPECT_EQ(discarded_, (std::vector<kvcache::BlockId>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  }

  // 6 blocks are left: a request of 5 blocks' worth runs; its output is the fake model's.
  Request fits = MakeRequest(4 * kvcache::kBlockTokens, 8);
  std::shared_ptr<TokenChannel> fits_channel = fits.channel;
  ASSERT_TRUE(loop_.Submit(std::move(fits)).ok());
  std::vector<TokenEvent> events = DrainUntilClosed(*fits_channel);
  ASSERT_EQ(events.size(), 8u);
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  for (const TokenEvent& e : events) EXPECT_TRUE(e.error.ok()) << e.error;

  // One of 7 blocks can never fit in the 6 left: refused, with the smaller pool's size.
  Request too_big = MakeRequest(6 * kvcache::kBlockTokens + 4, 4);
  std::shared_ptr<TokenChannel> big_channel = too_big.channel;
  ASSERT_TRUE(loop_.Submit(std::move(too_big)).ok());
  events = DrainUntilClosed(*big_channel);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish_reason, FinishReason::kError);
  EXPECT_EQ(events.back().error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(events.back().error.message().find("(6 blocks of"), std::string::npos)
      << events.back().error;

  // Released: the whole pool serves again, and the same request now runs.
  loop_.ReleaseKvBlocks("job");
  WaitFor([&] { return loop_.stats().kv_reserved_blocks == 0; });
  Request again = MakeRequest(6 * kvcache::kBlockTokens + 4, 4);
  std::shared_ptr<TokenChannel> again_channel = again.channel;
  ASSERT_TRUE(loop_.Submit(std::move(again)).ok());
  events = DrainUntilClosed(*again_channel);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  loop_.Stop();
}

TEST_F(EngineLoopKvReservationTest, WaitsUntilNoRequestIsHeld) {
  loop_.Start();
  // A long request holds blocks; the reservation asked meanwhile is granted only once it ends,
  // and it never preempted it.
  Request r = MakeRequest(3 * kvcache::kBlockTokens, 200);
  std::shared_ptr<TokenChannel> channel = r.channel;
  ASSERT_TRUE(loop_.Submit(std::move(r)).ok());
  WaitFor([&] { return loop_.stats().kv_used_blocks > 0; });
  Granted granted;
  std::atomic<int64_t> running_at_grant{-1};
  std::atomic<int64_t> steps_at_grant{-1};
  loop_.ReserveKvBlocks("job", kBlocks - 1, [&](absl::Status st) {
    running_at_grant = loop_.stats().running_seqs;
    steps_at_grant = loop_.stats().steps;
    granted.promise.set_value(std::move(st));
  });
  std::vector<TokenEvent> events = DrainUntilClosed(*channel);
  ASSERT_EQ(events.size(), 200u);
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  EXPECT_TRUE(granted.Wait().ok());
  EXPECT_EQ(running_at_grant.load(), 0);
  EXPECT_EQ(steps_at_grant.load(), loop_.stats().steps);  // every step ran before the grant
  EXPECT_EQ(loop_.stats().preemptions, 0);
  WaitFor([&] { return loop_.stats().kv_reserved_blocks == kBlocks - 1; });
  loop_.Stop();
}

TEST_F(EngineLoopKvReservationTest, TooBigFailsAndASecondOwnerWaitsForTheFirst) {
  loop_.Start();
  Granted too_big;
  loop_.ReserveKvBlocks("big", kBlocks + 1, too_big.Callback());
  EXPECT_EQ(too_big.Wait().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(loop_.stats().kv_reserved_blocks, 0);

  Granted first, second;
  loop_.ReserveKvBlocks("a", 10, first.Callback());
  loop_.ReserveKvBlocks("b", 10, second.Callback());
  EXPECT_TRUE(first.Wait().ok());
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(second.ready());  // waits: 6 blocks left
  EXPECT_EQ(loop_.stats().kv_reserved_blocks, 10);
  loop_.ReleaseKvBlocks("a");
  EXPECT_TRUE(second.Wait().ok());
  WaitFor([&] { return loop_.stats().kv_reserved_blocks == 10; });

  // A pending reservation released before it is granted is dropped, its callback never runs.
  Granted dropped;
  loop_.ReserveKvBlocks("c", 10, dropped.Callback());
  loop_.ReleaseKvBlocks("c");
  loop_.ReleaseKvBlocks("b");
  WaitFor([&] { return loop_.stats().kv_reserved_blocks == 0; });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(dropped.ready());
  EXPECT_EQ(loop_.stats().kv_reserved_blocks, 0);
  loop_.Stop();
}

}  // namespace
}  // namespace spillway::scheduler
