// Batch invariance: sequences decoded together in one continuous batch get, at temperature 0,
// exactly the tokens each gets alone — whatever their prompt lengths and whatever else shares
// the step (prompt chunks, other decodes). The scheduler relies on this so that a client's
// answer never depends on the load.
#include <gtest/gtest.h>

#include "engine/cpu/cpu_backend.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kvcache/kv_cache.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

TEST(BatchInvariance, EightPromptsTogetherEqualEachAlone) {
  auto file = OpenModelFile(testing::DefaultModelPath());
  ASSERT_TRUE(file.ok()) << file.status();
  cpu::CpuBackend backend(2);
  constexpr int32_t kBlocks = 512;
  auto model = LlamaModel::Create(**file, backend, kBlocks);
  ASSERT_TRUE(model.ok()) << model.status();
  kvcache::KvCache kv(kBlocks);
  auto tokenizer = Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  const std::vector<std::string> prompts = {
      "Hi",
      "The history of Rome begins with",
      "def add(a, b):\n    return",
      "List three fruits:",
      "<|im_start|>user\nWhy is the sky blue? Explain in detail, with the physics of Rayleigh "
      "scattering, and say why sunsets are red.<|im_end|>\n<|im_start|>assistant\n",
      "1 2 3",
      "In 1969, the first humans landed on the Moon. The mission was called",
      "Bonjour, je m'appelle",
  };
  std::vector<GenerateRequest> requests;
  for (const std::string& p : prompts) {
    GenerateRequest r{
        .prompt = (*tokenizer)->Encode(p, false, true), .max_tokens = 24, .ignore_eos = true};
    r.sampling.temperature = 0.0f;
    requests.push_back(std::move(r));
  }

  std::vector<std::vector<TokenId>> alone;
  for (const GenerateRequest& r : requests) {
    Generator g(**model, kv);
    auto out = g.Run({&r, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    alone.push_back((*out)[0].tokens);
  }
  // Together, with a small token budget so that prompt chunks of some sequences share steps
  // with decode tokens of others.
  Generator g(**model, kv, {.max_batch_tokens = 20});
  auto together = g.Run(requests);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ((*together)[i].tokens, alone[i]) << "prompt: " << prompts[i];
  }
  EXPECT_EQ(kv.num_free_blocks(), kBlocks);
}

}  // namespace
}  // namespace spillway::engine
