// EngineLoop on the real default model (LlamaModel on the CPU backend): requests served
// concurrently by the continuous-batching scheduler — prompt chunks and decodes sharing steps,
// prefix-cache hits, n > 1 — get at temperature 0 exactly the tokens engine::Generator gives
// each alone. Label `model`: reads the default model file.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/cache_dir.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kvcache/kv_cache.h"
#include "scheduler/engine_loop.h"

namespace spillway::scheduler {
namespace {

using namespace std::chrono_literals;

constexpr int32_t kMaxTokens = 24;

struct Collected {
  std::vector<std::vector<TokenId>> tokens;
  std::vector<std::string> text;
  std::optional<Usage> usage = {};
  bool closed = false;
};

Collected Collect(TokenChannel& channel, int n) {
  Collected out{.tokens = std::vector<std::vector<TokenId>>(n),
                .text = std::vector<std::string>(n)};
  const auto deadline = std::chrono::steady_clock::now() + 600s;
  while (!out.closed && std::chrono::steady_clock::now() < deadline) {
    for (TokenEvent& e : channel.Drain(&out.closed)) {
      EXPECT_TRUE(e.error.ok()) << e.error;
      out.tokens[e.index].insert(out.tokens[e.index].end(), e.token_ids.begin(), e.token_ids.end());
      out.text[e.index] += e.text;
      if (e.usage.has_value()) out.usage = e.usage;
    }
    if (!out.closed) std::this_thread::sleep_for(2ms);
  }
  return out;
}

TEST(EngineLoopModel, ConcurrentRequestsMatchTheGeneratorAlone) {
  auto file = engine::OpenModelFile(DefaultModelPath());
  ASSERT_TRUE(file.ok()) << file.status();
  engine::cpu::CpuBackend backend(2);
  constexpr int32_t kBlocks = 256;
  auto model = engine::LlamaModel::Create(**file, backend, kBlocks);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = engine::Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string system =
      "<|im_start|>system\nYou are a helpful assistant who answers briefly and precisely."
      "<|im_end|>\n<|im_start|>user\n";
  const std::vector<std::string> texts = {
      "Hi",
      "The history of Rome begins with",
      "def add(a, b):\n    return",
      system + "List three fruits.<|im_end|>\n<|im_start|>assistant\n",
      system + "Why is the sky blue?<|im_end|>\n<|im_start|>assistant\n",
      "1 2 3",
      "In 1969, the first humans landed on the Moon. The mission was called",
      "Bonjour, je m'appelle",
  };
  std::vector<std::vector<TokenId>> prompts;
  for (const std::string& t : texts) prompts.push_back((*tokenizer)->Encode(t, false, true));

  // Each alone through the Generator.
  std::vector<std::vector<TokenId>> alone;
  {
    kvcache::KvCache kv(kBlocks);
    for (const auto& p : prompts) {
      engine::GenerateRequest r{.prompt = p, .max_tokens = kMaxTokens, .ignore_eos = true};
      r.sampling.temperature = 0.0f;
      engine::Generator g(**model, kv);
      auto out = g.Run({&r, 1});
      ASSERT_TRUE(out.ok()) << out.status();
      alone.push_back((*out)[0].tokens);
    }
  }

  // Together through the engine loop, with a small token budget so that prompt chunks share
  // steps with decodes; the system-prompt requests share a cached prefix.
  kvcache::KvCache kv(kBlocks);
  EngineLoop loop(**model, kv, **tokenizer, {.max_batch_tokens = 32, .max_running_seqs = 16});
  loop.Start();
  auto submit = [&](size_t i, int32_t n) {
    Request r;
    r.id = loop.NextRequestId();
    r.prompt = prompts[i];
    r.sampling.temperature = 0.0f;
    r.stop = {.max_tokens = kMaxTokens, .ignore_eos = true};
    r.n = n;
    r.channel = std::make_shared<TokenChannel>();
    auto channel = r.channel;
    EXPECT_TRUE(loop.Submit(std::move(r)).ok());
    return channel;
  };
  std::vector<std::shared_ptr<TokenChannel>> channels;
  for (size_t i = 0; i < prompts.size(); ++i) channels.push_back(submit(i, i == 3 ? 3 : 1));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int n = i == 3 ? 3 : 1;
    const Collected got = Collect(*channels[i], n);
    ASSERT_TRUE(got.closed) << "request " << i;
    for (int c = 0; c < n; ++c) {
      EXPECT_EQ(got.tokens[c], alone[i]) << "prompt " << i << " choice " << c << ": " << texts[i];
      EXPECT_EQ(got.text[c], (*tokenizer)->Decode(alone[i], /*skip_special=*/true));
    }
    ASSERT_TRUE(got.usage.has_value());
    EXPECT_EQ(got.usage->completion_tokens, n * kMaxTokens);
    EXPECT_EQ(got.usage->prompt_tokens, static_cast<int32_t>(prompts[i].size()));
  }
  // The same prompt again: its full blocks come from the prefix cache, the tokens do not change.
  const Collected again = Collect(*submit(4, 1), 1);
  EXPECT_EQ(again.tokens[0], alone[4]);
  ASSERT_TRUE(again.usage.has_value());
  EXPECT_EQ(again.usage->cached_tokens,
            static_cast<int32_t>((prompts[4].size() - 1) / kvcache::kBlockTokens *
                                 kvcache::kBlockTokens));
  EXPECT_GT(again.usage->cached_tokens, 0);
  const EngineStats stats = loop.stats();
  EXPECT_EQ(stats.kv_used_blocks, 0);
  EXPECT_GT(stats.prefix_cache_hits, 0);
}

}  // namespace
}  // namespace spillway::scheduler
