// EngineLoop::Post (backend work such as loading LoRA adapters, server/adapters/): a task
// posted to a running loop runs on the loop's own thread, also when the loop was idle and
// blocked; from the loop's thread, before Start and after Stop it runs at once on the
// caller's thread. Submit refuses
// a half-set adapter reference.
#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "kvcache/kv_cache.h"
#include "scheduler/engine_loop.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::FakeModel;

constexpr int32_t kBlocks = 16;

TEST(EngineLoopPost, RunsOnTheLoopThreadWhileRunningAndInlineOtherwise) {
  FakeModel model({.vocab_size = 258, .num_blocks = kBlocks});
  kvcache::KvCache kv(kBlocks);
  auto tokenizer = spillway::testing::MakeByteTokenizer();
  EngineLoop loop(model, kv, *tokenizer, {});

  std::thread::id ran_on;
  loop.Post([&] { ran_on = std::this_thread::get_id(); });  // not started: inline
  EXPECT_EQ(ran_on, std::this_thread::get_id());

  loop.Start();
  std::thread::id loop_thread;
  absl::Notification first;
  loop.Post([&] {
    loop_thread = std::this_thread::get_id();
    first.Notify();
  });
  ASSERT_TRUE(first.WaitForNotificationWithTimeout(absl::Seconds(5)));  // woke an idle loop
  EXPECT_NE(loop_thread, std::this_thread::get_id());
  // Tasks run in posting order, on the same thread.
  std::vector<int> order;
  absl::Notification done;
  for (int i = 0; i < 3; ++i) {
    loop.Post([&, i] {
      EXPECT_EQ(std::this_thread::get_id(), loop_thread);
      order.push_back(i);
      if (i == 2) done.Notify();
    });
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  // Posted from the loop's own thread (a task, or a request's adapter freed there): at once.
  absl::Notification nested;
  loop.Post([&] {
    bool inner_ran = false;
    loop.Post([&] { inner_ran = true; });
    EXPECT_TRUE(inner_ran);
    nested.Notify();
  });
  ASSERT_TRUE(nested.WaitForNotificationWithTimeout(absl::Seconds(5)));

  loop.Stop();
  ran_on = {};
  loop.Post([&] { ran_on = std::this_thread::get_id(); });  // stopped: inline
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(EngineLoopPost, SubmitRefusesAHalfSetAdapter) {
  FakeModel model({.vocab_size = 258, .num_blocks = kBlocks});
  kvcache::KvCache kv(kBlocks);
  auto tokenizer = spillway::testing::MakeByteTokenizer();
  EngineLoop loop(model, kv, *tokenizer, {});
  Request r;
  r.id = loop.NextRequestId();
  r.prompt = {'a', 'b'};
  r.channel = std::make_shared<TokenChannel>();
  r.adapter.id = 5;  // an id without weights
  EXPECT_EQ(loop.Submit(std::move(r)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spillway::scheduler
