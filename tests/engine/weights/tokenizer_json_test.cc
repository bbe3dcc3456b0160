#include "engine/weights/tokenizer_json.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace spillway::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A byte-level BPE tokenizer.json; PRE is replaced by the pre_tokenizer, MERGES by the merges.
constexpr const char* kByteLevelTemplate = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<|endoftext|>", "special": true},
    {"id": 1, "content": "<|im_start|>", "special": true},
    {"id": 2, "content": "<|im_end|>", "special": true},
    {"id": 9, "content": "<tool>", "special": false}
  ],
  "normalizer": null,
  "pre_tokenizer": PRE,
  "post_processor": {"type": "ByteLevel", "add_prefix_space": false},
  "model": {
    "type": "BPE", "byte_fallback": false,
    "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2,
              "a": 3, "b": 4, "ab": 5, "Ġ": 6, "Ġab": 7},
    "merges": MERGES
  }
})";

constexpr const char* kPlainByteLevel =
    R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})";

std::string ByteLevelJson(const std::string& pre = kPlainByteLevel,
                          const std::string& merges = R"(["a b", "Ġ ab"])") {
  return absl::StrReplaceAll(kByteLevelTemplate, {{"PRE", pre}, {"MERGES", merges}});
}

constexpr const char* kChatMlConfig = R"({
  "bos_token": "<|im_start|>",
  "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": true},
  "pad_token": "<|im_end|>",
  "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"
})";

TEST(ParseTokenizerJson, ByteLevelBpe) {
  absl::StatusOr<TokenizerSpec> spec = ParseTokenizerJson(ByteLevelJson(), kChatMlConfig);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "gpt2");
  EXPECT_EQ(spec->pre, "gpt2");
  // Ids 8 has no entry: a [PAD8] of type unused. Id 9 is a non-special added token.
  EXPECT_THAT(spec->tokens, ElementsAre("<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b",
                                        "ab", "Ġ", "Ġab", "[PAD8]", "<tool>"));
  EXPECT_THAT(
      spec->token_types,
      ElementsAre(TokenType::kControl, TokenType::kControl, TokenType::kControl, TokenType::kNormal,
                  TokenType::kNormal, TokenType::kNormal, TokenType::kNormal, TokenType::kNormal,
                  TokenType::kUnused, TokenType::kUserDefined));
  EXPECT_THAT(spec->merges, ElementsAre("a b", "Ġ ab"));
  EXPECT_TRUE(spec->scores.empty());
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_EQ(spec->pad_id, 2);
  EXPECT_EQ(spec->unk_id, -1);
  EXPECT_FALSE(spec->add_bos);
  EXPECT_FALSE(spec->add_eos);
  EXPECT_FALSE(spec->add_space_prefix);
  // <|endoftext|> ends a turn too; <|im_end|> is already eos.
  EXPECT_THAT(spec->eot_ids, ElementsAre(0));
}

TEST(ParseTokenizerJson, MergesAsPairs) {
  absl::StatusOr<TokenizerSpec> spec =
      ParseTokenizerJson(ByteLevelJson(kPlainByteLevel, R"([["a", "b"], ["Ġ", "ab"]])"), "{}");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->merges, ElementsAre("a b", "Ġ ab"));
  EXPECT_EQ(spec->bos_id, -1);
}

TEST(ParseTokenizerJson, RecognisesPreTokenizers) {
  const std::string byte_level_no_regex =
      R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})";
  const std::string smollm = absl::StrCat(
      R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},)",
      kPlainByteLevel, "]}");
  auto split = [&](const std::string& regex_json) {
    return absl::StrCat(
        R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )",
        regex_json, R"(}, "behavior": "Isolated", "invert": false}, )", byte_level_no_regex, "]}");
  };
  const std::string llama3 = split(
      R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")");
  const std::string qwen2 = split(
      R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")");

  for (const auto& [pre_json, expected] :
       std::vector<std::pair<std::string, std::string>>{{kPlainByteLevel, "gpt2"},
                                                        {smollm, "smollm"},
                                                        {llama3, "llama-bpe"},
                                                        {qwen2, "qwen2"}}) {
    absl::StatusOr<TokenizerSpec> spec = ParseTokenizerJson(ByteLevelJson(pre_json), "{}");
    ASSERT_TRUE(spec.ok()) << expected << ": " << spec.status();
    EXPECT_EQ(spec->model, "gpt2");
    EXPECT_EQ(spec->pre, expected);
  }

  const absl::StatusOr<TokenizerSpec> other =
      ParseTokenizerJson(ByteLevelJson(split(R"("\\s+")")), "{}");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(other.status().message(), HasSubstr("pre_tokenizer"));
}

TEST(ParseTokenizerJson, TemplatePostProcessorAddsBos) {
  // Llama 3 style: no add_bos_token in the config; the post-processor puts bos first.
  std::string json = ByteLevelJson();
  absl::StrReplaceAll({{R"("post_processor": {"type": "ByteLevel", "add_prefix_space": false})",
                        R"("post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}]}]})"}},
                      &json);
  absl::StatusOr<TokenizerSpec> spec = ParseTokenizerJson(json, "{}");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->add_bos);
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_FALSE(spec->add_eos);

  // An explicit flag wins over the template.
  spec = ParseTokenizerJson(json, R"({"add_bos_token": false, "add_eos_token": true,
                                      "eos_token": "<|im_end|>"})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->add_bos);
  EXPECT_TRUE(spec->add_eos);
}

// A Llama-2-style tokenizer.json (SentencePiece BPE converted by Transformers).
constexpr const char* kLlama2Json = R"({
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true},
    {"id": 1, "content": "<s>", "special": true},
    {"id": 2, "content": "</s>", "special": true}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "model": {
    "type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "<0xFF>": 4,
              "▁": 5, "h": 6, "i": 7, "hi": 8, "▁hi": 9, "zz": 10},
    "merges": ["h i", "▁ hi"]
  }
})";

TEST(ParseTokenizerJson, Llama2StyleBpeBecomesLlamaWithScores) {
  absl::StatusOr<TokenizerSpec> spec =
      ParseTokenizerJson(kLlama2Json, R"({"bos_token": "<s>", "eos_token": "</s>",
                                          "unk_token": {"content": "<unk>"}})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "llama");
  EXPECT_EQ(spec->pre, "default");
  EXPECT_TRUE(spec->add_space_prefix);
  EXPECT_TRUE(spec->add_bos);  // LlamaTokenizer's default
  EXPECT_FALSE(spec->add_eos);
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_EQ(spec->unk_id, 0);
  EXPECT_EQ(spec->token_types[3], TokenType::kByte);
  EXPECT_EQ(spec->token_types[4], TokenType::kByte);
  EXPECT_EQ(spec->token_types[1], TokenType::kControl);
  EXPECT_EQ(spec->token_types[6], TokenType::kNormal);
  ASSERT_EQ(spec->scores.size(), 11u);
  // "hi" comes from merge 0, "▁hi" from merge 1; single symbols score 0; "zz", which no merge
  // makes, scores below every merge.
  EXPECT_EQ(spec->scores[8], 0.0f);
  EXPECT_EQ(spec->scores[9], -1.0f);
  EXPECT_EQ(spec->scores[6], 0.0f);
  EXPECT_LT(spec->scores[10], -1.0f);
}

TEST(ParseTokenizerJson, MetaspacePreTokenizer) {
  auto with_pre = [](const std::string& pre) {
    std::string json = kLlama2Json;
    absl::StrReplaceAll({{R"("pre_tokenizer": null)", absl::StrCat(R"("pre_tokenizer": )", pre)}},
                        &json);
    // Drop the normalizer so only the pre-tokenizer speaks.
    const size_t begin = json.find(R"("normalizer")");
    const size_t end = json.find(R"("pre_tokenizer")");
    json.replace(begin, end - begin, R"("normalizer": null, )");
    return json;
  };
  absl::StatusOr<TokenizerSpec> first = ParseTokenizerJson(
      with_pre(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"})"), "{}");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->model, "llama");
  EXPECT_TRUE(first->add_space_prefix);
  absl::StatusOr<TokenizerSpec> never = ParseTokenizerJson(
      with_pre(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"})"), "{}");
  ASSERT_TRUE(never.ok()) << never.status();
  EXPECT_FALSE(never->add_space_prefix);
}

TEST(ParseTokenizerJson, Errors) {
  EXPECT_THAT(ParseTokenizerJson("{not json", "{}").status().message(),
              HasSubstr("tokenizer.json: invalid JSON"));
  EXPECT_THAT(ParseTokenizerJson(ByteLevelJson(), "[").status().message(),
              HasSubstr("tokenizer_config.json: invalid JSON"));
  EXPECT_THAT(
      ParseTokenizerJson(R"({"model": {"type": "Unigram", "vocab": []}})", "{}").status().message(),
      HasSubstr("model type \"Unigram\" is not supported"));
  EXPECT_THAT(
      ParseTokenizerJson(ByteLevelJson(kPlainByteLevel, R"(["a c"])"), "{}").status().message(),
      HasSubstr("names \"c\", which is not in vocab"));
  EXPECT_THAT(
      ParseTokenizerJson(ByteLevelJson(kPlainByteLevel, R"(["b a"])"), "{}").status().message(),
      HasSubstr("makes \"ba\", which is not in vocab"));
  EXPECT_THAT(
      ParseTokenizerJson(ByteLevelJson(kPlainByteLevel, R"(["a b c"])"), "{}").status().message(),
      HasSubstr("is not \"left right\""));
  EXPECT_THAT(ParseTokenizerJson(ByteLevelJson(), R"({"bos_token": "<s>"})").status().message(),
              HasSubstr("bos_token \"<s>\" is not a token"));
  EXPECT_THAT(ParseTokenizerJson(ByteLevelJson(), R"({"add_bos_token": true})").status().message(),
              HasSubstr("add_bos_token is true but there is no bos_token"));
  std::string clash = ByteLevelJson();
  absl::StrReplaceAll({{R"("id": 9, "content": "<tool>")", R"("id": 3, "content": "<tool>")"}},
                      &clash);
  EXPECT_THAT(ParseTokenizerJson(clash, "{}").status().message(),
              HasSubstr("id 3 is given to both \"a\" and \"<tool>\""));
  std::string huge_id = ByteLevelJson();
  absl::StrReplaceAll({{R"("Ġab": 7)", R"("Ġab": 99999999999)"}}, &huge_id);
  EXPECT_THAT(ParseTokenizerJson(huge_id, "{}").status().message(),
              HasSubstr("vocab entry \"Ġab\" has id 99999999999"));
}

TEST(ChatTemplateFromTokenizerConfig, StringListOrNone) {
  EXPECT_EQ(*ChatTemplateFromTokenizerConfig(kChatMlConfig),
            "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(*ChatTemplateFromTokenizerConfig(R"({"chat_template": [
                {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})"),
            "D");
  EXPECT_EQ(*ChatTemplateFromTokenizerConfig("{}"), "");
  EXPECT_EQ(ChatTemplateFromTokenizerConfig(R"({"chat_template": 3})").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spillway::engine
