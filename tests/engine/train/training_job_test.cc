// TrainingJob on a tiny random model: the step API, gradient accumulation over micro-batches,
// checkpoints (resume bit for bit, corrupt and mismatched files), and AdamW / schedule /
// clipping against their formulas.
#include "engine/train/training_job.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "common/check.h"
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

// A job advanced one piece at a time (with other forwards on the same model between its
// pieces, as inference would run between them) ends bit for bit where Step() ends: every
// report and the parameters. The lm_head is cut small so that pieces cross its slices.
TEST(TrainingJobTest, PiecesEqualStepsBitForBit) {
  testing::TinyRandomModel file(25);
  cpu::ThreadPool pool(2);
  TrainingOptions o = Options();
  o.head_pieces = {.slice_rows = 9, .chunk_rows = 2};
  o.max_micro_batch_tokens = 20;  // two examples per micro-batch
  o.optimizer_piece_params = 100;
  auto a = TrainingJob::Create(file, Examples(), o, &pool);
  auto b = TrainingJob::Create(file, Examples(), o, &pool);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<TokenId> other = {4, 8, 15, 16, 23};
  int pieces = 0, micro_batches = 0;
  while (!(*b)->finished()) {
    auto want = (*b)->Step();
    ASSERT_TRUE(want.ok()) << want.status();
    std::optional<StepReport> got;
    int these = 0;
    while (!got.has_value()) {
      ASSERT_TRUE((*a)->model().LastLogits(other, lora::LoraLayout(), 0.0f, nullptr).ok());
      auto piece = (*a)->StepPiece();
      ASSERT_TRUE(piece.ok()) << piece.status();
      EXPECT_GE(piece->seconds, 0.0);
      EXPECT_EQ((*a)->at_micro_batch_boundary(), piece->micro_batch.has_value());
      got = piece->micro_batch;
      ++these;
    }
    // 2 layers x 2 halves forward and backward; ceil(40 / 9) = 5 slices forward and backward
    // and one cross-entropy piece per chunk of 2 targets; the optimizer step's own pieces
    // (clipping, then AdamW 100 parameters a piece).
    const int chunks = (got->targets + 1) / 2;
    const int64_t params = (*a)->adapter().layout.num_params();
    ASSERT_GT(params, 100);
    EXPECT_EQ(these, 4 + 4 + 11 * chunks + (got->optimizer_stepped ? 1 + (params + 99) / 100 : 0));
    pieces += these;
    ++micro_batches;
    EXPECT_EQ(got->micro_batches, want->micro_batches);
    EXPECT_EQ(got->tokens, want->tokens);
    EXPECT_EQ(got->targets, want->targets);
    EXPECT_EQ(got->micro_loss, want->micro_loss);
    EXPECT_EQ(got->optimizer_stepped, want->optimizer_stepped);
    EXPECT_EQ(got->step, want->step);
    EXPECT_EQ(got->step_loss, want->step_loss);
    EXPECT_EQ(got->micro_accuracy, want->micro_accuracy);
    EXPECT_EQ(got->step_accuracy, want->step_accuracy);
    EXPECT_EQ(got->grad_norm, want->grad_norm);
    EXPECT_EQ(got->learning_rate, want->learning_rate);
    EXPECT_EQ(got->finished, want->finished);
    ASSERT_EQ((*a)->adapter().params, (*b)->adapter().params) << "micro-batch " << micro_batches;
  }
  EXPECT_TRUE((*a)->finished());
  EXPECT_EQ(micro_batches, 12);  // batch_size 2 fits one micro-batch of 20 tokens
  EXPECT_GT(pieces, 10 * micro_batches);
  EXPECT_EQ((*a)->StepPiece().status().code(), absl::StatusCode::kFailedPrecondition);
}

// Checkpoints are taken between micro-batches only; restoring drops a micro-batch under way
// and resumes bit for bit.
TEST(TrainingJobTest, CheckpointOnlyBetweenMicroBatches) {
  testing::TinyRandomModel file(26);
  cpu::ThreadPool pool(1);
  auto a = TrainingJob::Create(file, Examples(), Options(), &pool);
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*a)->Step().ok());
  auto piece = (*a)->StepPiece();
  ASSERT_TRUE(piece.ok());
  ASSERT_FALSE(piece->micro_batch.has_value());
  ASSERT_FALSE((*a)->at_micro_batch_boundary());
  const std::string path = TempPath("mid");
  EXPECT_EQ((*a)->SaveCheckpoint(path).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(path));
  auto rest = (*a)->Step();  // the rest of the micro-batch under way
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->micro_batches, 4);
  ASSERT_TRUE((*a)->SaveCheckpoint(path).ok());

  // b is in the middle of its own micro-batch when it restores a's checkpoint.
  auto b = TrainingJob::Create(file, Examples(), Options(), &pool);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->StepPiece().ok());
  ASSERT_FALSE((*b)->at_micro_batch_boundary());
  ASSERT_TRUE((*b)->RestoreCheckpoint(path).ok());
  EXPECT_TRUE((*b)->at_micro_batch_boundary());
  while (!(*a)->finished()) {
    auto ra = (*a)->Step();
    auto rb = (*b)->Step();
    ASSERT_TRUE(ra.ok() && rb.ok());
    EXPECT_EQ(ra->micro_batches, rb->micro_batches);
    EXPECT_EQ(ra->step_loss, rb->step_loss);
  }
  EXPECT_TRUE((*b)->finished());
  EXPECT_EQ((*a)->adapter().params, (*b)->adapter().params);
  std::filesystem::remove(path);
}

// The validation loss in pieces (one forward per example, a piece per half layer or lm_head
// slice) is EvalLoss's, and a new BeginEval starts over.
TEST(TrainingJobTest, EvalInPieces) {
  testing::TinyRandomModel file(27);
  cpu::ThreadPool pool(1);
  TrainingOptions o = Options();
  o.head_pieces = {.slice_rows = 16, .chunk_rows = 3};
  auto job = TrainingJob::Create(file, Examples(), o, &pool);
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE((*job)->Step().ok());
  const std::vector<TrainingExample> examples = Examples();
  auto want = (*job)->EvalLoss(examples);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ((*job)->EvalPiece().status().code(), absl::StatusCode::kFailedPrecondition);
  (*job)->BeginEval(examples);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*job)->EvalPiece().ok());
  (*job)->BeginEval(examples);
  int pieces = 0;
  std::optional<double> got;
  while (!got.has_value()) {
    auto piece = (*job)->EvalPiece();
    ASSERT_TRUE(piece.ok()) << piece.status();
    ++pieces;
    if (piece->done) got = piece->loss;
  }
  EXPECT_EQ(*got, *want);
  // Per example: 4 half layers, and 3 slices and a cross-entropy piece per chunk of <= 3 of
  // its 3..7 targets.
  int expected = 0;
  for (const TrainingExample& e : examples) {
    const int targets = static_cast<int>(e.tokens.size()) - 3;
    expected += 4 + 4 * ((targets + 2) / 3);
  }
  EXPECT_EQ(pieces, expected);
  const std::vector<TrainingExample> none;
  auto empty = (*job)->EvalLoss(none);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 0.0);
}

// The targets of `examples` whose greedy next token (LastLogits' argmax, ties to the lowest id)
// is the target, with the job's adapter: the accuracy computed apart from the training head.
double GreedyAccuracy(TrainingJob& job, const std::vector<TrainingExample>& examples) {
  int64_t hits = 0, targets = 0;
  const lora::LoraAdapter& a = job.adapter();
  for (const TrainingExample& e : examples) {
    for (size_t t = 1; t < e.tokens.size(); ++t) {
      if (e.loss_mask[t] == 0) continue;
      auto logits = job.model().LastLogits(std::span<const TokenId>(e.tokens).first(t), a.layout,
                                           a.config.scale(), a.params.data());
      SPW_CHECK(logits.ok());
      hits += std::max_element(logits->begin(), logits->end()) - logits->begin() == e.tokens[t];
      ++targets;
    }
  }
  return static_cast<double>(hits) / static_cast<double>(targets);
}

// Token accuracy: per micro-batch, per optimizer step (over the step's targets, however they
// were split) and in the evaluation, as the greedy predictions give it; training raises it.
TEST(TrainingJobTest, ReportsTokenAccuracy) {
  testing::TinyRandomModel file(29);
  cpu::ThreadPool pool(1);
  const std::vector<TrainingExample> examples = Examples();
  TrainingOptions o = Options();
  o.epochs = 12;
  o.learning_rate = 3e-2f;
  auto job = TrainingJob::Create(file, examples, o, &pool);
  ASSERT_TRUE(job.ok());
  auto before = (*job)->Evaluate(examples);
  ASSERT_TRUE(before.ok());
  EXPECT_TRUE(before->done);
  EXPECT_EQ(before->loss, *(*job)->EvalLoss(examples));
  EXPECT_EQ(before->accuracy, GreedyAccuracy(**job, examples));
  double correct = 0, targets = 0, last = 0;
  while (!(*job)->finished()) {
    auto r = (*job)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GE(r->micro_accuracy, 0.0);
    EXPECT_LE(r->micro_accuracy, 1.0);
    const double hits = r->micro_accuracy * r->targets;
    EXPECT_NEAR(hits, std::round(hits), 1e-9);
    correct += hits;
    targets += r->targets;
    if (r->optimizer_stepped) {
      EXPECT_NEAR(r->step_accuracy, correct / targets, 1e-12) << r->step;
      last = r->step_accuracy;
      correct = targets = 0;
    }
  }
  auto after = (*job)->Evaluate(examples);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->accuracy, GreedyAccuracy(**job, examples));
  // The tiny model learns its five sequences: from no target predicted to (almost) all.
  EXPECT_GT(after->accuracy, before->accuracy);
  EXPECT_GT(after->accuracy, 0.9);
  EXPECT_GT(last, 0.9);
  std::printf("token accuracy %.3f -> %.3f (last step %.3f)\n", before->accuracy, after->accuracy,
              last);

  // A checkpoint in the middle of an optimizer step keeps the hits counted so far.
  auto c = TrainingJob::Create(file, examples, Options(), &pool);
  ASSERT_TRUE(c.ok());
  bool saved = false;
  const std::string path = TempPath("accuracy");
  while (!saved && !(*c)->finished()) {
    auto r = (*c)->Step();
    ASSERT_TRUE(r.ok());
    if (!r->optimizer_stepped && r->micro_accuracy > 0) {
      ASSERT_TRUE((*c)->SaveCheckpoint(path).ok());
      saved = true;
    }
  }
  ASSERT_TRUE(saved);
  auto d = TrainingJob::Create(file, examples, Options(), &pool);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*d)->RestoreCheckpoint(path).ok());
  auto rc = (*c)->Step();
  auto rd = (*d)->Step();
  ASSERT_TRUE(rc.ok() && rd.ok());
  ASSERT_TRUE(rc->optimizer_stepped);
  EXPECT_EQ(rd->step_accuracy, rc->step_accuracy);
  std::filesystem::remove(path);
}

// With LoRA dropout a job still resumes bit for bit (the masks follow from the seed and the
// micro-batch index), and pieces still equal Step(); dropout changes the training.
TEST(TrainingJobTest, DropoutResumesBitForBit) {
  testing::TinyRandomModel file(28);
  cpu::ThreadPool pool(1);
  TrainingOptions o = Options();
  o.lora.dropout = 0.25f;
  auto a = TrainingJob::Create(file, Examples(), o, &pool);
  auto plain = TrainingJob::Create(file, Examples(), Options(), &pool);
  ASSERT_TRUE(a.ok() && plain.ok());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE((*a)->Step().ok());
  const std::string path = TempPath("dropout");
  ASSERT_TRUE((*a)->SaveCheckpoint(path).ok());
  while (!(*a)->finished()) ASSERT_TRUE((*a)->Step().ok());
  while (!(*plain)->finished()) ASSERT_TRUE((*plain)->Step().ok());
  EXPECT_NE((*a)->adapter().params, (*plain)->adapter().params);

  auto b = TrainingJob::Create(file, Examples(), o, &pool);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->RestoreCheckpoint(path).ok());
  while (!(*b)->finished()) {
    auto piece = (*b)->StepPiece();
    ASSERT_TRUE(piece.ok()) << piece.status();
  }
  EXPECT_EQ((*a)->adapter().params, (*b)->adapter().params);
  std::filesystem::remove(path);
  for (float bad : {-0.1f, 1.0f}) {
    o.lora.dropout = bad;
    EXPECT_EQ(TrainingJob::Create(file, Examples(), o, &pool).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
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

// The engine form of Create over a HostTrainEngine is the file form (which wraps the same
// engine): same passes, same numbers, bit for bit; the engine's ForwardBackward is
// TrainModel's.
TEST(TrainingJobTest, AJobOnAHostEngineIsTheHostJob) {
  testing::TinyRandomModel file(24);
  cpu::ThreadPool pool(1);
  const TrainingOptions o = Options();
  auto a = TrainingJob::Create(file, Examples(), o, &pool);
  auto model = TrainModel<float>::Create(file, &pool, o.frozen_type, o.head_pieces);
  ASSERT_TRUE(a.ok() && model.ok());
  auto b = TrainingJob::Create(std::make_unique<HostTrainEngine>(*std::move(model)), Examples(), o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->model().device(), "cpu");
  EXPECT_EQ((*b)->model().config().vocab_size, file.config().vocab_size);
  for (int i = 0; i < 5; ++i) {
    auto ra = (*a)->Step();
    auto rb = (*b)->Step();
    ASSERT_TRUE(ra.ok() && rb.ok());
    EXPECT_EQ(ra->micro_loss, rb->micro_loss);
    EXPECT_EQ(ra->grad_norm, rb->grad_norm);
  }
  EXPECT_EQ((*a)->adapter().params, (*b)->adapter().params);

  // One pass through the interface against TrainModel directly.
  auto direct = TrainModel<float>::Create(file, &pool, o.frozen_type, o.head_pieces);
  ASSERT_TRUE(direct.ok());
  const lora::LoraAdapter& ad = (*b)->adapter();
  const std::vector<TrainingExample> ex = Examples();
  const TrainSequence seqs[] = {{.tokens = ex[0].tokens, .loss_mask = ex[0].loss_mask},
                                {.tokens = ex[3].tokens, .loss_mask = ex[3].loss_mask}};
  const LoraDropout drop{.p = 0.25f, .seed = 9};
  std::vector<float> g1(ad.layout.num_params()), g2(ad.layout.num_params());
  auto l1 = (*b)->model().ForwardBackward(seqs, ad.layout, ad.config.scale(), ad.params.data(),
                                          g1.data(), drop);
  auto l2 = (*direct)->ForwardBackward(seqs, ad.layout, ad.config.scale(), ad.params.data(),
                                       g2.data(), drop);
  ASSERT_TRUE(l1.ok() && l2.ok());
  EXPECT_EQ(l1->loss, l2->loss);
  EXPECT_EQ(l1->num_targets, l2->num_targets);
  EXPECT_EQ(l1->num_correct, l2->num_correct);
  EXPECT_EQ(g1, g2);
  EXPECT_NE(g1, std::vector<float>(g1.size()));
  EXPECT_EQ((*b)->model().ActivationBytes(20, 10, 15), (*direct)->ActivationBytes(20, 10, 15));
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

// The update in ranges (the idle slot's optimizer pieces) is Update's bit for bit.
TEST(AdamWTest, RangesEqualTheWholeUpdate) {
  const AdamWOptions o{.beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f};
  AdamW whole(7, o), ranges(7, o);
  std::vector<float> pw = {1, -2, 3, 0.5f, -0.25f, 2, 7}, pr = pw;
  for (int step = 0; step < 3; ++step) {
    std::vector<float> g(7);
    for (int i = 0; i < 7; ++i) g[i] = 0.1f * static_cast<float>(i - step) + 0.03f;
    whole.Update(pw, g, 0.01f);
    ranges.BeginStep();
    ranges.UpdateRange(pr, g, 0.01f, 0, 3);
    ranges.UpdateRange(pr, g, 0.01f, 3, 3);
    ranges.UpdateRange(pr, g, 0.01f, 3, 7);
    ASSERT_EQ(pw, pr);
    ASSERT_EQ(whole.m(), ranges.m());
    ASSERT_EQ(whole.v(), ranges.v());
  }
  EXPECT_EQ(ranges.steps(), 3);
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
