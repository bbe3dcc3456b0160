// The engine loop's idle-work rule (issue #7, fine-tuning in idle time): a piece of idle work
// never runs while a request is held, a request submitted while idle work runs is served next
// (no further piece starts first), and idle work resumes when the loop is idle again. The log
// records each model step ("F"), each idle piece as it starts ("I") and each Submit after it
// returned ("S").
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "scheduler/engine_loop.h"
#include "scheduler/idle_work.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::FakeModel;
using namespace std::chrono_literals;

constexpr int32_t kBlocks = 32;

class Log {
 public:
  void Add(char c) {
    absl::MutexLock lock(&mu_);
    log_ += c;
  }
  std::string Get() {
    absl::MutexLock lock(&mu_);
    return log_;
  }

 private:
  absl::Mutex mu_;
  std::string log_ ABSL_GUARDED_BY(mu_);
};

// Logs every Forward, then runs the fake model.
class LoggingModel final : public engine::Model {
 public:
  LoggingModel(FakeModel& inner, Log& log) : inner_(inner), log_(log) {}
  const engine::ModelConfig& config() const override { return inner_.config(); }
  absl::Status Forward(const engine::Batch& batch, std::vector<float>* logits) override {
    log_.Add('F');
    return inner_.Forward(batch, logits);
  }

 private:
  FakeModel& inner_;
  Log& log_;
};

// `budget` pieces of ~1 ms each.
class CountingWork final : public IdleWork {
 public:
  explicit CountingWork(Log& log) : log_(log) {}
  bool HasWork() override { return budget.load() > 0; }
  void RunOnce() override {
    log_.Add('I');
    std::this_thread::sleep_for(1ms);
    budget.fetch_sub(1);
    runs.fetch_add(1);
  }
  std::atomic<int> budget{0};
  std::atomic<int> runs{0};

 private:
  Log& log_;
};

class EngineLoopIdleWorkTest : public ::testing::Test {
 protected:
  Request MakeRequest(int max_tokens) {
    Request r;
    r.id = loop_.NextRequestId();
    r.prompt = {'a', 'b', 'c'};
    r.sampling.temperature = 0.0f;
    r.stop.max_tokens = max_tokens;
    r.channel = std::make_shared<TokenChannel>();
    return r;
  }
  static void WaitClosed(TokenChannel& channel) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    bool closed = false;
    while (!closed && std::chrono::steady_clock::now() < deadline) {
      channel.Drain(&closed);
      if (!closed) std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(closed);
  }
  static void WaitFor(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_TRUE(done());
  }

  Log log_;
  std::unique_ptr<engine::Tokenizer> tokenizer_ = spillway::testing::MakeByteTokenizer();
  FakeModel fake_{{.vocab_size = 258,
                   .context_length = 1024,
                   .num_blocks = kBlocks,
                   .next_token = &FakeModel::LastTokenRule}};
  LoggingModel model_{fake_, log_};
  kvcache::KvCache kv_{kBlocks};
  CountingWork work_{log_};
  EngineLoop loop_{model_, kv_, *tokenizer_, {.max_batch_tokens = 16, .idle_work = &work_}};
};

TEST_F(EngineLoopIdleWorkTest, RunsOnlyWhenNoRequestIsHeld) {
  loop_.Start();
  work_.budget = 1'000'000;
  loop_.WakeForIdleWork();
  WaitFor([&] { return work_.runs.load() >= 3; });

  Request r = MakeRequest(20);
  std::shared_ptr<TokenChannel> channel = r.channel;
  ASSERT_TRUE(loop_.Submit(std::move(r)).ok());
  log_.Add('S');
  WaitClosed(*channel);
  const int runs_at_end = work_.runs.load();
  WaitFor([&] { return work_.runs.load() >= runs_at_end + 3; });
  work_.budget = 0;
  loop_.Stop();

  const std::string log = log_.Get();
  const size_t s = log.find('S');
  const size_t first_f = log.find('F');
  const size_t last_f = log.rfind('F');
  ASSERT_NE(first_f, std::string::npos);
  // The request's steps: prompt, then one per further token, none interleaved with idle work.
  EXPECT_EQ(log.substr(first_f, last_f - first_f + 1).find('I'), std::string::npos) << log;
  EXPECT_GE(last_f - first_f + 1, 19u) << log;
  // No piece of idle work started between Submit's return and the request's first step
  // (only the piece already under way, which logged before S, may delay it).
  if (s < first_f) {
    EXPECT_EQ(log.substr(s, first_f - s).find('I'), std::string::npos) << log;
  }
  // Idle work ran before the request and again after it.
  EXPECT_NE(log.substr(0, first_f).find('I'), std::string::npos) << log;
  EXPECT_NE(log.substr(last_f).find('I'), std::string::npos) << log;
}

TEST_F(EngineLoopIdleWorkTest, WakeStartsWorkGivenWhileBlocked) {
  loop_.Start();
  std::this_thread::sleep_for(5ms);  // the loop blocks in its inbox: nothing to do
  EXPECT_EQ(work_.runs.load(), 0);
  work_.budget = 5;
  loop_.WakeForIdleWork();
  WaitFor([&] { return work_.runs.load() == 5; });
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(work_.runs.load(), 5);  // HasWork false again: no more pieces
  loop_.Stop();
}

}  // namespace
}  // namespace spillway::scheduler
