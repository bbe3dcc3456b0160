// CudaTrainModel against TrainModel<float> on the host (its twin: the same passes op for op),
// on tiny random models (Llama with tied embeddings; Qwen-like with biases, an untied head and
// NeoX RoPE) and on the default model (SmolLM2-135M, when present or SPILLWAY_GPU_MODEL names
// one), then a short training job on the GPU whose loss must fall.
//
// Tolerances, set from the numerics before the first GPU run (cuda_train_model.h): the host
// keeps the frozen weights rounded to BF16 like the device; the device also rounds each frozen
// GEMM's input (activation or output gradient) and the embedding table to BF16 (8 mantissa
// bits, relative error ≤ 2⁻⁹ per element, averaging out over a dot product), so:
//   summed loss: 1% relative; LoRA gradient: 5% relative L2 error (cosine ≥ 0.998);
//   last-position logits: 2% of their RMS, the same argmax unless the top two are within 0.1.
// Two GPU passes of the same inputs are bit-identical (deterministic kernels, no atomics).
// Skips without a GPU.
#include "engine/train/train_model.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <vector>

#include "engine/cpu/thread_pool.h"
#include "engine/cuda/cuda_train_model.h"
#include "engine/train/training_job.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_paths.h"

namespace spillway::engine::testing {
namespace {

using lora::LoraConfig;
using lora::LoraModule;
using train::LoraDropout;
using train::LossSum;
using train::TrainModel;
using train::TrainSequence;

LoraConfig AllModules(int32_t rank) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = 2.0f * rank;
  c.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  return c;
}

// Sequences of the given lengths with tokens from `seed` and every other token (from the
// second) a target; a length-1 sequence has no target.
struct Batch {
  std::vector<std::vector<TokenId>> tokens;
  std::vector<std::vector<uint8_t>> masks;
  Batch(std::vector<int64_t> lengths, int64_t vocab, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<TokenId> tok(0, static_cast<TokenId>(vocab - 1));
    for (int64_t len : lengths) {
      std::vector<TokenId>& t = tokens.emplace_back(len);
      std::vector<uint8_t>& m = masks.emplace_back(len, 0);
      for (int64_t i = 0; i < len; ++i) {
        t[i] = tok(rng);
        m[i] = i >= 1 && i % 2 == 1;
      }
    }
  }
  std::vector<TrainSequence> Seqs() const {
    std::vector<TrainSequence> s;
    for (size_t i = 0; i < tokens.size(); ++i) s.push_back({tokens[i], masks[i]});
    return s;
  }
};

double RelativeL2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Result {
  LossSum loss;
  std::vector<float> grad;
  int64_t pieces = 0;
};

Result RunGpu(cuda::CudaTrainModel& m, const Batch& b, const lora::LoraAdapter& a,
              LoraDropout dropout = {}) {
  Result r;
  r.grad.assign(a.params.size(), 0.0f);
  const std::vector<TrainSequence> seqs = b.Seqs();
  auto pass = m.Begin(seqs, a.layout, a.config.scale(), a.params.data(), r.grad.data(), dropout);
  SPW_CHECK(pass.ok()) << pass.status();
  do {
    ++r.pieces;
  } while (!m.Advance(**pass));
  r.loss = (*pass)->loss();
  return r;
}

Result RunHost(TrainModel<float>& m, const Batch& b, const lora::LoraAdapter& a,
               LoraDropout dropout = {}) {
  Result r;
  r.grad.assign(a.params.size(), 0.0f);
  const std::vector<TrainSequence> seqs = b.Seqs();
  auto loss =
      m.ForwardBackward(seqs, a.layout, a.config.scale(), a.params.data(), r.grad.data(), dropout);
  SPW_CHECK(loss.ok()) << loss.status();
  r.loss = *loss;
  return r;
}

void ExpectClose(const Result& gpu, const Result& host) {
  EXPECT_EQ(gpu.loss.num_targets, host.loss.num_targets);
  EXPECT_NEAR(gpu.loss.loss, host.loss.loss, 1e-2 * std::abs(host.loss.loss));
  EXPECT_LE(RelativeL2(gpu.grad, host.grad), 5e-2);
  double max_abs = 0;
  for (float g : host.grad) max_abs = std::max(max_abs, std::abs(static_cast<double>(g)));
  EXPECT_GT(max_abs, 0.0) << "the host gradient is zero: the check compares nothing";
}

void CompareOnModel(const ModelFile& file, const Batch& batch, const LoraConfig& config,
                    float range, LoraDropout dropout = {}) {
  cpu::ThreadPool pool(0);
  auto host = TrainModel<float>::Create(file, &pool, GgmlType::kBF16);
  ASSERT_TRUE(host.ok()) << host.status();
  auto gpu = cuda::CudaTrainModel::Create(file, {.head_chunk_rows = 5, .device_weights = {}});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), config, 7, range);
  const Result h = RunHost(**host, batch, adapter, dropout);
  const Result g = RunGpu(**gpu, batch, adapter, dropout);
  ExpectClose(g, h);
  // Pieces: every half layer forward and backward (all layers adapted), a head chunk of 5.
  const int64_t layers = file.config().num_layers;
  EXPECT_EQ(g.pieces, 4 * layers + (g.loss.num_targets + 4) / 5);
  // Deterministic: the same pass again gives the same bits.
  const Result again = RunGpu(**gpu, batch, adapter, dropout);
  EXPECT_EQ(again.loss.loss, g.loss.loss);
  EXPECT_EQ(again.grad, g.grad);
  // The memory a job is admitted with bounds what a pass takes (its LoRA copies aside).
  int64_t tokens = 0, longest = 0;
  for (const auto& t : batch.tokens) {
    tokens += static_cast<int64_t>(t.size());
    longest = std::max(longest, static_cast<int64_t>(t.size()));
  }
  EXPECT_GT((*gpu)->arena_bytes(), 0);
  EXPECT_LE((*gpu)->arena_bytes(), cuda::CudaTrainModel::ActivationBytes(
                                       file.config(), tokens, longest, g.loss.num_targets, 5) +
                                       8 * static_cast<int64_t>(adapter.params.size()));
}

TEST(CudaTrainModelTest, TinyLlamaMatchesHost) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(11, /*qwen_like=*/false);
  CompareOnModel(file, Batch({7, 1, 19, 33}, file.config().vocab_size, 3), AllModules(4), 0.3f);
}

TEST(CudaTrainModelTest, TinyQwenLikeMatchesHost) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(12, /*qwen_like=*/true);
  CompareOnModel(file, Batch({9, 40, 2}, file.config().vocab_size, 4), AllModules(3), 0.3f);
}

TEST(CudaTrainModelTest, DropoutMasksMatchHost) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(13, /*qwen_like=*/false);
  // The same seeded masks on both sides, so the passes agree as closely as without dropout;
  // a mask that differed would move the loss and gradient by far more.
  CompareOnModel(file, Batch({17, 25}, file.config().vocab_size, 5), AllModules(4), 0.3f,
                 LoraDropout{.p = 0.3f, .seed = 99});
}

TEST(CudaTrainModelTest, OnlyUpperLayersAdaptedSkipsLowerBackward) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(14, /*qwen_like=*/false);
  LoraConfig config = AllModules(4);
  config.layers = {1};  // layer 0 runs forward only, in the scratch activations
  cpu::ThreadPool pool(0);
  auto host = TrainModel<float>::Create(file, &pool, GgmlType::kBF16);
  auto gpu = cuda::CudaTrainModel::Create(file, {});
  ASSERT_TRUE(host.ok() && gpu.ok());
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), config, 8, 0.3f);
  const Batch batch({21, 12}, file.config().vocab_size, 6);
  const Result g = RunGpu(**gpu, batch, adapter);
  ExpectClose(g, RunHost(**host, batch, adapter));
  EXPECT_EQ(g.pieces, 4 + 1 + 2);  // 4 forward halves, 1 head chunk, 2 backward halves
}

TEST(CudaTrainModelTest, LastLogitsMatchHost) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(15, /*qwen_like=*/true);
  cpu::ThreadPool pool(0);
  auto host = TrainModel<float>::Create(file, &pool, GgmlType::kBF16);
  auto gpu = cuda::CudaTrainModel::Create(file, {});
  ASSERT_TRUE(host.ok() && gpu.ok());
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), AllModules(2), 9, 0.3f);
  const std::vector<TokenId> tokens = {3, 17, 5, 38, 0, 21, 9};
  auto h =
      (*host)->LastLogits(tokens, adapter.layout, adapter.config.scale(), adapter.params.data());
  auto g =
      (*gpu)->LastLogits(tokens, adapter.layout, adapter.config.scale(), adapter.params.data());
  ASSERT_TRUE(h.ok() && g.ok());
  const Diff d = Compare(*g, *h);
  EXPECT_LE(d.max_abs, 2e-2 * d.rms);
  std::vector<float> sorted = *h;
  std::sort(sorted.rbegin(), sorted.rend());
  if (sorted[0] - sorted[1] > 0.1f) {
    EXPECT_EQ(std::max_element(g->begin(), g->end()) - g->begin(),
              std::max_element(h->begin(), h->end()) - h->begin());
  }
  // Bad input is refused, not run.
  EXPECT_FALSE(
      (*gpu)->LastLogits(std::vector<TokenId>{}, adapter.layout, 1.0f, adapter.params.data()).ok());
  EXPECT_FALSE(
      (*gpu)
          ->LastLogits(std::vector<TokenId>{40}, adapter.layout, 1.0f, adapter.params.data())
          .ok());
}

TEST(CudaTrainModelTest, SmolLm2MatchesHost) {
  SPW_SKIP_WITHOUT_GPU();
  const std::string path = GpuModelPath();
  if (path.empty()) GTEST_SKIP() << "no model: set SPILLWAY_GPU_MODEL";
  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  // Lengths past a head chunk and not multiples of 16; a small adapter as training makes one.
  CompareOnModel(**file, Batch({1, 23, 70}, (*file)->config().vocab_size, 8), AllModules(8), 0.02f);
}

TEST(CudaTrainModelTest, JobOnTheGpuLearns) {
  SPW_SKIP_WITHOUT_GPU();
  const std::string path = GpuModelPath();
  if (path.empty()) GTEST_SKIP() << "no model: set SPILLWAY_GPU_MODEL";
  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  // Four fixed token sequences to memorise: the loss of their targets must fall by half.
  std::vector<train::TrainingExample> examples;
  const Batch data({24, 30, 27, 21}, (*file)->config().vocab_size, 10);
  for (size_t i = 0; i < data.tokens.size(); ++i) {
    examples.push_back({.tokens = data.tokens[i], .loss_mask = data.masks[i]});
  }
  train::TrainingOptions o;
  o.lora = AllModules(8);
  o.epochs = 60;
  o.batch_size = 4;
  o.learning_rate = 2e-3f;
  o.shuffle = false;
  auto gpu = cuda::CudaTrainModel::Create(**file, {});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto job = train::TrainingJob::Create(*std::move(gpu), examples, o);
  ASSERT_TRUE(job.ok()) << job.status();
  double first = -1, last = -1;
  std::vector<double> piece_ms;
  while (!(*job)->finished()) {
    absl::StatusOr<train::PieceReport> r = (*job)->StepPiece();
    ASSERT_TRUE(r.ok()) << r.status();
    piece_ms.push_back(r->seconds * 1e3);
    if (r->micro_batch.has_value() && r->micro_batch->optimizer_stepped) {
      if (first < 0) first = r->micro_batch->step_loss;
      last = r->micro_batch->step_loss;
    }
  }
  EXPECT_LT(last, 0.5 * first) << "first step loss " << first << ", last " << last;
  std::sort(piece_ms.begin(), piece_ms.end());
  // For the issue note (not asserted: speed is a benchmark's business).
  std::printf(
      "gpu training: %zu pieces, p50 %.2f ms, p99 %.2f ms, max %.2f ms; loss %.3f -> %.3f\n",
      piece_ms.size(), piece_ms[piece_ms.size() / 2], piece_ms[piece_ms.size() * 99 / 100],
      piece_ms.back(), first, last);
}

}  // namespace
}  // namespace spillway::engine::testing
