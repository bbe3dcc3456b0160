// Serving many LoRA adapters (issue #7 goal: a batch that mixes 8 adapters runs at >= 80% of
// the base model's throughput). The real default model (SmolLM2-135M-Instruct Q4_1) on the
// CPU backend, one Model::Forward per iteration over the same tokens:
//   - decode: 32 sequences, one token each, contexts of 128 tokens;
//   - prefill: 8 chunks of 64 tokens;
// each with no adapter ("base") and with 8 adapters, for rank 8 on q,v (PEFT's default
// targets) and rank 16 on all seven projections; the sequences of one adapter either side by
// side, as the scheduler orders a batch (8 row segments), or round-robin so that no two
// neighbours share one (one segment per sequence: the segmented AddLora's worst case).
//   build/bin/multi_lora_benchmark [--benchmark_repetitions=5]
// Tokens/s is items_per_second; the ratio to "base" is the figure docs/benchmarks.md reports.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <random>
#include <vector>

#include "common/cache_dir.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/llama/llama_model.h"
#include "engine/lora/backend_adapter.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"
#include "kvcache/kv_cache.h"

namespace spillway::engine {
namespace {

constexpr int32_t kBlocks = 1024;
constexpr int kNumAdapters = 8;

struct World {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<cpu::CpuBackend> backend;
  std::unique_ptr<LlamaModel> model;
  // [config][adapter]: 0 = rank 8 on q,v; 1 = rank 16 on every projection.
  std::vector<std::unique_ptr<lora::BackendLoraAdapter>> adapters[2];
};

World& TheWorld() {
  static World* w = [] {
    auto* w = new World;
    auto file = OpenModelFile(DefaultModelPath());
    if (!file.ok()) {
      spdlog::error("{}", std::string(file.status().message()));
      std::exit(1);
    }
    w->file = *std::move(file);
    w->backend = std::make_unique<cpu::CpuBackend>(0);
    w->model = LlamaModel::Create(*w->file, *w->backend, kBlocks).value();
    const ModelConfig& c = w->file->config();
    for (int cfg = 0; cfg < 2; ++cfg) {
      lora::LoraConfig config;
      config.rank = cfg == 0 ? 8 : 16;
      config.alpha = 2.0f * config.rank;
      if (cfg == 1) config.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
      for (int i = 0; i < kNumAdapters; ++i) {
        lora::LoraAdapter a = lora::NewLoraAdapter(c, config, 100 + i).value();
        std::mt19937 rng(i);
        std::normal_distribution<float> n(0.0f, 0.02f);
        for (const lora::LoraMatrix& m : a.layout.Matrices()) {
          if (!m.is_b) continue;
          for (int64_t j = 0; j < m.rows * m.cols; ++j) a.params[m.offset + j] = n(rng);
        }
        w->adapters[cfg].push_back(lora::BackendLoraAdapter::Load(a, *w->backend).value());
      }
    }
    return w;
  }();
  return *w;
}

// `num_seqs` sequences of `chunk` new tokens after `context` cached ones; adapters: cfg -1
// none, else that config's 8 adapters, grouped or round-robin.
void Run(benchmark::State& state, int32_t num_seqs, int32_t chunk, int32_t context) {
  const int cfg = static_cast<int>(state.range(0));
  const bool grouped = state.range(1) != 0;
  World& w = TheWorld();
  kvcache::KvCache kv(kBlocks);
  Batch batch;
  std::mt19937 rng(7);
  std::uniform_int_distribution<TokenId> tok(100, 40000);
  for (int32_t s = 0; s < num_seqs; ++s) {
    const kvcache::SeqId seq = s + 1;
    if (!kv.Grow(seq, context + chunk).has_value()) {
      state.SkipWithError("KV cache too small");
      return;
    }
    for (int32_t i = 0; i < chunk; ++i) batch.tokens.push_back(tok(rng));
    batch.chunks.push_back(
        {.num_tokens = chunk,
         .first_position = context,
         .block_table = kv.block_table(seq),
         .want_logits = true,
         .adapter = cfg < 0
                        ? nullptr
                        : w.adapters[cfg][grouped ? s * kNumAdapters / num_seqs : s % kNumAdapters]
                              .get()});
  }
  std::vector<float> logits;
  for (auto _ : state) {
    if (!w.model->Forward(batch, &logits).ok()) state.SkipWithError("forward failed");
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(state.iterations() * int64_t{num_seqs} * chunk);
}

void BM_Decode32(benchmark::State& state) { Run(state, 32, 1, 128); }
void BM_Prefill8x64(benchmark::State& state) { Run(state, 8, 64, 0); }

// Args {cfg, grouped}: cfg -1 = the base model; 0 = 8 adapters of rank 8 on q,v; 1 = 8
// adapters of rank 16 on all seven projections. grouped 1 = each adapter's sequences side by
// side (the scheduler's order), 0 = round-robin.
void Args(benchmark::internal::Benchmark* b) {
  b->Args({-1, 1})->Args({0, 1})->Args({0, 0})->Args({1, 1})->Args({1, 0});
  b->ArgNames({"cfg", "grouped"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_Decode32)->Apply(Args);
BENCHMARK(BM_Prefill8x64)->Apply(Args);

}  // namespace
}  // namespace spillway::engine

BENCHMARK_MAIN();
