// The tokenizer of the default model file (SmolLM2-135M-Instruct GGUF): its tokenizer metadata
// must be what tests/golden/tokenizer/smollm2_vocab.json holds, and the Tokenizer built from it
// must match Hugging Face `tokenizers` on the golden corpus.
// The spec comes through spillway's own GGUF reader (engine/weights), which is why this test
// sits in tests/engine/ rather than tests/engine/tokenizer/.
#include <gtest/gtest.h>

#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_file.h"
#include "tests/engine/tokenizer/golden_json.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

TEST(TokenizerModelTest, DefaultModelTokenizerMatchesGoldens) {
  auto file = OpenGguf(spillway::testing::DefaultModelPath());
  ASSERT_TRUE(file.ok()) << file.status();
  const TokenizerSpec& spec = (*file)->tokenizer();
  const TokenizerSpec golden = testing::Smollm2Spec();
  EXPECT_EQ(spec.model, golden.model);
  EXPECT_EQ(spec.pre, golden.pre);
  EXPECT_EQ(spec.tokens, golden.tokens);
  EXPECT_EQ(spec.token_types, golden.token_types);
  EXPECT_EQ(spec.merges, golden.merges);
  EXPECT_EQ(spec.bos_id, golden.bos_id);
  EXPECT_EQ(spec.eos_id, golden.eos_id);
  EXPECT_EQ(spec.add_bos, golden.add_bos);

  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const boost::json::value cases = testing::ReadGoldenJson("smollm2_cases.json");
  for (const auto& c : cases.at("cases").as_array()) {
    const std::string text = testing::StringFromJson(c.at("text"));
    EXPECT_EQ((*tok)->Encode(text, false, true), testing::IdsFromJson(c.at("ids"))) << text;
  }
  EXPECT_EQ((*tok)->FindToken("<|im_end|>"), 2);
}

}  // namespace
}  // namespace spillway::engine
