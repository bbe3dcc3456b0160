// `spillway bench-engine`: prefill and decode speed of the engine alone (no server), printed
// beside llama.cpp's figures for the same model shape on the same machine kind.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <sstream>

#include "engine/generator/generator.h"
#include "kvcache/ids.h"
#include "server/cli/commands.h"
#include "server/cli/loaded_engine.h"

namespace spillway::server {
namespace {

// NOTE(lead): when no same-run figures are given, llama.cpp build 84f712946 with SmolLM2-135M
// Q4_1 on this machine kind (2 cores, AMD EPYC with AVX-512), as recorded in issue #2: pp512
// 486-501 tok/s, tg128 181-202 tok/s. We compare with the middle of each range.
constexpr double kRecordedPrefill = 493.5;
constexpr double kRecordedDecode = 191.5;

std::vector<engine::TokenId> RandomTokens(int32_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<engine::TokenId> dist(100, static_cast<engine::TokenId>(vocab - 1));
  std::vector<engine::TokenId> tokens(n);
  for (auto& t : tokens) t = dist(rng);
  return tokens;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int RunBenchEngine(const BenchEngineOptions& o) {
  std::vector<int> batch_sizes;
  std::stringstream ss(o.batch_sizes);
  for (std::string item; std::getline(ss, item, ',');) batch_sizes.push_back(std::stoi(item));
  const int max_batch = *std::max_element(batch_sizes.begin(), batch_sizes.end());
  const int32_t short_prompt = 16;
  const int32_t blocks =
      std::max<int32_t>((o.prompt_tokens + 16) / kvcache::kBlockTokens + 2,
                        max_batch * ((short_prompt + o.decode_tokens) / kvcache::kBlockTokens + 2));
  absl::StatusOr<LoadedEngine> e =
      LoadEngine(o.model, {.device = o.device,
                           .threads = o.threads,
                           .kv_blocks = blocks,
                           .gpu_memory_utilization = o.gpu_memory_utilization});
  if (!e.ok()) {
    spdlog::error("{}", std::string(e.status().message()));
    return 1;
  }
  const int64_t vocab = e->model->config().vocab_size;
  engine::Generator warm(*e->model, *e->kv);
  engine::GenerateRequest warm_req{
      .prompt = RandomTokens(64, vocab, 1), .max_tokens = 4, .ignore_eos = true};
  (void)warm.Run({&warm_req, 1});

  // Prefill: one prompt of prompt_tokens in one forward pass, median of 3.
  std::vector<double> prefill;
  for (int rep = 0; rep < 3; ++rep) {
    engine::Generator g(*e->model, *e->kv, {.max_batch_tokens = o.prompt_tokens});
    engine::GenerateRequest r{.prompt = RandomTokens(o.prompt_tokens, vocab, 10 + rep),
                              .max_tokens = 1,
                              .ignore_eos = true};
    if (auto res = g.Run({&r, 1}); !res.ok()) {
      spdlog::error("{}", std::string(res.status().message()));
      return 1;
    }
    prefill.push_back(o.prompt_tokens / g.stats().prefill_seconds);
  }
  const double pp = Median(prefill);
  const double peer_pp = o.peer_prefill.value_or(kRecordedPrefill);
  const double peer_tg = o.peer_decode.value_or(kRecordedDecode);
  std::printf("model %s, %d threads; llama.cpp figures: %s\n", e->model->config().name.c_str(),
              o.threads, o.peer_prefill ? "measured in this run" : "recorded in issue #2");
  std::printf("%-28s %10s %12s %8s\n", "test", "tok/s", "llama.cpp", "ratio");
  std::printf("%-28s %10.1f %12.1f %8.2f\n",
              ("prefill pp" + std::to_string(o.prompt_tokens)).c_str(), pp, peer_pp, pp / peer_pp);

  double batch1 = 0;
  for (int b : batch_sizes) {
    std::vector<engine::GenerateRequest> reqs;
    for (int i = 0; i < b; ++i) {
      reqs.push_back({.prompt = RandomTokens(short_prompt, vocab, 100 + i),
                      .max_tokens = o.decode_tokens,
                      .ignore_eos = true});
    }
    engine::Generator g(*e->model, *e->kv, {.max_batch_tokens = short_prompt * b});
    if (auto res = g.Run(reqs); !res.ok()) {
      spdlog::error("{}", std::string(res.status().message()));
      return 1;
    }
    const double tg = (g.stats().generated_tokens - b) / g.stats().decode_seconds;
    if (b == 1) batch1 = tg;
    const std::string name =
        "decode tg" + std::to_string(o.decode_tokens) + " batch " + std::to_string(b);
    if (b == 1) {
      std::printf("%-28s %10.1f %12.1f %8.2f\n", name.c_str(), tg, peer_tg, tg / peer_tg);
    } else {
      std::printf("%-28s %10.1f %12s %8s   (%.2fx batch 1)\n", name.c_str(), tg, "-", "-",
                  batch1 > 0 ? tg / batch1 : 0.0);
    }
  }
  return 0;
}

}  // namespace spillway::server
