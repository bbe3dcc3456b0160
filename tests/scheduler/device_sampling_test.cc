// The EngineLoop's sampling on the backend (Model::ForwardAndSample, docs/gpu.md) against its
// host sampling: the same requests — seeded temperature sampling with top_k, min_p, penalties,
// logit_bias, min_tokens with stop tokens (the stop mask), n = 2, logprobs, greedy — give the
// same tokens and logprobs both ways. The "backend" here samples with the reference semantics
// of the device kernel (tests/engine/sampler/sample_row_reference.h), so this checks what the
// scheduler hands over (rows in logits order, the stop mask, the generator stream, Accept),
// not the kernel (tests/gpu/sampling_test.cc does).
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "scheduler/engine_loop.h"
#include "tests/engine/sampler/sample_row_reference.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::FakeModel;
using namespace std::chrono_literals;

constexpr int32_t kBlocks = 64;
constexpr int64_t kVocab = 258;

// FakeModel's logits, sampled "on the backend".
class BackendSamplingModel final : public engine::Model {
 public:
  explicit BackendSamplingModel(FakeModel::Options options) : inner_(std::move(options)) {}
  const engine::ModelConfig& config() const override { return inner_.config(); }
  [[nodiscard]] absl::Status Forward(const engine::Batch& batch,
                                     std::vector<float>* logits) override {
    ++host_steps_;
    return inner_.Forward(batch, logits);
  }
  bool SupportsDeviceSampling() const override { return true; }
  [[nodiscard]] absl::Status ForwardAndSample(const engine::Batch& batch,
                                              const engine::BatchSampling& sampling,
                                              std::vector<engine::SampleResult>* samples) override {
    ++backend_steps_;
    std::vector<float> logits;
    if (absl::Status st = inner_.Forward(batch, &logits); !st.ok()) return st;
    const size_t rows = logits.size() / kVocab;
    EXPECT_EQ(rows, sampling.rows.size());
    samples->clear();
    for (size_t r = 0; r < rows; ++r) {
      const auto ref = engine::testing::ReferenceSampleRow(
          std::span<const float>(logits).subspan(r * kVocab, kVocab), sampling.rows[r],
          sampling.edits);
      samples->push_back({.token = ref.token, .logprob = ref.logprob, .top = ref.top});
    }
    return absl::OkStatus();
  }
  int backend_steps() const { return backend_steps_; }
  int host_steps() const { return host_steps_; }

 private:
  FakeModel inner_;
  int backend_steps_ = 0, host_steps_ = 0;
};

std::vector<TokenEvent> DrainUntilClosed(TokenChannel& channel) {
  std::vector<TokenEvent> all;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    for (TokenEvent& e : channel.Drain(&closed)) all.push_back(std::move(e));
    if (!closed) std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(closed) << "channel not closed within 5 s";
  return all;
}

// A flatter distribution than FakeModel's default (10 / 5 / 0): temperature 3 spreads it.
std::vector<Request> MakeRequests(int32_t extra_logprobs) {
  std::vector<Request> out;
  auto add = [&](engine::SamplingParams p, StopRules stop, int32_t n = 1) {
    Request r;
    r.prompt = {'h', 'e', 'l', 'l', 'o'};
    r.sampling = std::move(p);
    r.stop = std::move(stop);
    r.n = n;
    out.push_back(std::move(r));
  };
  add({.temperature = 3.0f, .seed = 11, .logprobs = 3}, {.max_tokens = 12});
  add({.temperature = 2.5f,
       .top_k = 40,
       .min_p = 0.01f,
       .repetition_penalty = 1.3f,
       .presence_penalty = 0.5f,
       .frequency_penalty = 0.4f,
       .logit_bias = {{'x', 3.0f}, {'q', -2.0f}},
       .seed = 12},
      {.max_tokens = 10});
  // The stop mask: while fewer than 6 tokens are out, 'a'..'z' that would stop are masked.
  std::vector<TokenId> stops;
  for (TokenId t = 'a'; t <= 'm'; ++t) stops.push_back(t);
  add({.temperature = 3.0f, .seed = 13, .logprobs = 2},
      {.max_tokens = 9, .stop_token_ids = stops, .min_tokens = 6});
  add({.temperature = 2.0f, .seed = 14}, {.max_tokens = 8}, /*n=*/2);
  add({.temperature = 0.0f, .logprobs = extra_logprobs}, {.max_tokens = 7});
  return out;
}

struct Outcome {
  std::vector<std::vector<TokenId>> tokens;  // per request, per choice index order of events
  std::vector<std::vector<engine::SampleResult>> logprobs;
};

Outcome RunRequests(engine::Model& model, bool device_sampling, int32_t extra_logprobs) {
  auto tokenizer = spillway::testing::MakeByteTokenizer();
  kvcache::KvCache kv(kBlocks);
  EngineLoop loop(
      model, kv, *tokenizer,
      {.max_batch_tokens = 64, .max_running_seqs = 8, .device_sampling = device_sampling});
  std::vector<std::shared_ptr<TokenChannel>> channels;
  for (Request& r : MakeRequests(extra_logprobs)) {
    r.id = loop.NextRequestId();
    r.channel = std::make_shared<TokenChannel>();
    channels.push_back(r.channel);
    EXPECT_TRUE(loop.Submit(std::move(r)).ok());
  }
  loop.Start();
  Outcome o;
  for (auto& channel : channels) {
    std::vector<TokenId> tokens;
    std::vector<engine::SampleResult> logprobs;
    for (const TokenEvent& e : DrainUntilClosed(*channel)) {
      for (TokenId t : e.token_ids) tokens.push_back(e.index * 1000 + t);
      logprobs.insert(logprobs.end(), e.logprobs.begin(), e.logprobs.end());
    }
    o.tokens.push_back(tokens);
    o.logprobs.push_back(logprobs);
  }
  loop.Stop();
  return o;
}

void ExpectSame(const Outcome& host, const Outcome& backend) {
  ASSERT_EQ(host.tokens.size(), backend.tokens.size());
  for (size_t i = 0; i < host.tokens.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    // Choices of n = 2 interleave in event order; compare each choice's tokens in order.
    auto by_choice = [](const std::vector<TokenId>& t) {
      std::vector<TokenId> sorted = t;
      std::stable_sort(sorted.begin(), sorted.end(),
                       [](TokenId a, TokenId b) { return a / 1000 < b / 1000; });
      return sorted;
    };
    EXPECT_EQ(by_choice(host.tokens[i]), by_choice(backend.tokens[i]));
    EXPECT_FALSE(host.tokens[i].empty());
    ASSERT_EQ(host.logprobs[i].size(), backend.logprobs[i].size());
    for (size_t k = 0; k < host.logprobs[i].size(); ++k) {
      const engine::SampleResult& a = host.logprobs[i][k];
      const engine::SampleResult& b = backend.logprobs[i][k];
      EXPECT_EQ(a.token, b.token);
      EXPECT_NEAR(a.logprob, b.logprob, 2e-6);
      ASSERT_EQ(a.top.size(), b.top.size());
      for (size_t j = 0; j < a.top.size(); ++j) {
        EXPECT_EQ(a.top[j].token, b.top[j].token);
        EXPECT_NEAR(a.top[j].logprob, b.top[j].logprob, 2e-6);
      }
    }
  }
}

FakeModel::Options ModelOptions() {
  return {.vocab_size = kVocab, .num_blocks = kBlocks, .next_token = &FakeModel::ContextHashRule};
}

TEST(DeviceSamplingTest, BackendSamplingGivesTheHostsTokensAndLogprobs) {
  FakeModel host_model(ModelOptions());
  const Outcome host = RunRequests(host_model, /*device_sampling=*/true, /*extra_logprobs=*/4);
  BackendSamplingModel backend_model(ModelOptions());
  const Outcome backend = RunRequests(backend_model, /*device_sampling=*/true, 4);
  EXPECT_GT(backend_model.backend_steps(), 5);
  EXPECT_EQ(backend_model.host_steps(), 0);
  ExpectSame(host, backend);
  // The stop mask held: no token of request 2 before its 6th is a stop token.
  for (size_t k = 0; k < std::min<size_t>(5, backend.tokens[2].size()); ++k) {
    EXPECT_TRUE(backend.tokens[2][k] < 'a' || backend.tokens[2][k] > 'm') << k;
  }
}

TEST(DeviceSamplingTest, OffOrTooManyLogprobsSampleOnTheHost) {
  FakeModel host_model(ModelOptions());
  const Outcome host = RunRequests(host_model, true, engine::kMaxDeviceTopLogprobs + 1);
  BackendSamplingModel too_many(ModelOptions());
  // A row asking for more top logprobs than the device finds sends its steps to the host.
  const Outcome mixed = RunRequests(too_many, true, engine::kMaxDeviceTopLogprobs + 1);
  EXPECT_GT(too_many.host_steps(), 0);
  ExpectSame(host, mixed);
  BackendSamplingModel off(ModelOptions());
  const Outcome hosted = RunRequests(off, /*device_sampling=*/false, 4);
  EXPECT_EQ(off.backend_steps(), 0);
  EXPECT_GT(off.host_steps(), 0);
}

}  // namespace
}  // namespace spillway::scheduler
