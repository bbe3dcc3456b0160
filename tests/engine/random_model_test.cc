// make-model's writer (engine/weights/random_model.h): the file a tiny shape writes opens with
// the shape's config, its tokenizer round-trips text, it loads on the CPU backend and
// generates, and its bytes are a function of the seed alone (not of the thread count).
#include "engine/weights/random_model.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "engine/chat/chat_template.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/fp16.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_file.h"
#include "gtest/gtest.h"
#include "kvcache/kv_cache.h"

namespace spillway::engine {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          absl::StrCat("spw_random_model_", ::getpid(), "_", name))
      .string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ModelShape Tiny() {
  std::optional<ModelShape> s = FindModelShape("tiny");
  EXPECT_TRUE(s.has_value());
  return *s;
}

TEST(RandomModelTest, KnowsTheRealShapes) {
  const std::optional<ModelShape> l = FindModelShape("llama3-8b");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->num_layers, 32);
  EXPECT_EQ(l->hidden, 4096);
  EXPECT_EQ(l->num_heads, 32);
  EXPECT_EQ(l->num_kv_heads, 8);
  EXPECT_EQ(l->ffn_hidden, 14336);
  EXPECT_EQ(l->vocab_size, 128256);
  const std::optional<ModelShape> s = FindModelShape("smollm2-135m");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->hidden / s->num_heads, 64);
  EXPECT_TRUE(s->tied_embeddings);
  EXPECT_FALSE(FindModelShape("gpt-5").has_value());
}

TEST(RandomModelTest, WritesAModelThatLoadsAndGenerates) {
  const std::string path = TempPath("tiny.gguf");
  ASSERT_TRUE(WriteRandomModel({.shape = Tiny(), .dtype = GgmlType::kBF16, .seed = 7}, path).ok());
  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const ModelConfig& c = (*file)->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.ffn_hidden, 128);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_FALSE(c.tied_embeddings);
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Parse((*file)->chat_template());
  ASSERT_TRUE(chat.ok()) << chat.status();
  ChatTemplateInput input;
  input.messages.push_back({.role = "user", .content = "hi"});
  absl::StatusOr<std::string> rendered = chat->Render(input);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(*rendered, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<TokenId> ids = (*tok)->Encode("hello world", false, false);
  EXPECT_LT(ids.size(), std::string("hello world").size());  // the letter-pair merges apply
  EXPECT_EQ((*tok)->Decode(ids, false), "hello world");

  cpu::CpuBackend backend(1);
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Create(**file, backend, 16);
  ASSERT_TRUE(model.ok()) << model.status();
  kvcache::KvCache kv(16);
  Generator gen(**model, kv);
  GenerateRequest req{.prompt = ids, .max_tokens = 8, .ignore_eos = true};
  req.sampling.temperature = 0.0f;  // greedy
  absl::StatusOr<std::vector<GenerateResult>> a = gen.Run({&req, 1});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ((*a)[0].tokens.size(), 8u);
  for (TokenId t : (*a)[0].tokens) EXPECT_TRUE(t >= 0 && t < 1024);
  absl::StatusOr<std::vector<GenerateResult>> b = gen.Run({&req, 1});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*a)[0].tokens, (*b)[0].tokens);  // greedy is deterministic
  std::filesystem::remove(path);
}

TEST(RandomModelTest, ValuesAreUniformInTheFanInRange) {
  const std::string path = TempPath("f32.gguf");
  ASSERT_TRUE(WriteRandomModel({.shape = Tiny(), .dtype = GgmlType::kF32, .seed = 1}, path).ok());
  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const WeightTensor* q = (*file)->Find("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(q->type, GgmlType::kF32);
  const auto* v = reinterpret_cast<const float*>(q->data);
  const float bound = std::sqrt(3.0f / 64.0f);
  double sum = 0, sum_sq = 0;
  const int64_t n = q->num_elements();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_LE(std::abs(v[i]), bound);
    sum += v[i];
    sum_sq += double{v[i]} * v[i];
  }
  EXPECT_NEAR(sum / n, 0.0, 0.05 * bound);
  EXPECT_NEAR(sum_sq / n, 1.0 / 64.0, 0.15 / 64.0);  // variance 1 / fan-in
  const WeightTensor* norm = (*file)->Find("blk.1.ffn_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(reinterpret_cast<const float*>(norm->data)[63], 1.0f);
  std::filesystem::remove(path);
}

TEST(RandomModelTest, BytesDependOnTheSeedOnly) {
  const std::string a = TempPath("a.gguf"), b = TempPath("b.gguf"), c = TempPath("c.gguf");
  ASSERT_TRUE(WriteRandomModel({.shape = Tiny(), .seed = 3, .threads = 1}, a).ok());
  ASSERT_TRUE(WriteRandomModel({.shape = Tiny(), .seed = 3, .threads = 3}, b).ok());
  ASSERT_TRUE(WriteRandomModel({.shape = Tiny(), .seed = 4, .threads = 3}, c).ok());
  EXPECT_EQ(ReadAll(a), ReadAll(b));
  EXPECT_NE(ReadAll(a), ReadAll(c));
  for (const std::string& p : {a, b, c}) std::filesystem::remove(p);
}

TEST(RandomModelTest, RejectsInconsistentShapes) {
  ModelShape s = Tiny();
  s.num_heads = 5;  // does not divide hidden 64
  EXPECT_FALSE(WriteRandomModel({.shape = s}, TempPath("bad.gguf")).ok());
  EXPECT_FALSE(
      WriteRandomModel({.shape = Tiny(), .dtype = GgmlType::kQ4_K}, TempPath("bad.gguf")).ok());
}

}  // namespace
}  // namespace spillway::engine
