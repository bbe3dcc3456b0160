// PagedAttention on the CPU at SmolLM2's shape (9 query heads, 3 KV heads, head size 64):
// a 512-token prefill chunk, and one decode token over contexts of 512 to 8192 tokens.
//   build/bin/attention_benchmark
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "engine/cpu/attention.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul.h"
#include "kvcache/ids.h"

namespace spillway::engine::cpu {
namespace {

using kvcache::kBlockTokens;

struct Setup {
  std::vector<uint16_t> k, v;
  std::vector<float> q, out, kin, vin;
  std::vector<int32_t> positions, chunk_starts, first_positions, table_starts;
  std::vector<kvcache::BlockId> table;
  std::vector<TokenId> tokens;
  BatchLayout layout;
  KvLayerView view;
  BatchLayout Layout() const {
    return {.tokens = tokens,
            .positions = positions,
            .chunk_starts = chunk_starts,
            .first_positions = first_positions,
            .block_table_starts = table_starts,
            .block_tables = table};
  }
};

constexpr int64_t kHeads = 9, kKvHeads = 3, kDim = 64;

// One sequence whose chunk covers [first, first + n) over a cache of first + n tokens.
Setup Make(int32_t first, int32_t n) {
  Setup s;
  const int32_t total = first + n;
  const int32_t blocks = (total + kBlockTokens - 1) / kBlockTokens;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  s.k.resize(int64_t{blocks} * kBlockTokens * kKvHeads * kDim);
  s.v.resize(s.k.size());
  for (auto& x : s.k) x = F32ToF16(u(rng));
  for (auto& x : s.v) x = F32ToF16(u(rng));
  for (int32_t b = 0; b < blocks; ++b) s.table.push_back(blocks - 1 - b);
  for (int32_t i = 0; i < n; ++i) s.positions.push_back(first + i);
  s.chunk_starts = {0, n};
  s.first_positions = {first};
  s.table_starts = {0, blocks};
  s.tokens.assign(n, 0);
  s.q.resize(int64_t{n} * kHeads * kDim);
  for (auto& x : s.q) x = u(rng);
  s.out.resize(s.q.size());
  s.layout = s.Layout();
  s.view = {.k = s.k.data(), .v = s.v.data(), .num_kv_heads = kKvHeads, .head_dim = kDim};
  return s;
}

void BM_Prefill512(benchmark::State& state) {
  Setup s = Make(0, 512);
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::vector<AttentionScratch> scratch;
  for (auto _ : state) {
    PagedAttention(s.layout, s.q.data(), kHeads, s.view, s.out.data(), pool, scratch);
    benchmark::DoNotOptimize(s.out.data());
  }
  // Multiply-adds of QK and PV for all heads: sum over queries of their context.
  const double macs = 2.0 * kHeads * kDim * (512.0 * 513.0 / 2.0);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2 * macs * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Prefill512)->Arg(1)->Arg(2)->UseRealTime();

void BM_DecodeOneToken(benchmark::State& state) {
  const int32_t context = static_cast<int32_t>(state.range(0));
  Setup s = Make(context - 1, 1);
  ThreadPool pool(2);
  std::vector<AttentionScratch> scratch;
  for (auto _ : state) {
    PagedAttention(s.layout, s.q.data(), kHeads, s.view, s.out.data(), pool, scratch);
    benchmark::DoNotOptimize(s.out.data());
  }
}
BENCHMARK(BM_DecodeOneToken)->Arg(512)->Arg(2048)->Arg(8192)->UseRealTime();

// `seqs` sequences of one decode token each at position context - 1, all reading the same
// blocks (a batched decode step over equal contexts).
Setup MakeDecodeBatch(int32_t seqs, int32_t context) {
  Setup s = Make(context - 1, 1);
  const int32_t blocks = s.table_starts[1];
  s.positions.assign(seqs, context - 1);
  s.first_positions.assign(seqs, context - 1);
  s.chunk_starts.clear();
  s.table_starts.clear();
  for (int32_t i = 0; i <= seqs; ++i) {
    s.chunk_starts.push_back(i);
    s.table_starts.push_back(0);
  }
  // Every chunk's table is the same run of blocks: starts 0, blocks, 2 * blocks, ... over a
  // table repeated seqs times.
  const std::vector<kvcache::BlockId> one = s.table;
  s.table.clear();
  for (int32_t i = 0; i < seqs; ++i) s.table.insert(s.table.end(), one.begin(), one.end());
  for (int32_t i = 0; i <= seqs; ++i) s.table_starts[i] = i * blocks;
  s.tokens.assign(seqs, 0);
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1, 1);
  s.q.resize(int64_t{seqs} * kHeads * kDim);
  for (auto& x : s.q) x = u(rng);
  s.out.resize(s.q.size());
  s.layout = s.Layout();
  return s;
}

// AVX-512 against AVX2 (the same bits; attention follows MatMul's instruction set), on one
// thread: a 512-token prefill chunk (case 0) and a batch-32 decode step at context 512 (case
// 1) or 128 (case 2). On a shared machine compare CPU times, min over interleaved repetitions.
// Args: case, isa (1 = AVX2, 2 = AVX-512).
void BM_Avx512VsAvx2(benchmark::State& state) {
  const auto isa = static_cast<MatMulIsa>(state.range(1));
  if (!MatMulIsaSupported(isa)) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  const int64_t which = state.range(0);
  Setup s = which == 0 ? Make(0, 512) : MakeDecodeBatch(32, which == 1 ? 512 : 128);
  ThreadPool pool(1);
  std::vector<AttentionScratch> scratch;
  SetMatMulIsaForTesting(isa);
  for (auto _ : state) {
    PagedAttention(s.layout, s.q.data(), kHeads, s.view, s.out.data(), pool, scratch);
    benchmark::DoNotOptimize(s.out.data());
  }
  ResetMatMulIsaForTesting();
  const char* what[] = {"prefill 512 ", "decode 32 x ctx 512 ", "decode 32 x ctx 128 "};
  state.SetLabel(std::string(what[which]) + MatMulIsaName(isa));
}
BENCHMARK(BM_Avx512VsAvx2)->ArgNames({"case", "isa"})->ArgsProduct({{0, 1, 2}, {1, 2}});

}  // namespace
}  // namespace spillway::engine::cpu

BENCHMARK_MAIN();
