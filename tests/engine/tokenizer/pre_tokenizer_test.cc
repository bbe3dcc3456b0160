// The hand-written pre-tokenizers against HF `tokenizers`' Split(Regex(...), "isolated") on
// the golden corpus (tests/golden/tokenizer/pretok_splits.json, made by make_goldens.py).
#include "engine/tokenizer/internal/pre_tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/engine/tokenizer/golden_json.h"

namespace spillway::engine::internal {
namespace {

std::vector<size_t> PieceEnds(PreTokenizerKind kind, const std::string& text) {
  std::vector<std::string_view> pieces;
  PreTokenize(kind, text, &pieces);
  std::vector<size_t> ends;
  for (std::string_view p : pieces) {
    EXPECT_FALSE(p.empty());
    ends.push_back(static_cast<size_t>(p.data() + p.size() - text.data()));
  }
  return ends;
}

class PreTokenizerGoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PreTokenizerGoldenTest, MatchesHuggingFaceSplits) {
  static const boost::json::value json = testing::ReadGoldenJson("pretok_splits.json");
  auto kind = PreTokenizerFromName(GetParam());
  ASSERT_TRUE(kind.ok()) << kind.status();
  const auto& texts = json.at("texts").as_array();
  const auto& splits = json.at(GetParam()).as_array();
  ASSERT_EQ(texts.size(), splits.size());
  ASSERT_GE(texts.size(), 300u);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = testing::StringFromJson(texts[i]);
    std::vector<size_t> expected;
    for (const auto& e : splits[i].as_array()) expected.push_back(e.as_int64());
    EXPECT_EQ(PieceEnds(*kind, text), expected) << "text: '" << text << "'";
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, PreTokenizerGoldenTest,
                         ::testing::Values("gpt2", "smollm", "llama-bpe", "qwen2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(PreTokenizerTest, Examples) {
  auto pieces = [](PreTokenizerKind kind, std::string_view text) {
    std::vector<std::string_view> out;
    PreTokenize(kind, text, &out);
    return std::vector<std::string>(out.begin(), out.end());
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(PreTokenizerKind::kGpt2, "I'LL don't  go 123"),
            (V{"I", "'", "LL", " don", "'t", " ", " go", " 123"}));
  EXPECT_EQ(pieces(PreTokenizerKind::kSmolLm, "a 123"), (V{"a", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces(PreTokenizerKind::kLlama3, "I'LL 12345\n\n  x"),
            (V{"I", "'LL", " ", "123", "45", "\n\n", " ", " x"}));
  EXPECT_EQ(pieces(PreTokenizerKind::kQwen2, "x 12"), (V{"x", " ", "1", "2"}));
  EXPECT_TRUE(pieces(PreTokenizerKind::kGpt2, "").empty());
}

TEST(PreTokenizerTest, IllFormedUtf8IsCoveredByteForByte) {
  const std::string text = "ab\xFF\xC3 c\xE2\x82";
  std::vector<std::string_view> pieces;
  PreTokenize(PreTokenizerKind::kLlama3, text, &pieces);
  std::string joined;
  for (auto p : pieces) joined += p;
  EXPECT_EQ(joined, text);
}

TEST(PreTokenizerTest, UnknownName) {
  EXPECT_FALSE(PreTokenizerFromName("falcon").ok());
  EXPECT_EQ(*PreTokenizerFromName(""), PreTokenizerKind::kGpt2);
}

}  // namespace
}  // namespace spillway::engine::internal
