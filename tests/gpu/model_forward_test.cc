// The whole Model on the GPU against the CPU backend: the same LlamaModel code over a tiny
// random model in both of its variants (Llama: adjacent-pair RoPE, tied embeddings; Qwen2-like:
// NeoX RoPE, q/k/v biases, an untied lm head), through a batch of two prefill chunks and then
// one of two decode tokens beside a third prompt. Logits agree within 5e-2 of their RMS: the
// GPU holds the f32 weights as bf16 and rounds GEMM inputs to bf16 (8 mantissa bits), the CPU
// computes in f32. Skips without a GPU.
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

INSTANTIATE_TEST_SUITE_P(Variants, ModelForwardTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "qwen2_like" : "llama";
                         });

}  // namespace
}  // namespace spillway::engine::testing
