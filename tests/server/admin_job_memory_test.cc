// FineTuneJobs::MemoryOf (issue #7): the memory a fine-tuning job reserves out of the KV pool,
// computed at creation before any model is built, must be the figures the training core
// reports once the job exists (TrainingJob::StateBytes, TrainModel::ActivationBytes of a
// micro-batch that holds the longest example), so that a job admitted at creation fits when it
// launches. Checked on tiny random models, several LoRA configs and micro-batch budgets; on
// "cuda" (CUDA builds) the figures are CudaTrainModel's. ResolveFinetuneDevice
// (--finetune-device) follows the serving backend and refuses cuda on the CPU backend.
#include <gtest/gtest.h>

#include <vector>

#include "engine/cpu/thread_pool.h"
#include "engine/train/training_job.h"
#include "server/admin/admin_options.h"
#include "server/admin/fine_tune_jobs.h"
#include "tests/engine/train/tiny_random_model.h"
#if defined(SPW_WITH_CUDA)
#include "engine/cuda/cuda_train_model.h"
#endif

namespace spillway::server::admin {
namespace {

using engine::train::TrainingExample;
using engine::train::TrainingJob;
using engine::train::TrainingOptions;

std::vector<TrainingExample> Examples(int longest) {
  std::vector<TrainingExample> out;
  for (int len : {5, longest, 7}) {
    TrainingExample e;
    for (int t = 0; t < len; ++t) {
      e.tokens.push_back((5 * len + 3 * t + 1) % 40);
      e.loss_mask.push_back(t >= 2 ? 1 : 0);
    }
    out.push_back(std::move(e));
  }
  return out;
}

TEST(JobMemoryTest, MatchesTheBuiltJobsFigures) {
  engine::cpu::ThreadPool pool(1);
  for (bool qwen_like : {false, true}) {
    engine::testing::TinyRandomModel file(31, qwen_like);
    const engine::ModelConfig& c = file.config();
    for (int32_t rank : {1, 4}) {
      for (int64_t micro : {4, 8, 64}) {
        for (int longest : {6, 13}) {
          TrainingOptions o;
          o.lora.rank = rank;
          o.lora.alpha = 2.0f * rank;
          o.lora.targets = {engine::lora::kAllLoraModules.begin(),
                            engine::lora::kAllLoraModules.end()};
          o.lora.layers = {static_cast<int32_t>(c.num_layers - 1)};
          o.epochs = 1;
          o.batch_size = 1;
          o.max_micro_batch_tokens = static_cast<int32_t>(micro);
          auto job = TrainingJob::Create(file, Examples(longest), o, &pool);
          ASSERT_TRUE(job.ok()) << job.status();
          const JobMemory m = FineTuneJobs::MemoryOf(c, o.lora, micro, longest, "cpu");
          const int64_t tokens = std::max<int64_t>(micro, longest);
          SCOPED_TRACE(::testing::Message() << "qwen " << qwen_like << " rank " << rank << " micro "
                                            << micro << " longest " << longest);
          EXPECT_EQ(m.state, (*job)->StateBytes());
          EXPECT_EQ(m.activations, (*job)->model().ActivationBytes(tokens, longest, tokens));
          EXPECT_EQ(m.frozen, FineTuneJobs::FrozenBytes(c));
          EXPECT_EQ(m.total(), m.frozen + m.state + m.activations);
        }
      }
    }
  }
}

TEST(JobMemoryTest, GrowsWithTheLongestExampleAndTheRank) {
  engine::testing::TinyRandomModel file(32);
  engine::lora::LoraConfig lora;
  lora.rank = 4;
  lora.targets = {engine::lora::LoraModule::kQ};
  const JobMemory small = FineTuneJobs::MemoryOf(file.config(), lora, 8, 4, "cpu");
  // Attention probabilities grow with the sequence; a micro-batch holds at least the longest
  // example, so one longer than the budget sets the batch's tokens.
  const JobMemory longer = FineTuneJobs::MemoryOf(file.config(), lora, 8, 8, "cpu");
  const JobMemory over = FineTuneJobs::MemoryOf(file.config(), lora, 8, 100, "cpu");
  EXPECT_GT(longer.activations, small.activations);
  EXPECT_GT(over.activations, 10 * longer.activations);
  EXPECT_EQ(over.activations,
            FineTuneJobs::MemoryOf(file.config(), lora, 100, 100, "cpu").activations);
  lora.rank = 8;
  EXPECT_EQ(FineTuneJobs::MemoryOf(file.config(), lora, 8, 4, "cpu").state, 2 * small.state);
}

#if defined(SPW_WITH_CUDA)
TEST(JobMemoryTest, OnCudaTheFiguresAreCudaTrainModels) {
  engine::testing::TinyRandomModel file(33);
  const engine::ModelConfig& c = file.config();
  engine::lora::LoraConfig lora;
  lora.rank = 4;
  lora.targets = {engine::lora::kAllLoraModules.begin(), engine::lora::kAllLoraModules.end()};
  const JobMemory cpu = FineTuneJobs::MemoryOf(c, lora, 8, 13, "cpu");
  const JobMemory gpu = FineTuneJobs::MemoryOf(c, lora, 8, 13, "cuda");
  using engine::cuda::CudaTrainModel;
  EXPECT_EQ(gpu.frozen, CudaTrainModel::FrozenBytes(c));
  // A micro-batch holds at least the longest example: 13 tokens, all of them targets at most.
  EXPECT_EQ(gpu.activations, CudaTrainModel::ActivationBytes(
                                 c, 13, 13, 13, engine::cuda::CudaTrainOptions{}.head_chunk_rows));
  EXPECT_EQ(gpu.state, cpu.state);  // host memory on either device
}
#endif

TEST(FinetuneDeviceTest, AutoFollowsTheServingBackend) {
  EXPECT_EQ(*ResolveFinetuneDevice("auto", "cpu"), "cpu");
  EXPECT_EQ(*ResolveFinetuneDevice("auto", "cuda"), "cuda");
  EXPECT_EQ(*ResolveFinetuneDevice("cpu", "cuda"), "cpu");
  EXPECT_EQ(*ResolveFinetuneDevice("cuda", "cuda"), "cuda");
}

TEST(FinetuneDeviceTest, CudaOnTheCpuBackendFailsWithAClearMessage) {
  absl::StatusOr<std::string> d = ResolveFinetuneDevice("cuda", "cpu");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string m(d.status().message());
  EXPECT_NE(m.find("--finetune-device cuda"), std::string::npos) << m;
  EXPECT_NE(m.find("CPU backend"), std::string::npos) << m;
  EXPECT_NE(m.find("--finetune-device cpu"), std::string::npos) << m;
  EXPECT_EQ(ResolveFinetuneDevice("tpu", "cpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spillway::server::admin
