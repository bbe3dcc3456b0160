// The whole Model on the GPU against the CPU backend: the same LlamaModel code over a tiny
// random model in both of its variants (Llama: adjacent-pair RoPE, tied embeddings; Qwen2-like:
// NeoX RoPE, q/k/v biases, an untied lm head), through a batch of two prefill chunks and then
// one of two decode tokens beside a third prompt. Logits agree within 5e-2 of their RMS: the
// GPU holds the f32 weights as bf16 and rounds GEMM inputs to bf16 (8 mantissa bits), the CPU
// computes in f32. Then fine-tuning on the serving model's GPU weights (FindWeight +
// CudaBackend::DeviceData, as `serve` wires it): CudaTrainModel uploads nothing and gives the
// bits of one that uploaded its own copy. Skips without a GPU.
#include "engine/cuda/cuda_train_model.h"
#include "engine/llama/llama_model.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

class ModelForwardTest : public ::testing::TestWithParam<bool> {};

TEST_P(ModelForwardTest, LogitsMatchCpu) {
  SPW_SKIP_WITHOUT_GPU();
  const bool qwen_like = GetParam();
  TinyRandomModel file(7, qwen_like);
  cpu::CpuBackend cpu_backend(0);
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> gpu_backend = cuda::CudaBackend::Create();
  ASSERT_TRUE(gpu_backend.ok()) << gpu_backend.status();
  auto cpu_model = LlamaModel::Create(file, cpu_backend, 8);
  auto gpu_model = LlamaModel::Create(file, **gpu_backend, 8);
  ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
  ASSERT_TRUE(gpu_model.ok()) << gpu_model.status();

  const std::vector<kvcache::BlockId> a = {5, 0}, b = {3}, c = {1, 6};
  auto tokens = [](int n, int seed) {
    std::vector<TokenId> t(n);
    for (int i = 0; i < n; ++i) t[i] = static_cast<TokenId>((i * 7 + seed * 13) % 40);
    return t;
  };
  std::vector<Batch> steps(2);
  // Step 1: prompts of 13 and 5 tokens.
  steps[0].tokens = tokens(13, 1);
  for (TokenId t : tokens(5, 2)) steps[0].tokens.push_back(t);
  steps[0].chunks = {{.num_tokens = 13, .first_position = 0, .block_table = a, .want_logits = true},
                     {.num_tokens = 5, .first_position = 0, .block_table = b, .want_logits = true}};
  // Step 2: a decode token of each, beside a new prompt of 20 tokens.
  steps[1].tokens = {11, 29};
  for (TokenId t : tokens(20, 3)) steps[1].tokens.push_back(t);
  steps[1].chunks = {
      {.num_tokens = 1, .first_position = 13, .block_table = a, .want_logits = true},
      {.num_tokens = 1, .first_position = 5, .block_table = b, .want_logits = true},
      {.num_tokens = 20, .first_position = 0, .block_table = c, .want_logits = true}};
  for (size_t s = 0; s < steps.size(); ++s) {
    std::vector<float> cpu_logits, gpu_logits;
    ASSERT_TRUE((*cpu_model)->Forward(steps[s], &cpu_logits).ok());
    ASSERT_TRUE((*gpu_model)->Forward(steps[s], &gpu_logits).ok());
    ASSERT_EQ(cpu_logits.size(), steps[s].chunks.size() * 40);
    const Diff d = Compare(cpu_logits, gpu_logits);
    EXPECT_LE(d.max_abs, 5e-2 * d.rms) << "step " << s << " max " << d.max_abs << " rms " << d.rms;
  }
}

TEST_P(ModelForwardTest, TrainingOnTheServingWeightsEqualsItsOwnCopy) {
  SPW_SKIP_WITHOUT_GPU();
  const bool qwen_like = GetParam();
  TinyRandomModel file(8, qwen_like);
  auto backend = cuda::CudaBackend::Create();
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto serving = LlamaModel::Create(file, **backend, 8);
  ASSERT_TRUE(serving.ok()) << serving.status();
  cuda::CudaTrainOptions shared_options;
  shared_options.device_weights = [m = serving->get()](std::string_view name) -> const void* {
    const BackendWeight* w = m->FindWeight(name);
    return w == nullptr ? nullptr : cuda::CudaBackend::DeviceData(*w);
  };
  auto shared = cuda::CudaTrainModel::Create(file, shared_options);
  auto own = cuda::CudaTrainModel::Create(file, {});
  ASSERT_TRUE(shared.ok() && own.ok());
  EXPECT_EQ((*shared)->weight_bytes(), 0);
  EXPECT_EQ((*shared)->shared_weight_bytes(), cuda::CudaTrainModel::FrozenBytes(file.config()));
  EXPECT_EQ((*own)->weight_bytes(), cuda::CudaTrainModel::FrozenBytes(file.config()));

  lora::LoraConfig config;
  config.rank = 4;
  config.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  const lora::LoraAdapter adapter = RandomAdapter(file.config(), config, 3, 0.3f);
  const std::vector<TokenId> tokens = {1, 9, 4, 30, 2, 17, 6, 11, 25};
  const std::vector<uint8_t> mask = {0, 0, 1, 1, 1, 0, 1, 1, 1};
  const train::TrainSequence seq{.tokens = tokens, .loss_mask = mask};
  std::vector<float> g_shared(adapter.params.size()), g_own(adapter.params.size());
  auto a = (*shared)->ForwardBackward({&seq, 1}, adapter.layout, adapter.config.scale(),
                                      adapter.params.data(), g_shared.data());
  auto b = (*own)->ForwardBackward({&seq, 1}, adapter.layout, adapter.config.scale(),
                                   adapter.params.data(), g_own.data());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->loss, b->loss);
  EXPECT_EQ(g_shared, g_own);
  EXPECT_GT(a->loss, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelForwardTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "qwen2_like" : "llama";
                         });

}  // namespace
}  // namespace spillway::engine::testing
