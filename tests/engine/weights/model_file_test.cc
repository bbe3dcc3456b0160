// OpenGguf on small GGUF files written here, byte by byte, into a scratch directory: a valid
// Llama or Qwen2 file opens with the right ModelConfig, TokenizerSpec and tensor views, and
// each way a file can fail to describe a runnable model (missing or misshapen tensor, unknown
// architecture, no tokenizer, tokenizer and embedding of different sizes, odd head size,
// missing metadata, unsupported RoPE scaling) is an error that names what is wrong.
#include "engine/weights/model_file.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/weights/test_files.h"

namespace spillway::engine {
namespace {

using ::spillway::engine::testing::ScratchDir;
using ::spillway::engine::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A GGUF v3 file under construction: metadata entries (replaced when set twice) and F32 tensors
// whose values are `seed + 0.5 * i` for a per-tensor seed, so tests can check where a view points.
class GgufFile {
 public:
  GgufFile& Str(const std::string& key, const std::string& v) { return Set(key, 8, S(v)); }
  GgufFile& U32(const std::string& key, uint32_t v) { return Set(key, 4, Raw(&v, 4)); }
  GgufFile& F32(const std::string& key, float v) { return Set(key, 6, Raw(&v, 4)); }
  GgufFile& Bool(const std::string& key, bool v) { return Set(key, 7, std::string(1, v ? 1 : 0)); }
  GgufFile& Strings(const std::string& key, const std::vector<std::string>& v) {
    std::string b = U32Bytes(8) + U64Bytes(v.size());
    for (const std::string& s : v) b += S(s);
    return Set(key, 9, b);
  }
  GgufFile& I32s(const std::string& key, const std::vector<int32_t>& v) {
    std::string b = U32Bytes(5) + U64Bytes(v.size());
    for (int32_t x : v) b += Raw(&x, 4);
    return Set(key, 9, b);
  }
  GgufFile& Erase(const std::string& key) {
    std::erase_if(kv_, [&](const auto& e) { return e.first == key; });
    return *this;
  }
  // An F32 tensor of `shape` (ggml order, innermost first); replaces one of the same name.
  GgufFile& Tensor(const std::string& name, std::vector<int64_t> shape) {
    EraseTensor(name);
    tensors_.emplace_back(name, std::move(shape));
    return *this;
  }
  GgufFile& EraseTensor(const std::string& name) {
    std::erase_if(tensors_, [&](const auto& t) { return t.first == name; });
    return *this;
  }

  // Writes the file into a fresh scratch directory and returns its path.
  std::string Write(const std::string& test_name) const {
    std::string out =
        Raw("GGUF", 4) + U32Bytes(3) + U64Bytes(tensors_.size()) + U64Bytes(kv_.size());
    for (const auto& [key, bytes] : kv_) out += S(key) + bytes;
    std::string data;
    for (size_t t = 0; t < tensors_.size(); ++t) {
      const auto& [name, shape] = tensors_[t];
      out += S(name) + U32Bytes(static_cast<uint32_t>(shape.size()));
      int64_t n = 1;
      for (int64_t d : shape) {
        out += U64Bytes(static_cast<uint64_t>(d));
        n *= d;
      }
      out += U32Bytes(/*f32=*/0) + U64Bytes(data.size());
      for (int64_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(t) + 0.5f * static_cast<float>(i);
        data += Raw(&v, 4);
      }
      while (data.size() % 32 != 0) data.push_back('\0');
    }
    while (out.size() % 32 != 0) out.push_back('\0');
    const std::string path = ScratchDir(test_name) + "/model.gguf";
    WriteFile(path, out + data);
    return path;
  }

 private:
  GgufFile& Set(const std::string& key, uint32_t type, const std::string& value) {
    Erase(key);
    kv_.emplace_back(key, U32Bytes(type) + value);
    return *this;
  }
  static std::string Raw(const void* p, size_t n) {
    return std::string(static_cast<const char*>(p), n);
  }
  static std::string U32Bytes(uint32_t v) { return Raw(&v, 4); }
  static std::string U64Bytes(uint64_t v) { return Raw(&v, 8); }
  static std::string S(const std::string& s) { return U64Bytes(s.size()) + s; }

  std::vector<std::pair<std::string, std::string>> kv_;  // key -> type + value bytes
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors_;
};

// Sizes of the test models: head_dim 4, q_dim 8, kv_dim 4.
constexpr int64_t kLayers = 2, kHidden = 8, kHeads = 2, kKvHeads = 1, kFfn = 12, kVocab = 10;

std::vector<std::string> Tokens(int64_t n) {
  std::vector<std::string> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(absl::StrCat("t", i));
  return t;
}

// A complete, valid file of architecture "llama" (tied embeddings) or "qwen2" (q/k/v biases,
// its own output.weight).
GgufFile ValidFile(const std::string& arch = "llama") {
  const std::string a = arch + ".";
  GgufFile f;
  f.Str("general.architecture", arch)
      .Str("general.name", "tiny " + arch)
      .U32(a + "block_count", kLayers)
      .U32(a + "context_length", 64)
      .U32(a + "embedding_length", kHidden)
      .U32(a + "feed_forward_length", kFfn)
      .U32(a + "attention.head_count", kHeads)
      .U32(a + "attention.head_count_kv", kKvHeads)
      .F32(a + "attention.layer_norm_rms_epsilon", 1e-6f)
      .F32(a + "rope.freq_base", 500000.0f)
      .Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", arch == "qwen2" ? "qwen2" : "smollm")
      .Strings("tokenizer.ggml.tokens", Tokens(kVocab))
      .I32s("tokenizer.ggml.token_type", {3, 3, 1, 1, 1, 1, 1, 1, 1, 1})
      .Strings("tokenizer.ggml.merges", {"t 1"})
      .U32("tokenizer.ggml.bos_token_id", 0)
      .U32("tokenizer.ggml.eos_token_id", 1)
      .Str("tokenizer.chat_template", "{{ messages }}");
  const int64_t q = kHeads * 4, kv = kKvHeads * 4;
  f.Tensor("token_embd.weight", {kHidden, kVocab}).Tensor("output_norm.weight", {kHidden});
  if (arch == "qwen2") f.Tensor("output.weight", {kHidden, kVocab});
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    f.Tensor(p + "attn_norm.weight", {kHidden})
        .Tensor(p + "attn_q.weight", {kHidden, q})
        .Tensor(p + "attn_k.weight", {kHidden, kv})
        .Tensor(p + "attn_v.weight", {kHidden, kv})
        .Tensor(p + "attn_output.weight", {q, kHidden})
        .Tensor(p + "ffn_norm.weight", {kHidden})
        .Tensor(p + "ffn_gate.weight", {kHidden, kFfn})
        .Tensor(p + "ffn_up.weight", {kHidden, kFfn})
        .Tensor(p + "ffn_down.weight", {kFfn, kHidden});
    if (arch == "qwen2") {
      f.Tensor(p + "attn_q.bias", {q})
          .Tensor(p + "attn_k.bias", {kv})
          .Tensor(p + "attn_v.bias", {kv});
    }
  }
  return f;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(OpenGguf, ReadsALlamaFile) {
  const std::string path = ValidFile("llama").Write("valid_llama");
  auto file = OpenGguf(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const ModelConfig& c = (*file)->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, "tiny llama");
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.hidden, kHidden);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.rope_dims, 4);
  EXPECT_EQ(c.ffn_hidden, kFfn);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.context_length, 64);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::kNormal);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kNone);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);

  const TokenizerSpec& t = (*file)->tokenizer();
  EXPECT_EQ(t.model, "gpt2");
  EXPECT_EQ(t.pre, "smollm");
  EXPECT_EQ(t.tokens, Tokens(kVocab));
  ASSERT_EQ(t.token_types.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(t.token_types[0], TokenType::kControl);
  EXPECT_EQ(t.token_types[2], TokenType::kNormal);
  EXPECT_THAT(t.merges, ElementsAre("t 1"));
  EXPECT_EQ(t.bos_id, 0);
  EXPECT_EQ(t.eos_id, 1);
  EXPECT_FALSE(t.add_bos);  // gpt2 tokenizers add no BOS unless the file says so
  EXPECT_EQ((*file)->chat_template(), "{{ messages }}");

  // Tensor views: ggml shapes, F32 type, and data pointing at this tensor's bytes (the
  // writer fills tensor number t with t, t + 0.5, t + 1, ...; output_norm is number 1).
  EXPECT_EQ((*file)->tensors().size(), 2u + 9u * kLayers);
  EXPECT_EQ((*file)->Find("output.weight"), nullptr);
  const WeightTensor* norm = (*file)->Find("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->type, GgmlType::kF32);
  EXPECT_THAT(norm->shape, ElementsAre(kHidden));
  EXPECT_EQ(norm->nbytes, kHidden * 4);
  EXPECT_EQ(norm->num_elements(), kHidden);
  float first[2];
  std::memcpy(first, norm->data, sizeof(first));
  EXPECT_EQ(first[0], 1.0f);
  EXPECT_EQ(first[1], 1.5f);
  const WeightTensor* k = (*file)->Find("blk.1.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_THAT(k->shape, ElementsAre(kHidden, 4));
  EXPECT_EQ(k->nbytes, kHidden * 4 * 4);
}

TEST(OpenGguf, ReadsAQwen2File) {
  auto file = OpenGguf(ValidFile("qwen2").Write("valid_qwen2"));
  ASSERT_TRUE(file.ok()) << file.status();
  const ModelConfig& c = (*file)->config();
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_EQ(c.rope_style, RopeStyle::kNeox);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ((*file)->tokenizer().pre, "qwen2");
  ASSERT_NE((*file)->Find("blk.1.attn_v.bias"), nullptr);
  EXPECT_THAT((*file)->Find("output.weight")->shape, ElementsAre(kHidden, kVocab));
}

TEST(OpenGguf, LlamaWithOutputWeightIsUntied) {
  auto file =
      OpenGguf(ValidFile("llama").Tensor("output.weight", {kHidden, kVocab}).Write("untied_llama"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE((*file)->config().tied_embeddings);
  EXPECT_EQ((*file)->config().rope_style, RopeStyle::kNormal);
}

TEST(OpenGguf, DefaultsForOptionalMetadata) {
  // Without head_count_kv (MHA), context_length, eps, freq_base and the tokenizer's ids.
  GgufFile f = ValidFile("llama");
  f.Erase("llama.attention.head_count_kv")
      .Erase("llama.context_length")
      .Erase("llama.attention.layer_norm_rms_epsilon")
      .Erase("llama.rope.freq_base")
      .Erase("tokenizer.ggml.bos_token_id")
      .Erase("tokenizer.chat_template");
  for (int64_t l = 0; l < kLayers; ++l) {
    f.Tensor(absl::StrCat("blk.", l, ".attn_k.weight"), {kHidden, 8})
        .Tensor(absl::StrCat("blk.", l, ".attn_v.weight"), {kHidden, 8});
  }
  auto file = OpenGguf(f.Write("defaults"));
  ASSERT_TRUE(file.ok()) << file.status();
  const ModelConfig& c = (*file)->config();
  EXPECT_EQ(c.num_kv_heads, kHeads);
  EXPECT_EQ(c.context_length, 4096);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ((*file)->tokenizer().bos_id, -1);
  EXPECT_EQ((*file)->chat_template(), "");
}

TEST(OpenGguf, ReadsLinearRopeScaling) {
  auto file = OpenGguf(ValidFile("llama")
                           .Str("llama.rope.scaling.type", "linear")
                           .F32("llama.rope.scaling.factor", 4.0f)
                           .Write("linear_rope"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->config().rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_FLOAT_EQ((*file)->config().rope_scaling.factor, 4.0f);
}

TEST(OpenGguf, MissingTensorIsNamed) {
  const std::string path =
      ValidFile("llama").EraseTensor("blk.1.ffn_down.weight").Write("missing_tensor");
  auto file = OpenGguf(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("lacks tensor blk.1.ffn_down.weight")));
}

TEST(OpenGguf, MissingQwen2BiasIsNamed) {
  auto file = OpenGguf(ValidFile("qwen2").EraseTensor("blk.0.attn_k.bias").Write("missing_bias"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()), HasSubstr("lacks tensor blk.0.attn_k.bias"));
}

TEST(OpenGguf, MissingEmbeddingIsNamed) {
  auto file = OpenGguf(ValidFile("llama").EraseTensor("token_embd.weight").Write("no_embd"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()), HasSubstr("token_embd.weight"));
}

TEST(OpenGguf, WrongShapeNamesTensorAndBothShapes) {
  // attn_k sized for 2 KV heads while the metadata says 1.
  auto file =
      OpenGguf(ValidFile("llama").Tensor("blk.0.attn_k.weight", {kHidden, 8}).Write("wrong_shape"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()),
              HasSubstr("tensor blk.0.attn_k.weight has shape [8, 8], expected [8, 4]"));
}

TEST(OpenGguf, WrongOutputShapeIsNamed) {
  auto file = OpenGguf(ValidFile("qwen2")
                           .Tensor("output.weight", {kHidden, kVocab + 1})
                           .Write("wrong_output_shape"));
  EXPECT_THAT(Message(file.status()),
              HasSubstr("tensor output.weight has shape [8, 11], expected [8, 10]"));
}

TEST(OpenGguf, UnsupportedArchitectureIsUnimplemented) {
  auto file = OpenGguf(ValidFile("llama").Str("general.architecture", "gpt2").Write("gpt2"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(file.status()), HasSubstr("architecture 'gpt2' is not supported"));
}

TEST(OpenGguf, MissingArchitectureIsUnimplemented) {
  auto file = OpenGguf(ValidFile("llama").Erase("general.architecture").Write("no_arch"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(file.status()), HasSubstr("architecture ''"));
}

TEST(OpenGguf, TokenCountMustMatchEmbeddingRows) {
  GgufFile f = ValidFile("llama");
  f.Strings("tokenizer.ggml.tokens", Tokens(kVocab - 1));
  auto file = OpenGguf(f.Write("token_count"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()),
              HasSubstr("the tokenizer has 9 tokens but the embedding table has 10 rows"));
}

TEST(OpenGguf, MissingTokenizerIsAnError) {
  auto no_tokens = OpenGguf(ValidFile("llama").Erase("tokenizer.ggml.tokens").Write("no_tokens"));
  EXPECT_EQ(no_tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(no_tokens.status()), HasSubstr("no tokenizer (tokenizer.ggml.tokens)"));
  auto no_model = OpenGguf(ValidFile("llama").Erase("tokenizer.ggml.model").Write("no_model"));
  EXPECT_THAT(Message(no_model.status()), HasSubstr("no tokenizer"));
}

TEST(OpenGguf, OddHeadSizeIsUnimplemented) {
  auto file = OpenGguf(ValidFile("llama").U32("llama.attention.key_length", 3).Write("odd_head"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(file.status()), HasSubstr("head size 3"));
}

TEST(OpenGguf, PartialRopeIsUnimplemented) {
  auto file =
      OpenGguf(ValidFile("llama").U32("llama.rope.dimension_count", 2).Write("partial_rope"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(file.status()), HasSubstr("with 2 rotary dims"));
}

TEST(OpenGguf, MissingRequiredMetadataIsNamed) {
  auto file = OpenGguf(ValidFile("llama").Erase("llama.block_count").Write("no_blocks"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()), HasSubstr("lacks llama.block_count"));
}

TEST(OpenGguf, HeadsThatDoNotDivideIsAnError) {
  auto file =
      OpenGguf(ValidFile("llama").U32("llama.attention.head_count_kv", 3).Write("gqa_ratio"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()), HasSubstr("2 heads, 3 KV heads"));
}

TEST(OpenGguf, UnsupportedRopeScalingIsUnimplemented) {
  auto file = OpenGguf(ValidFile("llama").Str("llama.rope.scaling.type", "yarn").Write("yarn"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(file.status()), HasSubstr("rope scaling 'yarn'"));
}

TEST(OpenGguf, MissingFileIsAnError) {
  auto file = OpenGguf(ScratchDir("missing_file") + "/absent.gguf");
  EXPECT_FALSE(file.ok());
}

TEST(OpenModelFile, SendsAFileToTheGgufReader) {
  auto file = OpenModelFile(ValidFile("qwen2").Write("open_model_file"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->config().architecture, "qwen2");
}

}  // namespace
}  // namespace spillway::engine
