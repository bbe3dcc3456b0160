// Byte-level BPE against Hugging Face `tokenizers` on SmolLM2's vocabulary (goldens made by
// tests/golden/tokenizer/make_goldens.py), plus Create's validation and the accessors.
#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/internal/unicode.h"
#include "tests/engine/tokenizer/golden_json.h"

namespace spillway::engine {
namespace {

using testing::IdsFromJson;
using testing::ReadGoldenJson;
using testing::StringFromJson;

const Tokenizer& Smollm2() {
  static const Tokenizer* tokenizer = [] {
    auto t = Tokenizer::Create(testing::Smollm2Spec());
    SPW_CHECK(t.ok()) << t.status();
    return t->release();
  }();
  return *tokenizer;
}

struct Case {
  std::string text;
  std::vector<TokenId> ids;
  std::vector<TokenId> ids_plain;
  std::string decoded;
  std::string decoded_skip;
  std::vector<TokenId> ids_llama_bpe;  // same vocabulary, Llama 3 pre-tokenizer, ignore_merges
  std::vector<TokenId> ids_qwen2;      // same vocabulary, Qwen2 pre-tokenizer
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const boost::json::value json = ReadGoldenJson("smollm2_cases.json");
  for (const auto& v : json.at("cases").as_array()) {
    const auto& o = v.as_object();
    Case c;
    c.text = StringFromJson(o.at("text"));
    c.ids = IdsFromJson(o.at("ids"));
    c.ids_plain = o.contains("ids_plain") ? IdsFromJson(o.at("ids_plain")) : c.ids;
    c.decoded = StringFromJson(o.at("decoded"));
    c.decoded_skip = StringFromJson(o.at("decoded_skip"));
    c.ids_llama_bpe = IdsFromJson(o.at("ids_llama_bpe"));
    c.ids_qwen2 = IdsFromJson(o.at("ids_qwen2"));
    cases.push_back(std::move(c));
  }
  return cases;
}

std::string Streamed(const Tokenizer& tokenizer, const std::vector<TokenId>& ids,
                     bool skip_special) {
  IncrementalDetokenizer detok(tokenizer, skip_special);
  std::string text;
  for (TokenId id : ids) {
    const std::string delta = detok.Push(id);
    EXPECT_TRUE(internal::IsValidUtf8(delta)) << "after id " << id;
    text += delta;
  }
  const std::string tail = detok.Flush();
  EXPECT_TRUE(internal::IsValidUtf8(tail));
  return text + tail;
}

TEST(TokenizerTest, MatchesHuggingFaceOnCorpus) {
  const Tokenizer& tok = Smollm2();
  const std::vector<Case> cases = Cases();
  ASSERT_GE(cases.size(), 300u);
  int round_trips = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(tok.Encode(c.text, /*add_special=*/false, /*parse_special=*/true), c.ids);
    EXPECT_EQ(tok.Encode(c.text, /*add_special=*/false, /*parse_special=*/false), c.ids_plain);
    EXPECT_EQ(tok.Decode(c.ids, /*skip_special=*/false), c.decoded);
    EXPECT_EQ(tok.Decode(c.ids, /*skip_special=*/true), c.decoded_skip);
    if (c.decoded == c.text) {  // all but texts with bytes that SmolLM2 has no token for
      EXPECT_EQ(tok.Decode(tok.Encode(c.text, false, false), false), c.text);
      ++round_trips;
    }
    EXPECT_EQ(Streamed(tok, c.ids, false), c.decoded);
    EXPECT_EQ(Streamed(tok, c.ids, true), c.decoded_skip);
  }
  EXPECT_GE(round_trips, 290);
}

// The Llama 3 and Qwen2 pipelines end to end, on SmolLM2's vocabulary (HF built the same).
TEST(TokenizerTest, OtherPreTokenizersMatchHuggingFace) {
  for (const char* pre : {"llama-bpe", "qwen2"}) {
    SCOPED_TRACE(pre);
    TokenizerSpec spec = testing::Smollm2Spec();
    spec.pre = pre;
    auto tok = Tokenizer::Create(spec);
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (const Case& c : Cases()) {
      EXPECT_EQ((*tok)->Encode(c.text, false, true),
                spec.pre == "qwen2" ? c.ids_qwen2 : c.ids_llama_bpe)
          << c.text;
    }
  }
}

TEST(TokenizerTest, Accessors) {
  const Tokenizer& tok = Smollm2();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.IsEndOfGeneration(2));
  EXPECT_FALSE(tok.IsEndOfGeneration(1));
  EXPECT_FALSE(tok.IsEndOfGeneration(-1));
  EXPECT_EQ(tok.FindToken("<|im_end|>"), 2);
  EXPECT_EQ(tok.FindToken("Ġthe"), 260);
  EXPECT_EQ(tok.FindToken("no such token"), std::nullopt);
  EXPECT_EQ(tok.TokenPiece(260), "Ġthe");
  EXPECT_EQ(tok.TokenBytes(260), " the");
  EXPECT_EQ(tok.TokenBytes(198), "\n");
  EXPECT_EQ(tok.TokenBytes(1), "<|im_start|>");
  EXPECT_EQ(tok.token_type(1), TokenType::kControl);
  EXPECT_EQ(tok.token_type(260), TokenType::kNormal);
  EXPECT_FALSE(tok.strips_leading_space());
}

TEST(TokenizerTest, ParseSpecial) {
  const Tokenizer& tok = Smollm2();
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  const std::vector<TokenId> parsed = tok.Encode(text, false, /*parse_special=*/true);
  ASSERT_GE(parsed.size(), 3u);
  EXPECT_EQ(parsed.front(), 1);
  EXPECT_EQ(parsed.back(), 2);
  const std::vector<TokenId> plain = tok.Encode(text, false, /*parse_special=*/false);
  for (TokenId id : plain) EXPECT_NE(tok.token_type(id), TokenType::kControl);
  EXPECT_EQ(tok.Decode(plain, false), text);
  EXPECT_EQ(tok.Decode(parsed, false), text);
  EXPECT_EQ(tok.Decode(parsed, /*skip_special=*/true), "user\nHi");
  // Adjacent and longest-first matching.
  EXPECT_EQ(tok.Encode("<|im_end|><|im_start|>", false, true), (std::vector<TokenId>{2, 1}));
}

TEST(TokenizerTest, AddSpecialFollowsSpecFlags) {
  TokenizerSpec spec = testing::Smollm2Spec();
  const std::vector<TokenId> bare = Smollm2().Encode("Hello", false, false);
  EXPECT_EQ(Smollm2().Encode("Hello", /*add_special=*/true, false), bare);  // SmolLM2: no BOS
  spec.add_bos = true;
  spec.add_eos = true;
  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<TokenId> expected = {1};
  expected.insert(expected.end(), bare.begin(), bare.end());
  expected.push_back(2);
  EXPECT_EQ((*tok)->Encode("Hello", /*add_special=*/true, false), expected);
  EXPECT_EQ((*tok)->Encode("Hello", /*add_special=*/false, false), bare);
  EXPECT_EQ((*tok)->Encode("", true, false), (std::vector<TokenId>{1, 2}));
}

TEST(TokenizerTest, IncrementalDetokenizerHoldsPartialCharacters) {
  const Tokenizer& tok = Smollm2();
  // "😀" is 4 bytes; feed them as single-byte tokens.
  const std::string emoji = "\xF0\x9F\x98\x80";
  std::vector<TokenId> byte_ids;
  for (char b : emoji) {
    for (TokenId id = 0; id < tok.vocab_size(); ++id) {
      if (tok.TokenBytes(id) == std::string(1, b)) {
        byte_ids.push_back(id);
        break;
      }
    }
  }
  ASSERT_EQ(byte_ids.size(), 4u);
  IncrementalDetokenizer detok(tok, false);
  EXPECT_EQ(detok.Push(byte_ids[0]), "");
  EXPECT_EQ(detok.Push(byte_ids[1]), "");
  EXPECT_EQ(detok.Push(byte_ids[2]), "");
  EXPECT_EQ(detok.num_pending_bytes(), 3u);
  EXPECT_EQ(detok.Push(byte_ids[3]), emoji);
  EXPECT_EQ(detok.Flush(), "");
  // An incomplete character at the end becomes U+FFFD on Flush, as Decode does.
  EXPECT_EQ(detok.Push(byte_ids[0]), "");
  EXPECT_EQ(detok.Push(byte_ids[1]), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.Decode(std::vector<TokenId>{byte_ids[0], byte_ids[1]}, false), "\xEF\xBF\xBD");
  // A lead byte followed by ASCII: U+FFFD at once, then the ASCII.
  const TokenId a = *tok.FindToken("a");
  EXPECT_EQ(detok.Push(byte_ids[0]), "");
  EXPECT_EQ(detok.Push(a),
            "\xEF\xBF\xBD"
            "a");
}

TEST(TokenizerTest, LongTextRoundTrips) {
  const Tokenizer& tok = Smollm2();
  std::string text;
  for (const Case& c : Cases()) {
    if (c.decoded == c.text) text += c.text + " ";
  }
  for (int i = 0; i < 3; ++i) text += text;
  const std::vector<TokenId> ids = tok.Encode(text, false, true);
  EXPECT_GT(ids.size(), 10000u);
  EXPECT_EQ(tok.Decode(ids, false), text);
}

TEST(TokenizerTest, LongRunsOfOneCharacter) {
  const Tokenizer& tok = Smollm2();
  for (const char* unit : {"a", " ", "\n", "!", "7", "é"}) {
    std::string text;
    for (int i = 0; i < 5000; ++i) text += unit;
    EXPECT_EQ(tok.Decode(tok.Encode(text, false, false), false), text);
  }
}

TokenizerSpec TinySpec() {
  TokenizerSpec spec;
  spec.model = "gpt2";
  spec.pre = "gpt2";
  spec.tokens = {"a", "b", "ab", "<|end|>"};
  spec.token_types = {TokenType::kNormal, TokenType::kNormal, TokenType::kNormal,
                      TokenType::kControl};
  spec.merges = {"a b"};
  spec.eos_id = 3;
  return spec;
}

TEST(TokenizerTest, CreateAcceptsTinySpec) {
  auto tok = Tokenizer::Create(TinySpec());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("abab<|end|>", false, true), (std::vector<TokenId>{2, 2, 3}));
  EXPECT_EQ((*tok)->Encode("aba", false, true), (std::vector<TokenId>{2, 0}));
}

TEST(TokenizerTest, IgnoreMergesOnlyForLlama3) {
  TokenizerSpec spec = TinySpec();
  spec.tokens = {"a", "b", "c", "ab", "abc"};
  spec.token_types.assign(5, TokenType::kNormal);
  spec.merges = {"a b"};
  spec.eos_id = -1;
  auto gpt2 = Tokenizer::Create(spec);
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ((*gpt2)->Encode("abc", false, false), (std::vector<TokenId>{3, 2}));
  spec.pre = "llama-bpe";
  auto llama3 = Tokenizer::Create(spec);
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ((*llama3)->Encode("abc", false, false), (std::vector<TokenId>{4}));
}

void ExpectInvalid(const TokenizerSpec& spec, const std::string& fragment) {
  auto tok = Tokenizer::Create(spec);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tok.status().message().find(fragment), std::string::npos) << tok.status();
}

TEST(TokenizerTest, CreateRejectsBadSpecs) {
  TokenizerSpec spec = TinySpec();
  spec.model = "wordpiece";
  ExpectInvalid(spec, "unsupported tokenizer model 'wordpiece'");
  spec = TinySpec();
  spec.pre = "falcon";
  ExpectInvalid(spec, "unsupported pre-tokenizer 'falcon'");
  spec = TinySpec();
  spec.tokens.clear();
  spec.token_types.clear();
  ExpectInvalid(spec, "empty");
  spec = TinySpec();
  spec.token_types.pop_back();
  ExpectInvalid(spec, "4 tokens but 3 token types");
  spec = TinySpec();
  spec.merges = {"a c"};
  ExpectInvalid(spec, "unknown token 'c'");
  spec = TinySpec();
  spec.merges = {"ab"};
  ExpectInvalid(spec, "not two tokens");
  spec = TinySpec();
  spec.merges = {"b a"};
  ExpectInvalid(spec, "unknown token 'ba'");
  spec = TinySpec();
  spec.eos_id = 4;
  ExpectInvalid(spec, "EOS id 4 is out of range");
  spec = TinySpec();
  spec.eot_ids = {7};
  ExpectInvalid(spec, "end-of-turn id 7");
  spec = TinySpec();
  spec.add_bos = true;
  ExpectInvalid(spec, "no BOS id");
  spec = TinySpec();
  spec.model = "llama";
  ExpectInvalid(spec, "scores");
}

}  // namespace
}  // namespace spillway::engine
