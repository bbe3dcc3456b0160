// TrainModel: the whole model's LoRA gradient against central finite differences in double
// precision on tiny random models, float against double, and the training forward's logits
// against the inference model's (LlamaModel on the CPU backend).
#include "engine/train/train_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/check.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/llama/llama_model.h"
#include "kvcache/kv_cache.h"
#include "tests/engine/train/tiny_random_model.h"

namespace spillway::engine::train {
namespace {

using lora::LoraConfig;
using lora::LoraModule;

struct Data {
  std::vector<std::vector<TokenId>> tokens = {{1, 7, 3, 22, 9, 14, 2}, {5, 30, 11, 8, 39}};
  std::vector<std::vector<uint8_t>> masks = {{0, 0, 0, 1, 1, 1, 1}, {0, 1, 0, 1, 1}};
  std::vector<TrainSequence> Seqs() const {
    return {{.tokens = tokens[0], .loss_mask = masks[0]},
            {.tokens = tokens[1], .loss_mask = masks[1]}};
  }
};

using testing::RandomAdapter;

LoraConfig AllModules(int32_t rank) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = 3.0f;
  c.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  return c;
}

void CheckWholeModelGradient(bool qwen_like, const LoraConfig& config, HeadPieces pieces = {},
                             LoraDropout dropout = {}) {
  testing::TinyRandomModel file(11, qwen_like);
  auto model = TrainModel<double>::Create(file, nullptr, GgmlType::kF32, pieces);
  ASSERT_TRUE(model.ok()) << model.status();
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), config, 5);
  std::vector<double> params(adapter.params.begin(), adapter.params.end());
  const double scale = adapter.config.scale();
  const Data data;
  const std::vector<TrainSequence> seqs = data.Seqs();
  std::vector<double> grad(params.size(), 0.0);
  auto loss =
      (*model)->ForwardBackward(seqs, adapter.layout, scale, params.data(), grad.data(), dropout);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(loss->num_targets, 7);
  EXPECT_GT(loss->loss, 0);
  constexpr double kH = 1e-6;
  double max_grad = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const double saved = params[i];
    params[i] = saved + kH;
    const double up =
        (*model)
            ->ForwardBackward(seqs, adapter.layout, scale, params.data(), nullptr, dropout)
            ->loss;
    params[i] = saved - kH;
    const double down =
        (*model)
            ->ForwardBackward(seqs, adapter.layout, scale, params.data(), nullptr, dropout)
            ->loss;
    params[i] = saved;
    const double numeric = (up - down) / (2 * kH);
    max_grad = std::max(max_grad, std::abs(numeric));
    ASSERT_NEAR(grad[i], numeric, 1e-6 * (1.0 + std::abs(numeric))) << "parameter " << i;
  }
  EXPECT_GT(max_grad, 1e-3);  // the check saw real gradients
}

TEST(TrainModelTest, LlamaLoraGradientMatchesFiniteDifferences) {
  CheckWholeModelGradient(/*qwen_like=*/false, AllModules(2));
}

TEST(TrainModelTest, QwenLoraGradientMatchesFiniteDifferences) {
  CheckWholeModelGradient(/*qwen_like=*/true, AllModules(3));
}

TEST(TrainModelTest, UpperLayerOnlyGradientMatchesFiniteDifferences) {
  LoraConfig c;
  c.rank = 2;
  c.alpha = 4.0f;
  c.targets = {LoraModule::kQ, LoraModule::kV, LoraModule::kDown};
  c.layers = {1};
  CheckWholeModelGradient(/*qwen_like=*/false, c);
}

// The lm_head cut into 6 slices of <= 7 vocabulary rows, the 7 targets into chunks of 3 rows
// and their cross-entropy into pieces of 2 rows: the pieces of a Run cross every boundary of
// the head.
TEST(TrainModelTest, GradientThroughHeadSlicesMatchesFiniteDifferences) {
  CheckWholeModelGradient(/*qwen_like=*/false, AllModules(2),
                          {.slice_rows = 7, .chunk_rows = 3, .loss_rows = 2});
  CheckWholeModelGradient(/*qwen_like=*/true, AllModules(2),
                          {.slice_rows = 7, .chunk_rows = 3, .loss_rows = 2});
}

// Begin + Advance: one bounded piece per call (half a layer forward or backward, or one
// lm_head slice forward or backward for a chunk of target rows), the same result as
// ForwardBackward bit for bit, and the same loss however the head is cut.
TEST(TrainModelTest, RunAdvancesOnePieceAtATime) {
  testing::TinyRandomModel file(15);
  auto whole = TrainModel<double>::Create(file, nullptr);
  auto cut = TrainModel<double>::Create(file, nullptr, GgmlType::kF32,
                                        {.slice_rows = 7, .chunk_rows = 3, .loss_rows = 2});
  ASSERT_TRUE(whole.ok() && cut.ok());
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), AllModules(2), 4);
  const std::vector<double> params(adapter.params.begin(), adapter.params.end());
  const double scale = adapter.config.scale();
  const Data data;
  const std::vector<TrainSequence> seqs = data.Seqs();
  for (bool with_grad : {true, false}) {
    SCOPED_TRACE(with_grad);
    std::vector<double> g_loop(params.size(), 0.0), g_whole(params.size(), 0.0);
    auto run = (*cut)->Begin(seqs, adapter.layout, scale, params.data(),
                             with_grad ? g_loop.data() : nullptr);
    ASSERT_TRUE(run.ok()) << run.status();
    int pieces = 0;
    bool done = false;
    while (!done) {
      done = (*cut)->Advance(**run);
      ++pieces;
      ASSERT_EQ((*run)->done(), done);
      ASSERT_LE(pieces, 100);
    }
    // 2 layers: 4 half layers forward; 3 chunks (3 + 3 + 1 of the 7 targets) x 6 slices
    // forward (and backward), and their cross-entropy 2 rows a piece (2 + 2 + 1 pieces); 4 half
    // layers backward (both layers adapted).
    EXPECT_EQ(pieces, with_grad ? 4 + 3 * 12 + 5 + 4 : 4 + 3 * 6 + 5);
    EXPECT_EQ((*run)->pieces(), pieces);
    auto again = (*cut)->ForwardBackward(seqs, adapter.layout, scale, params.data(),
                                         with_grad ? g_whole.data() : nullptr);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*run)->loss().loss, again->loss);  // bit for bit
    EXPECT_EQ((*run)->loss().num_targets, 7);
    for (size_t i = 0; i < params.size(); ++i) ASSERT_EQ(g_loop[i], g_whole[i]) << i;
    auto one_slice = (*whole)->ForwardBackward(seqs, adapter.layout, scale, params.data(), nullptr);
    ASSERT_TRUE(one_slice.ok());
    EXPECT_NEAR(one_slice->loss, again->loss, 1e-12 * again->loss);
  }
  EXPECT_FALSE(TrainModel<double>::Create(file, nullptr, GgmlType::kF32, {.slice_rows = 0}).ok());
}

// LoRA dropout with a fixed mask (its seed): the gradient is that of the loss with that mask.
TEST(TrainModelTest, DropoutGradientMatchesFiniteDifferences) {
  CheckWholeModelGradient(/*qwen_like=*/false, AllModules(2), {}, {.p = 0.3f, .seed = 99});
}

// p = 0 is exactly no dropout; p > 0 changes the loss, the same seed gives the same mask, and
// another seed another one; the base model (no LoRA branch) is unaffected.
TEST(TrainModelTest, DropoutMasksFollowTheSeed) {
  testing::TinyRandomModel file(16);
  cpu::ThreadPool pool(1);
  auto model = TrainModel<float>::Create(file, &pool);
  ASSERT_TRUE(model.ok());
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), AllModules(3), 6);
  const Data data;
  auto loss = [&](LoraDropout d, const lora::LoraLayout& layout, const float* params) {
    std::vector<float> grad(layout.num_params(), 0.0f);
    auto l = (*model)->ForwardBackward(data.Seqs(), layout, adapter.config.scale(), params,
                                       grad.data(), d);
    SPW_CHECK(l.ok());
    return std::make_pair(l->loss, grad);
  };
  const float* p = adapter.params.data();
  const auto none = loss({}, adapter.layout, p);
  EXPECT_EQ(loss({.p = 0.0f, .seed = 77}, adapter.layout, p), none);  // bit for bit
  const auto a = loss({.p = 0.5f, .seed = 1}, adapter.layout, p);
  EXPECT_NE(a.first, none.first);
  EXPECT_EQ(loss({.p = 0.5f, .seed = 1}, adapter.layout, p), a);
  EXPECT_NE(loss({.p = 0.5f, .seed = 2}, adapter.layout, p).first, a.first);
  const lora::LoraLayout base;
  EXPECT_EQ(loss({.p = 0.5f, .seed = 1}, base, nullptr).first, loss({}, base, nullptr).first);
  std::vector<float> g(adapter.params.size());
  EXPECT_EQ((*model)
                ->ForwardBackward(data.Seqs(), adapter.layout, 1.0f, p, g.data(), {.p = 1.0f})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TrainModelTest, FloatAgreesWithDouble) {
  testing::TinyRandomModel file(12);
  cpu::ThreadPool pool(2);
  auto f = TrainModel<float>::Create(file, &pool);
  auto d = TrainModel<double>::Create(file, nullptr);
  ASSERT_TRUE(f.ok() && d.ok());
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), AllModules(4), 9);
  std::vector<double> pd(adapter.params.begin(), adapter.params.end());
  const Data data;
  std::vector<float> gf(pd.size(), 0.0f);
  std::vector<double> gd(pd.size(), 0.0);
  auto lf = (*f)->ForwardBackward(data.Seqs(), adapter.layout, adapter.config.scale(),
                                  adapter.params.data(), gf.data());
  auto ld = (*d)->ForwardBackward(data.Seqs(), adapter.layout, adapter.config.scale(), pd.data(),
                                  gd.data());
  ASSERT_TRUE(lf.ok() && ld.ok());
  EXPECT_NEAR(lf->loss, ld->loss, 1e-5 * ld->loss);
  double max_g = 0;
  for (double g : gd) max_g = std::max(max_g, std::abs(g));
  for (size_t i = 0; i < gd.size(); ++i) ASSERT_NEAR(gf[i], gd[i], 1e-4 * max_g) << i;
}

// The training forward computes what the inference model computes (which KV-caches in f16,
// hence the tolerance).
TEST(TrainModelTest, LogitsMatchInferenceModel) {
  for (bool qwen_like : {false, true}) {
    testing::TinyRandomModel file(13, qwen_like);
    cpu::CpuBackend backend(1);
    auto llama = LlamaModel::Create(file, backend, 8);
    ASSERT_TRUE(llama.ok()) << llama.status();
    kvcache::KvCache kv(8);
    const std::vector<TokenId> ids = {3, 17, 5, 29, 1, 38, 12, 6, 6, 21};
    ASSERT_TRUE(kv.Grow(1, static_cast<int32_t>(ids.size())).has_value());
    Batch batch{.tokens = ids,
                .chunks = {{.num_tokens = static_cast<int32_t>(ids.size()),
                            .first_position = 0,
                            .block_table = kv.block_table(1),
                            .want_logits = true}}};
    std::vector<float> want;
    ASSERT_TRUE((*llama)->Forward(batch, &want).ok());
    cpu::ThreadPool pool(1);
    auto model = TrainModel<float>::Create(file, &pool);
    ASSERT_TRUE(model.ok());
    auto got = (*model)->LastLogits(ids, lora::LoraLayout(), 0.0f, nullptr);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR((*got)[i], want[i], 5e-3) << i;
  }
}

TEST(TrainModelTest, RejectsBadSequences) {
  testing::TinyRandomModel file(14);
  auto model = TrainModel<double>::Create(file, nullptr);
  ASSERT_TRUE(model.ok());
  const std::vector<TokenId> bad = {1, 40};
  const std::vector<uint8_t> mask = {0, 1};
  const TrainSequence s{.tokens = bad, .loss_mask = mask};
  EXPECT_EQ(
      (*model)->ForwardBackward({&s, 1}, lora::LoraLayout(), 1.0, nullptr, nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
  const std::vector<TokenId> good = {1, 2};
  const TrainSequence s2{.tokens = good, .loss_mask = {mask.data(), 1}};
  EXPECT_EQ((*model)
                ->ForwardBackward({&s2, 1}, lora::LoraLayout(), 1.0, nullptr, nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// The index of the largest logit, the lowest on ties (the sampler's greedy choice), computed
// here from LastLogits, independently of the training head.
TokenId Greedy(const std::vector<double>& logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Token accuracy: a Run counts the targets whose logits' argmax is the target. The sequence
// alternates the model's own greedy token (a hit) with another one (a miss); the count is the
// same with and without a gradient and however the head is cut into pieces, and the loss is
// not changed by counting.
TEST(TrainModelTest, CountsTargetsTheLogitsPredict) {
  testing::TinyRandomModel file(31);
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), AllModules(2), 8);
  const std::vector<double> params(adapter.params.begin(), adapter.params.end());
  const double scale = adapter.config.scale();
  auto model = TrainModel<double>::Create(file, nullptr);
  ASSERT_TRUE(model.ok());
  std::vector<TokenId> tokens = {3, 17, 5};
  std::vector<uint8_t> mask = {0, 0, 0};
  int64_t hits = 0;
  for (int i = 0; i < 9; ++i) {
    auto logits = (*model)->LastLogits(tokens, adapter.layout, scale, params.data());
    ASSERT_TRUE(logits.ok());
    const TokenId greedy = Greedy(*logits);
    const bool hit = i % 3 != 1;
    tokens.push_back(hit ? greedy : (greedy + 1 + i) % file.config().vocab_size);
    mask.push_back(i != 3);  // one position is not a target (a hit there would not count)
    hits += hit && i != 3;
  }
  ASSERT_EQ(hits, 5);
  const TrainSequence seq{.tokens = tokens, .loss_mask = mask};
  for (HeadPieces pieces :
       {HeadPieces{}, HeadPieces{.slice_rows = 7, .chunk_rows = 3, .loss_rows = 2}}) {
    auto m = TrainModel<double>::Create(file, nullptr, GgmlType::kF32, pieces);
    ASSERT_TRUE(m.ok());
    std::vector<double> grad(params.size(), 0.0);
    for (double* g : {grad.data(), static_cast<double*>(nullptr)}) {
      auto loss = (*m)->ForwardBackward({&seq, 1}, adapter.layout, scale, params.data(), g);
      ASSERT_TRUE(loss.ok()) << loss.status();
      EXPECT_EQ(loss->num_targets, 8);
      EXPECT_EQ(loss->num_correct, hits);
    }
  }
  // The base model (no adapter) predicts other tokens: its count is its own.
  auto base = (*model)->ForwardBackward({&seq, 1}, lora::LoraLayout(), 0.0, nullptr, nullptr);
  ASSERT_TRUE(base.ok());
  int64_t base_hits = 0;
  for (size_t t = 1; t < tokens.size(); ++t) {
    if (mask[t] == 0) continue;
    auto logits = (*model)->LastLogits(std::span<const TokenId>(tokens).first(t),
                                       lora::LoraLayout(), 0.0, nullptr);
    ASSERT_TRUE(logits.ok());
    base_hits += Greedy(*logits) == tokens[t];
  }
  EXPECT_EQ(base->num_correct, base_hits);
}

// A model whose lm_head row `to` is a copy of row `from`: their logits are equal everywhere.
class DuplicatedHeadRow final : public ModelFile {
 public:
  DuplicatedHeadRow(const ModelFile& base, int64_t from, int64_t to) {
    config_ = base.config();
    tensors_ = base.tensors();
    WeightTensor& w = tensors_.at("output.weight");
    SPW_CHECK(w.type == GgmlType::kF32);
    const float* src = reinterpret_cast<const float*>(w.data);
    head_.assign(src, src + w.num_elements());
    const int64_t hidden = config_.hidden;
    std::copy_n(head_.begin() + from * hidden, hidden, head_.begin() + to * hidden);
    w.data = reinterpret_cast<const uint8_t*>(head_.data());
  }

 private:
  std::vector<float> head_;
};

// Ties go to the lowest id, as the sampler's greedy: with two equal top logits, the lower
// token counts as predicted and the higher one does not.
TEST(TrainModelTest, AccuracyTiesGoToTheLowestId) {
  testing::TinyRandomModel base(32, /*qwen_like=*/true);  // an untied lm_head
  const std::vector<TokenId> prompt = {4, 9, 21, 2};
  auto plain = TrainModel<double>::Create(base, nullptr);
  ASSERT_TRUE(plain.ok());
  auto logits = (*plain)->LastLogits(prompt, lora::LoraLayout(), 0.0, nullptr);
  ASSERT_TRUE(logits.ok());
  const TokenId top = Greedy(*logits);
  const TokenId twin = base.config().vocab_size - 1;
  ASSERT_LT(top, twin);
  DuplicatedHeadRow file(base, top, twin);
  auto model = TrainModel<double>::Create(file, nullptr);
  ASSERT_TRUE(model.ok());
  auto tied = (*model)->LastLogits(prompt, lora::LoraLayout(), 0.0, nullptr);
  ASSERT_TRUE(tied.ok());
  ASSERT_EQ((*tied)[top], (*tied)[twin]);
  ASSERT_EQ(*std::max_element(tied->begin(), tied->end()), (*tied)[top]);
  for (TokenId target : {top, twin}) {
    std::vector<TokenId> tokens = prompt;
    tokens.push_back(target);
    std::vector<uint8_t> mask(tokens.size(), 0);
    mask.back() = 1;
    const TrainSequence seq{.tokens = tokens, .loss_mask = mask};
    auto loss = (*model)->ForwardBackward({&seq, 1}, lora::LoraLayout(), 0.0, nullptr, nullptr);
    ASSERT_TRUE(loss.ok());
    EXPECT_EQ(loss->num_targets, 1);
    EXPECT_EQ(loss->num_correct, target == top ? 1 : 0) << target;
  }
}

}  // namespace
}  // namespace spillway::engine::train
