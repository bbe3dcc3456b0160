// TrainingJob on a tiny random model: the step API, gradient accumulation over micro-batches,
// checkpoints (resume bit for bit, corrupt and mismatched files), and AdamW / schedule /
// clipping against their formulas.
#include "engine/train/training_job.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "engine/lora/atomic_file.h"
#include "tests/engine/train/tiny_random_model.h"

namespace spillway::engine::train {
namespace {

std::vector<TrainingExample> Examples() {
  std::vector<TrainingExample> out;
  for (int i = 0; i < 5; ++i) {
    TrainingExample e;
    for (int t = 0; t < 6 + i; ++t) {
      e.tokens.push_back((7 * i + 3 * t + 1) % 40);
      e.loss_mask.push_back(t >= 3 ? 1 : 0);
    }
    out.push_back(std::move(e));
  }
  return out;
}

TrainingOptions Options() {
  TrainingOptions o;
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.lora.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  o.epochs = 4;
  o.batch_size = 2;
  o.max_micro_batch_tokens = 8;  // one example per micro-batch
  o.learning_rate = 1e-2f;
  o.warmup_steps = 1;
  o.seed = 3;
  return o;
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/training_job_test_" + std::to_string(::getpid()) + "_" + name;
}

TEST(TrainingJobTest, StepsUntilFinishedAndTheLossFalls) {
  testing::TinyRandomModel file(21);
  cpu::ThreadPool pool(1);
  const std::vector<TrainingExample> examples = Examples();
  auto job = TrainingJob::Create(file, examples, Options(), &pool);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ((*job)->total_steps(), 12);  // ceil(5 / 2) steps per epoch, 4 epochs
  auto before = (*job)->EvalLoss(examples);
  ASSERT_TRUE(before.ok());
  int micro = 0, stepped = 0;
  while (!(*job)->finished()) {
    auto r = (*job)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    ++micro;
    EXPECT_GT(r->targets, 0);
    EXPECT_LE(r->tokens, 10);  // one example each (examples have 6..10 tokens)
    if (r->optimizer_stepped) {
      ++stepped;
      EXPECT_EQ(r->step, stepped);
      EXPECT_GT(r->learning_rate, 0.0f);
    }
  }
  EXPECT_EQ(micro, 20);  // every example once per epoch
  EXPECT_EQ(stepped, 12);
  EXPECT_EQ((*job)->Step().status().code(), absl::StatusCode::kFailedPrecondition);
  auto after = (*job)->EvalLoss(examples);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(*after, 0.8 * *before);
}

TEST(TrainingJobTest, MicroBatchSplitDoesNotChangeTheUpdate) {
  testing::TinyRandomModel file(22);
  cpu::ThreadPool pool(1);
  TrainingOptions split = Options();
  split.shuffle = false;
  TrainingOptions whole = split;
  whole.max_micro_batch_tokens = 1000;
  auto a = TrainingJob::Create(file, Examples(), split, &pool);
  auto b = TrainingJob::Create(file, Examples(), whole, &pool);
  ASSERT_TRUE(a.ok() && b.ok());
  // B's first step is one micro-batch of both examples; A's is two micro-batches.
  auto rb = (*b)->Step();
  ASSERT_TRUE(rb.ok() && rb->optimizer_stepped);
  auto ra1 = (*a)->Step();
  ASSERT_TRUE(ra1.ok() && !ra1->optimizer_stepped);
  auto ra2 = (*a)->Step();
  ASSERT_TRUE(ra2.ok() && ra2->optimizer_stepped);
  EXPECT_NEAR(ra2->step_loss, rb->step_loss, 1e-6);
  EXPECT_NEAR(ra2->grad_norm, rb->grad_norm, 1e-5 * rb->grad_norm);
  const auto& pa = (*a)->adapter().params;
  const auto& pb = (*b)->adapter().params;
  for (size_t i = 0; i < pa.size(); ++i) ASSERT_NEAR(pa[i], pb[i], 1e-5) << i;
}

TEST(TrainingJobTest, CheckpointResumesBitForBit) {
  testing::TinyRandomModel file(23);
  cpu::ThreadPool pool(1);
  auto a = TrainingJob::Create(file, Examples(), Options(), &pool);
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE((*a)->Step().ok());  // mid-step, mid-epoch
  const std::string path = TempPath("ckpt");
  ASSERT_TRUE((*a)->SaveCheckpoint(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  while (!(*a)->finished()) ASSERT_TRUE((*a)->Step().ok());

  auto b = TrainingJob::Create(file, Examples(), Options(), &pool);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->RestoreCheckpoint(path).ok());
  int steps = 0;
  while (!(*b)->finished()) {
    ASSERT_TRUE((*b)->Step().ok());
    ++steps;
  }
  EXPECT_EQ(steps, 20 - 7);
  EXPECT_EQ((*a)->adapter().params, (*b)->adapter().params);

  // A flipped byte fails the checksum; another adapter shape is refused; a missing file is
  // NotFound.
  auto bytes = lora::ReadWholeFile(path);
  ASSERT_TRUE(bytes.ok());
  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 1;
  ASSERT_TRUE(lora::WriteFileAtomically(path + ".bad", corrupt).ok());
  EXPECT_EQ((*b)->RestoreCheckpoint(path + ".bad").code(), absl::StatusCode::kInvalidArgument);
  TrainingOptions other = Options();
  other.lora.rank = 2;
  auto c = TrainingJob::Create(file, Examples(), other, &pool);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->RestoreCheckpoint(path).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->RestoreCheckpoint(path + ".missing").code(), absl::StatusCode::kNotFound);
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".bad");
}

TEST(TrainingJobTest, CreateRejectsBadInput) {
  testing::TinyRandomModel file(24);
  cpu::ThreadPool pool(1);
  EXPECT_EQ(TrainingJob::Create(file, {}, Options(), &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<TrainingExample> no_targets = Examples();
  no_targets[2].loss_mask.assign(no_targets[2].tokens.size(), 0);
  EXPECT_EQ(TrainingJob::Create(file, no_targets, Options(), &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
  TrainingOptions bad = Options();
  bad.lora.rank = 0;
  EXPECT_EQ(TrainingJob::Create(file, Examples(), bad, &pool).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AdamWTest, MatchesTheFormula) {
  AdamW opt(2, {.beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f});
  std::vector<float> p = {1.0f, -2.0f};
  const std::vector<float> g = {0.5f, 0.25f};
  opt.Update(p, g, 0.01f);
  // Step 1: m̂ = g, v̂ = g², so the update is lr · g / (|g| + eps) = lr · sign(g), after decay.
  EXPECT_NEAR(p[0], 1.0f * (1 - 0.001f) - 0.01f, 1e-6);
  EXPECT_NEAR(p[1], -2.0f * (1 - 0.001f) - 0.01f, 1e-6);
  opt.Update(p, g, 0.01f);
  EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamWTest, ScheduleAndClipping) {
  EXPECT_FLOAT_EQ(ScheduledLearningRate(1.0f, 0, 4, 20, 0.1f), 0.25f);
  EXPECT_FLOAT_EQ(ScheduledLearningRate(1.0f, 3, 4, 20, 0.1f), 1.0f);
  EXPECT_FLOAT_EQ(ScheduledLearningRate(1.0f, 4, 4, 20, 0.1f), 1.0f);
  EXPECT_NEAR(ScheduledLearningRate(1.0f, 19, 4, 20, 0.1f), 0.1f, 1e-6);
  EXPECT_NEAR(ScheduledLearningRate(1.0f, 11, 4, 19, 0.0f), 0.5f, 1e-6);  // cosine midpoint
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(ClipGradNorm(g, 1.0), 5.0);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-5);
  std::vector<float> small = {0.3f, 0.4f};
  ClipGradNorm(small, 1.0);
  EXPECT_FLOAT_EQ(small[0], 0.3f);
}

}  // namespace
}  // namespace spillway::engine::train
