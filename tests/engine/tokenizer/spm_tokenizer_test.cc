// The SentencePiece-style path ("llama" model) against `sentencepiece` itself, on a small BPE
// model with byte fallback trained by tests/golden/tokenizer/make_goldens.py (spm_model.json).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/internal/unicode.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer/golden_json.h"

namespace spillway::engine {
namespace {

const boost::json::value& Model() {
  static const boost::json::value json = testing::ReadGoldenJson("spm_model.json");
  return json;
}

TokenizerSpec SpmSpec() {
  const auto& o = Model().as_object();
  TokenizerSpec spec;
  spec.model = "llama";
  for (const auto& t : o.at("tokens").as_array()) spec.tokens.push_back(testing::StringFromJson(t));
  for (const auto& s : o.at("scores").as_array()) spec.scores.push_back(s.to_number<float>());
  for (const auto& t : o.at("types").as_array()) {
    spec.token_types.push_back(static_cast<TokenType>(t.as_int64()));
  }
  spec.bos_id = static_cast<TokenId>(o.at("bos_id").as_int64());
  spec.eos_id = static_cast<TokenId>(o.at("eos_id").as_int64());
  spec.unk_id = static_cast<TokenId>(o.at("unk_id").as_int64());
  spec.add_space_prefix = o.at("add_space_prefix").as_bool();
  spec.add_bos = true;
  return spec;
}

const Tokenizer& Spm() {
  static const Tokenizer* tokenizer = [] {
    auto t = Tokenizer::Create(SpmSpec());
    SPW_CHECK(t.ok()) << t.status();
    return t->release();
  }();
  return *tokenizer;
}

TEST(SpmTokenizerTest, MatchesSentencePieceOnCorpus) {
  const Tokenizer& tok = Spm();
  const auto& cases = Model().at("cases").as_array();
  ASSERT_GE(cases.size(), 300u);
  for (const auto& v : cases) {
    const std::string text = testing::StringFromJson(v.at("text"));
    SCOPED_TRACE(text);
    const std::vector<TokenId> expected = testing::IdsFromJson(v.at("ids"));
    // The corpus' "<|im_end|>" and friends are plain text for this model.
    EXPECT_EQ(tok.Encode(text, /*add_special=*/false, /*parse_special=*/true), expected);
    const std::string decoded = testing::StringFromJson(v.at("decoded"));
    EXPECT_EQ(tok.Decode(expected, /*skip_special=*/true), decoded);
    EXPECT_EQ(decoded, text);
    // BOS first, and the detokenizer agrees with Decode.
    const std::vector<TokenId> with_bos = tok.Encode(text, /*add_special=*/true, false);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], tok.bos_id());
    IncrementalDetokenizer detok(tok, /*skip_special=*/true);
    std::string streamed;
    for (TokenId id : with_bos) {
      const std::string delta = detok.Push(id);
      EXPECT_TRUE(internal::IsValidUtf8(delta));
      streamed += delta;
    }
    streamed += detok.Flush();
    EXPECT_EQ(streamed, text);
    EXPECT_EQ(tok.Decode(with_bos, true), text);
  }
}

TEST(SpmTokenizerTest, SpacesBytesAndSpecials) {
  const Tokenizer& tok = Spm();
  EXPECT_TRUE(tok.strips_leading_space());
  EXPECT_EQ(tok.TokenBytes(*tok.FindToken("<0x0A>")), "\n");
  EXPECT_EQ(tok.token_type(*tok.FindToken("<0x0A>")), TokenType::kByte);
  EXPECT_EQ(tok.Encode("", true, false), (std::vector<TokenId>{tok.bos_id()}));
  // "</s>" in the text is EOS only with parse_special; a "▁" starts the text after it.
  const std::vector<TokenId> parsed = tok.Encode("hi</s>hi", false, /*parse_special=*/true);
  const std::vector<TokenId> hi = tok.Encode("hi", false, false);
  std::vector<TokenId> expected = hi;
  expected.push_back(tok.eos_id());
  expected.insert(expected.end(), hi.begin(), hi.end());
  EXPECT_EQ(parsed, expected);
  EXPECT_EQ(tok.Decode(parsed, /*skip_special=*/false), "hi</s> hi");
  EXPECT_EQ(tok.Decode(parsed, /*skip_special=*/true), "hi hi");
  const std::vector<TokenId> plain = tok.Encode("hi</s>hi", false, /*parse_special=*/false);
  EXPECT_EQ(tok.Decode(plain, false), "hi</s>hi");
}

}  // namespace
}  // namespace spillway::engine
