// Greedy tokens on the GPU equal the CPU backend's: 5 prompts x 64 tokens, same model file,
// same Model code, each backend in its own Generator.
//
// The model is $SPILLWAY_GPU_MODEL, else the default model (SmolLM2-135M-Instruct Q4_1) when
// the cache has it; skips without a GPU or a model. A GPU run may differ from the CPU one only
// at a near-tie: where the first differing token appears, the CPU's log-probabilities of its
// own token and of the GPU's token (at that same context, since everything before matched)
// must differ by less than kNearTie nats; the rest of that sequence is then a different
// continuation and is not compared. kNearTie covers the GPU's bf16 weights (GGUF quantized
// values re-rounded to 8 mantissa bits) and bf16 GEMM inputs against the CPU's own kernels.
#include <cstdlib>
#include <filesystem>

#include "common/cache_dir.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_file.h"
#include "kvcache/kv_cache.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

constexpr float kNearTie = 0.5f;
constexpr int32_t kTokens = 64;
constexpr int32_t kTopLogprobs = 200;

struct Run {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<kvcache::KvCache> kv;
};

TEST(E2eGreedyTest, GpuTokensEqualCpuTokensUpToNearTies) {
  SPW_SKIP_WITHOUT_GPU();
  const std::string path = GpuModelPath();
  if (path.empty()) GTEST_SKIP() << "no model: set SPILLWAY_GPU_MODEL";
  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status();

  const int32_t blocks = 5 * (256 + kTokens) / kvcache::kBlockTokens + 16;
  cpu::CpuBackend cpu_backend(0);
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> gpu_backend = cuda::CudaBackend::Create();
  ASSERT_TRUE(gpu_backend.ok()) << gpu_backend.status();
  auto cpu_model = LlamaModel::Create(**file, cpu_backend, blocks);
  auto gpu_model = LlamaModel::Create(**file, **gpu_backend, blocks);
  ASSERT_TRUE(cpu_model.ok()) << cpu_model.status();
  ASSERT_TRUE(gpu_model.ok()) << gpu_model.status();
  kvcache::KvCache cpu_kv(blocks), gpu_kv(blocks);

  const std::vector<std::string> prompts = {
      "The capital of France is",
      "Write a haiku about the sea.\n",
      "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
      "Once upon a time, in a village at the edge of a great forest, there lived",
      "1, 2, 3, 5, 8, 13,",
  };
  std::vector<GenerateRequest> cpu_reqs, gpu_reqs;
  for (const std::string& p : prompts) {
    GenerateRequest r{
        .prompt = (*tok)->Encode(p, true, false), .max_tokens = kTokens, .ignore_eos = true};
    r.sampling.temperature = 0.0f;  // greedy
    gpu_reqs.push_back(r);
    r.sampling.logprobs = kTopLogprobs;
    cpu_reqs.push_back(r);
  }
  // All five at once: the GPU runs a batch of prefill chunks, then batched decode.
  Generator cpu_gen(**cpu_model, cpu_kv), gpu_gen(**gpu_model, gpu_kv);
  absl::StatusOr<std::vector<GenerateResult>> cpu_out = cpu_gen.Run(cpu_reqs);
  absl::StatusOr<std::vector<GenerateResult>> gpu_out = gpu_gen.Run(gpu_reqs);
  ASSERT_TRUE(cpu_out.ok()) << cpu_out.status();
  ASSERT_TRUE(gpu_out.ok()) << gpu_out.status();

  int identical = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    const GenerateResult& c = (*cpu_out)[p];
    const GenerateResult& g = (*gpu_out)[p];
    ASSERT_EQ(c.tokens.size(), static_cast<size_t>(kTokens));
    ASSERT_EQ(g.tokens.size(), static_cast<size_t>(kTokens));
    size_t i = 0;
    while (i < c.tokens.size() && c.tokens[i] == g.tokens[i]) ++i;
    if (i == c.tokens.size()) {
      ++identical;
      continue;
    }
    const SampleResult& s = c.samples[i];
    float gpu_token_logprob = -INFINITY;
    for (const TokenLogprob& t : s.top) {
      if (t.token == g.tokens[i]) gpu_token_logprob = t.logprob;
    }
    EXPECT_LT(s.logprob - gpu_token_logprob, kNearTie)
        << "prompt " << p << " token " << i << ": CPU " << c.tokens[i] << " (logprob " << s.logprob
        << "), GPU " << g.tokens[i] << " (CPU logprob " << gpu_token_logprob << ")";
    std::printf("prompt %zu: first difference at token %zu, a near-tie (%.4f nats)\n", p, i,
                s.logprob - gpu_token_logprob);
  }
  std::printf("%d of %zu prompts identical for %d tokens (%s)\n", identical, prompts.size(),
              kTokens, path.c_str());
}

}  // namespace
}  // namespace spillway::engine::testing
