// MatMul on the weight shapes of SmolLM2-135M (Q4_1 projections, Q8_0 tied lm_head), at the
// batch sizes of decode (1), batched decode (8, 32) and prefill (512), with 1 and 2 threads.
// Reports weight bytes streamed per second (bytes_per_second) and GFLOP/s (2 * rows * cols *
// tokens). BM_SmolLm2Step runs every matmul of one forward step of the whole model (30 layers
// + lm_head, distinct random weights, ~96 MB, so nothing stays in cache) and reports tokens/s
// of the matmuls alone, to set against llama.cpp's whole-model figures on the same machine
// (~190 tok/s decode, ~500 tok/s prefill of 512 tokens). Weights are packed once (PackWeight,
// as CpuBackend does) unless the `packed` argument is 0 (a plain WeightMatrix, repacked by
// every call).
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/matmul_kernels.h"
#include "engine/cpu/quant_rows.h"

namespace spillway::engine::cpu {
namespace {

struct Matrix {
  GgmlType type;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::unique_ptr<PackedWeight> packed = {};
  WeightMatrix view() const {
    return {.type = type,
            .rows = rows,
            .cols = cols,
            .data = data.data(),
            .row_bytes = RowBytes(type, cols).value()};
  }
  void Run(bool use_packed, const float* x, int64_t tokens, float* y, ThreadPool& pool) const {
    if (use_packed) {
      MatMul(*packed, x, tokens, y, pool);
    } else {
      MatMul(view(), x, tokens, y, pool);
    }
  }
};

Matrix RandomMatrix(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  Matrix m{type, rows, cols, std::vector<uint8_t>(rows * RowBytes(type, cols).value())};
  std::vector<float> row(cols);
  const int64_t row_bytes = RowBytes(type, cols).value();
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = m.data.data() + r * row_bytes;
    if (QuantizeRowSupported(type)) {
      for (float& v : row) v = normal(rng);
      QuantizeRow(type, row.data(), dst, cols);
      continue;
    }
    // K-quants: random quants and scales, small f16 super-block scales.
    for (int64_t i = 0; i < row_bytes; ++i) dst[i] = static_cast<uint8_t>(rng());
    const int64_t block_bytes = BlockBytes(type);
    const uint16_t d = F32ToF16(0.002f), dmin = F32ToF16(0.001f);
    for (int64_t b = 0; b < row_bytes / block_bytes; ++b) {
      uint8_t* blk = dst + b * block_bytes;
      if (type == GgmlType::kQ6_K) {
        std::memcpy(blk + block_bytes - 2, &d, 2);
      } else {
        std::memcpy(blk, &d, 2);
        std::memcpy(blk + 2, &dmin, 2);
      }
    }
  }
  m.packed = std::move(PackWeight(m.view()).value());
  return m;
}

std::vector<float> RandomActivations(int64_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

// The `isa` argument: 0 scalar, 1 avx2, 2 avx512, 3 avx512 with the 4 rows x 4 tokens
// micro-kernel for Q4_0 / Q4_1 / Q8_0 that preceded the wide batch kernel (the baseline of the
// A/B comparison; run with --benchmark_enable_random_interleaving=true and repetitions, and
// compare minima). Returns false (and skips) where the CPU cannot run it.
constexpr int64_t kBaselineIsa = 3;

bool SelectKernels(benchmark::State& state, int64_t isa_arg) {
  const auto isa = static_cast<MatMulIsa>(isa_arg == kBaselineIsa ? 2 : isa_arg);
  if (!MatMulIsaSupported(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return false;
  }
  SetMatMulIsaForTesting(isa);
  internal::SetKernelSetForTesting(isa_arg == kBaselineIsa ? internal::Avx512BaselineKernels()
                                                           : nullptr);
  return true;
}

void ResetKernels() {
  internal::SetKernelSetForTesting(nullptr);
  ResetMatMulIsaForTesting();
}

std::string KernelsName(int64_t isa_arg) {
  if (isa_arg == kBaselineIsa) return "avx512-4x4";
  return MatMulIsaName(static_cast<MatMulIsa>(isa_arg));
}

ThreadPool& Pool(int threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

// Args: rows, cols, tokens, threads, type, isa (SelectKernels), packed (0, 1).
void BM_MatMul(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), tokens = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const auto type = static_cast<GgmlType>(state.range(4));
  const int64_t isa = state.range(5);
  const bool packed = state.range(6) != 0;
  if (!SelectKernels(state, isa)) return;
  const Matrix w = RandomMatrix(type, rows, cols, 7);
  const auto x = RandomActivations(tokens * cols);
  std::vector<float> y(tokens * rows);
  for (auto _ : state) {
    w.Run(packed, x.data(), tokens, y.data(), Pool(threads));
    benchmark::DoNotOptimize(y.data());
  }
  ResetKernels();
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.data.size()));
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * rows * cols * tokens * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(GgmlTypeName(type)) + " " + KernelsName(isa) +
                 (packed ? " packed" : " repacked per call"));
}

void SmolLm2Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens", "threads", "type", "isa", "packed"});
  const int64_t q41 = static_cast<int64_t>(GgmlType::kQ4_1);
  const int64_t q80 = static_cast<int64_t>(GgmlType::kQ8_0);
  for (int64_t packed : {1, 0}) {
    for (int64_t isa : {2, 1}) {
      for (int64_t tokens : {1, 8, 32, 512}) {
        for (int64_t threads : {1, 2}) {
          b->Args({576, 576, tokens, threads, q41, isa, packed});
          b->Args({192, 576, tokens, threads, q41, isa, packed});
          b->Args({1536, 576, tokens, threads, q41, isa, packed});
          b->Args({576, 1536, tokens, threads, q41, isa, packed});
          if (tokens <= 32) b->Args({49152, 576, tokens, threads, q80, isa, packed});
        }
      }
    }
  }
}
BENCHMARK(BM_MatMul)->Apply(SmolLm2Shapes)->UseRealTime();

// The wide batch kernel against its 4 x 4 predecessor (isa 3) on the SmolLM2 shapes at the
// token counts of batched decode and prefill, packed weights.
void WideVsBaselineShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens", "threads", "type", "isa", "packed"});
  const int64_t q41 = static_cast<int64_t>(GgmlType::kQ4_1);
  const int64_t q40 = static_cast<int64_t>(GgmlType::kQ4_0);
  const int64_t q80 = static_cast<int64_t>(GgmlType::kQ8_0);
  for (int64_t tokens : {4, 16, 32, 64, 512}) {
    for (int64_t isa : {kBaselineIsa, int64_t{2}}) {
      b->Args({1536, 576, tokens, 1, q41, isa, 1});
      b->Args({576, 1536, tokens, 1, q41, isa, 1});
      b->Args({576, 1536, tokens, 1, q40, isa, 1});
      b->Args({576, 1536, tokens, 1, q80, isa, 1});
      if (tokens <= 32) b->Args({49152, 576, tokens, 2, q80, isa, 1});
    }
  }
}
BENCHMARK(BM_MatMul)->Name("BM_WideVsBaseline")->Apply(WideVsBaselineShapes)->UseRealTime();

// K-quant projections (cols a multiple of 256), on every ISA.
void KQuantShapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "cols", "tokens", "threads", "type", "isa", "packed"});
  for (GgmlType type : {GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    for (int64_t isa : {2, 1, 0}) {
      for (int64_t tokens : {1, 32}) {
        b->Args({576, 1536, tokens, 1, static_cast<int64_t>(type), isa, 1});
      }
    }
  }
}
BENCHMARK(BM_MatMul)->Apply(KQuantShapes)->UseRealTime();

// The Q4_1 matrices of `layers` SmolLM2 layers, 7 a layer: q, k, v, o, gate, up, down.
std::vector<Matrix> SmolLm2Layers(int layers) {
  std::vector<Matrix> out;
  for (int l = 0; l < layers; ++l) {
    for (auto [rows, cols] : {std::pair{576, 576},
                              {192, 576},
                              {192, 576},
                              {576, 576},
                              {1536, 576},
                              {1536, 576},
                              {576, 1536}}) {
      out.push_back(RandomMatrix(GgmlType::kQ4_1, rows, cols, 100 + out.size()));
    }
  }
  return out;
}

// The matmuls of one SmolLM2-135M step over `tokens` tokens; the lm_head runs on one token
// per sequence: all tokens for decode batches, the last one for a 512-token prefill.
// Args: tokens, threads, isa (SelectKernels), packed (0, 1).
void BM_SmolLm2Step(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const int64_t isa = state.range(2);
  const bool packed = state.range(3) != 0;
  constexpr int kLayers = 30;
  const std::vector<Matrix> layers = SmolLm2Layers(kLayers);
  const Matrix lm_head = RandomMatrix(GgmlType::kQ8_0, 49152, 576, 3);
  const int64_t head_tokens = tokens >= 512 ? 1 : tokens;
  const auto x = RandomActivations(tokens * 1536);
  std::vector<float> y(std::max<int64_t>(tokens * 1536, head_tokens * 49152));
  int64_t bytes = static_cast<int64_t>(lm_head.data.size());
  for (const Matrix& m : layers) bytes += static_cast<int64_t>(m.data.size());
  if (!SelectKernels(state, isa)) return;
  for (auto _ : state) {
    for (const Matrix& m : layers) m.Run(packed, x.data(), tokens, y.data(), Pool(threads));
    lm_head.Run(packed, x.data(), head_tokens, y.data(), Pool(threads));
    benchmark::DoNotOptimize(y.data());
  }
  ResetKernels();
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(tokens * state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.SetLabel(KernelsName(isa) + (packed ? " packed" : " repacked per call"));
}
BENCHMARK(BM_SmolLm2Step)
    ->ArgNames({"tokens", "threads", "isa", "packed"})
    ->ArgsProduct({{1, 32, 512}, {1, 2}, {1, 2}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// The wide batch kernel against its predecessor (isa 3) over a whole step, packed. On a
// shared machine, compare the 1-thread CPU times (min over interleaved repetitions).
BENCHMARK(BM_SmolLm2Step)
    ->Name("BM_SmolLm2StepWideVsBaseline")
    ->ArgNames({"tokens", "threads", "isa", "packed"})
    ->ArgsProduct({{1, 8, 16, 32, 64, 512}, {1, 2}, {kBaselineIsa, 2}, {1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// BM_SmolLm2Step, packed, default kernels, with q/k/v and gate/up either as one MatMul each
// (shared 0) or as MatMulShared calls that quantize their input once (shared 1), as
// LlamaModel does. Compare the 1-thread CPU times (min over interleaved repetitions).
// Args: tokens, threads, shared.
void BM_SmolLm2StepShared(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const bool shared = state.range(2) != 0;
  constexpr int kLayers = 30;
  const std::vector<Matrix> layers = SmolLm2Layers(kLayers);
  const Matrix lm_head = RandomMatrix(GgmlType::kQ8_0, 49152, 576, 3);
  const int64_t head_tokens = tokens >= 512 ? 1 : tokens;
  const auto x = RandomActivations(tokens * 1536);
  std::vector<float> y(std::max<int64_t>(2 * tokens * 1536, head_tokens * 49152));
  ThreadPool& pool = Pool(threads);
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      const Matrix* m = &layers[7 * l];
      if (shared) {
        const PackedWeight* qkv[] = {m[0].packed.get(), m[1].packed.get(), m[2].packed.get()};
        float* qkv_y[] = {y.data(), y.data() + tokens * 576, y.data() + tokens * 768};
        MatMulShared(qkv, x.data(), tokens, qkv_y, pool);
      } else {
        m[0].Run(true, x.data(), tokens, y.data(), pool);
        m[1].Run(true, x.data(), tokens, y.data() + tokens * 576, pool);
        m[2].Run(true, x.data(), tokens, y.data() + tokens * 768, pool);
      }
      m[3].Run(true, x.data(), tokens, y.data(), pool);
      if (shared) {
        const PackedWeight* gate_up[] = {m[4].packed.get(), m[5].packed.get()};
        float* gate_up_y[] = {y.data(), y.data() + tokens * 1536};
        MatMulShared(gate_up, x.data(), tokens, gate_up_y, pool);
      } else {
        m[4].Run(true, x.data(), tokens, y.data(), pool);
        m[5].Run(true, x.data(), tokens, y.data() + tokens * 1536, pool);
      }
      m[6].Run(true, x.data(), tokens, y.data(), pool);
    }
    lm_head.Run(true, x.data(), head_tokens, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(tokens * state.iterations()),
                                               benchmark::Counter::kIsRate);
  state.SetLabel(shared ? "MatMulShared" : "one MatMul per weight");
}
BENCHMARK(BM_SmolLm2StepShared)
    ->ArgNames({"tokens", "threads", "shared"})
    ->ArgsProduct({{1, 32, 512}, {1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// PackWeight (CpuBackend::LoadWeight) on the largest SmolLM2 matrices: the Q8_0 lm_head and
// a Q4_1 feed-forward matrix. Args: rows, cols, type.
void BM_PackWeight(benchmark::State& state) {
  const Matrix w =
      RandomMatrix(static_cast<GgmlType>(state.range(2)), state.range(0), state.range(1), 5);
  for (auto _ : state) {
    auto packed = PackWeight(w.view());
    benchmark::DoNotOptimize(packed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.data.size()));
}
BENCHMARK(BM_PackWeight)
    ->ArgNames({"rows", "cols", "type"})
    ->Args({49152, 576, static_cast<int64_t>(GgmlType::kQ8_0)})
    ->Args({1536, 576, static_cast<int64_t>(GgmlType::kQ4_1)})
    ->Unit(benchmark::kMillisecond);

// The fixed cost of one ParallelFor over `n` items of no work (n = 1 runs inline), which every
// MatMul of a decode step pays once (twice with a parallel activation quantization).
void BM_ParallelForOverhead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  std::vector<int64_t> sink(64 * 8);
  for (auto _ : state) {
    Pool(threads).ParallelFor(
        8, 1, [&](int thread, int64_t begin, int64_t end) { sink[thread * 64] += end - begin; });
  }
  benchmark::DoNotOptimize(sink.data());
}
BENCHMARK(BM_ParallelForOverhead)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
}  // namespace spillway::engine::cpu

BENCHMARK_MAIN();
