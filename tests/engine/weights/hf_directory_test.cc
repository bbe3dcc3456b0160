#include "engine/weights/hf_directory.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/weights/test_files.h"

namespace spillway::engine {
namespace {

using ::spillway::engine::testing::Bf16Bytes;
using ::spillway::engine::testing::F32Tensor;
using ::spillway::engine::testing::Iota;
using ::spillway::engine::testing::NumElements;
using ::spillway::engine::testing::SafetensorsImage;
using ::spillway::engine::testing::ScratchDir;
using ::spillway::engine::testing::TestTensor;
using ::spillway::engine::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Sizes of the tiny test models: head_dim 4, q_dim 8, kv_dim 4.
constexpr int kLayers = 2, kHidden = 8, kHeads = 2, kKvHeads = 1, kFfn = 12, kVocab = 10;

std::string LlamaConfig() {
  return R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
    "num_key_value_heads": 1, "intermediate_size": 12, "vocab_size": 10,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "tie_word_embeddings": false, "torch_dtype": "float32"
  })";
}

std::string Qwen2Config() {
  return R"({
    "model_type": "qwen2", "hidden_act": "silu", "num_hidden_layers": 2, "hidden_size": 8,
    "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 12,
    "vocab_size": 10, "max_position_embeddings": 128, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "rope_scaling": null, "sliding_window": 32,
    "use_sliding_window": false, "tie_word_embeddings": false
  })";
}

constexpr const char* kTokenizerJson = R"({
  "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": true},
                   {"id": 1, "content": "<|im_start|>", "special": true},
                   {"id": 2, "content": "<|im_end|>", "special": true}],
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2,
                                     "a": 3, "b": 4, "ab": 5}, "merges": ["a b"]}
})";

constexpr const char* kTokenizerConfig = R"({
  "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
  "chat_template": "{{ messages[0].content }}"
})";

// The tensors of a tiny model under Hugging Face names, PyTorch shapes, values Iota * scale
// where scale differs per tensor so that the tests can tell them apart.
std::vector<TestTensor> HfTensors(bool lm_head, bool qkv_bias) {
  const int64_t q_dim = kHeads * (kHidden / kHeads), kv_dim = kKvHeads * (kHidden / kHeads);
  std::vector<TestTensor> t = {F32Tensor("model.embed_tokens.weight", {kVocab, kHidden}),
                               F32Tensor("model.norm.weight", {kHidden}, 2.0f)};
  if (lm_head) t.push_back(F32Tensor("lm_head.weight", {kVocab, kHidden}, 3.0f));
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const float s = 10.0f * (i + 1);
    t.push_back(F32Tensor(p + "input_layernorm.weight", {kHidden}, s + 1));
    t.push_back(F32Tensor(p + "self_attn.q_proj.weight", {q_dim, kHidden}, s + 2));
    t.push_back(F32Tensor(p + "self_attn.k_proj.weight", {kv_dim, kHidden}, s + 3));
    t.push_back(F32Tensor(p + "self_attn.v_proj.weight", {kv_dim, kHidden}, s + 4));
    t.push_back(F32Tensor(p + "self_attn.o_proj.weight", {kHidden, q_dim}, s + 5));
    if (qkv_bias) {
      t.push_back(F32Tensor(p + "self_attn.q_proj.bias", {q_dim}, s + 6));
      t.push_back(F32Tensor(p + "self_attn.k_proj.bias", {kv_dim}, s + 7));
      t.push_back(F32Tensor(p + "self_attn.v_proj.bias", {kv_dim}, s + 8));
    }
    t.push_back(F32Tensor(p + "post_attention_layernorm.weight", {kHidden}, s + 9));
    t.push_back(F32Tensor(p + "mlp.gate_proj.weight", {kFfn, kHidden}, s + 10));
    t.push_back(F32Tensor(p + "mlp.up_proj.weight", {kFfn, kHidden}, s + 11));
    t.push_back(F32Tensor(p + "mlp.down_proj.weight", {kHidden, kFfn}, s + 12));
  }
  return t;
}

void RemoveTensor(std::vector<TestTensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const TestTensor& t) { return t.name == name; });
}

// Writes a model directory; returns its path.
std::string WriteModelDir(const std::string& name, const std::string& config,
                          const std::vector<TestTensor>& tensors) {
  const std::string dir = ScratchDir(name);
  WriteFile(dir + "/config.json", config);
  WriteFile(dir + "/model.safetensors", SafetensorsImage(tensors));
  WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  WriteFile(dir + "/tokenizer_config.json", kTokenizerConfig);
  return dir;
}

float FloatAt(const WeightTensor& t, int64_t i) {
  float v;
  std::memcpy(&v, t.data + 4 * i, 4);
  return v;
}

const WeightTensor& Get(const ModelFile& m, const std::string& name) {
  static const WeightTensor kMissing;
  auto it = m.tensors().find(name);
  EXPECT_NE(it, m.tensors().end()) << name;
  return it == m.tensors().end() ? kMissing : it->second;
}

TEST(OpenHfDirectory, LlamaConfigTensorsAndTokenizer) {
  const std::string dir = WriteModelDir("llama", LlamaConfig(), HfTensors(true, false));
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, std::filesystem::path(dir).filename().string());
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden, 8);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.ffn_hidden, 12);
  EXPECT_EQ(c.vocab_size, 10);
  EXPECT_EQ(c.context_length, 256);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_style, RopeStyle::kNeox);
  EXPECT_EQ(c.rope_dims, 4);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_context, 64);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);

  EXPECT_EQ((*m)->tensors().size(), 3u + 9u * kLayers);
  const WeightTensor& embd = Get(**m, "token_embd.weight");
  EXPECT_EQ(embd.type, GgmlType::kF32);
  EXPECT_THAT(embd.shape, ElementsAre(kHidden, kVocab));  // ggml order
  EXPECT_EQ(embd.nbytes, 4 * kHidden * kVocab);
  EXPECT_EQ(FloatAt(embd, 0), 1.0f);
  EXPECT_EQ(FloatAt(embd, kHidden * kVocab - 1), 80.0f);
  EXPECT_EQ(FloatAt(Get(**m, "output.weight"), 0), 3.0f);
  EXPECT_EQ(FloatAt(Get(**m, "output_norm.weight"), 0), 2.0f);
  EXPECT_THAT(Get(**m, "blk.1.attn_q.weight").shape, ElementsAre(8, 8));
  EXPECT_THAT(Get(**m, "blk.1.attn_k.weight").shape, ElementsAre(8, 4));
  EXPECT_EQ(FloatAt(Get(**m, "blk.1.attn_k.weight"), 0), 23.0f);
  EXPECT_THAT(Get(**m, "blk.0.attn_output.weight").shape, ElementsAre(8, 8));
  EXPECT_EQ(FloatAt(Get(**m, "blk.0.attn_output.weight"), 1), 30.0f);
  EXPECT_EQ(FloatAt(Get(**m, "blk.0.attn_norm.weight"), 0), 11.0f);
  EXPECT_EQ(FloatAt(Get(**m, "blk.0.ffn_norm.weight"), 0), 19.0f);
  EXPECT_THAT(Get(**m, "blk.0.ffn_gate.weight").shape, ElementsAre(8, 12));
  EXPECT_EQ(FloatAt(Get(**m, "blk.0.ffn_up.weight"), 0), 21.0f);
  EXPECT_THAT(Get(**m, "blk.1.ffn_down.weight").shape, ElementsAre(12, 8));
  EXPECT_EQ(FloatAt(Get(**m, "blk.1.ffn_down.weight"), 0), 32.0f);

  const TokenizerSpec& tok = (*m)->tokenizer();
  EXPECT_EQ(tok.model, "gpt2");
  EXPECT_EQ(tok.tokens.size(), 6u);
  EXPECT_EQ(tok.bos_id, 1);
  EXPECT_EQ(tok.eos_id, 2);
  EXPECT_EQ((*m)->chat_template(), "{{ messages[0].content }}");
}

TEST(OpenHfDirectory, Qwen2HasBiasesAndItsOwnLmHead) {
  const std::string dir = WriteModelDir("qwen2", Qwen2Config(), HfTensors(true, true));
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config();
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.context_length, 128);  // use_sliding_window is false
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kNone);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_EQ((*m)->tensors().size(), 3u + 12u * kLayers);
  EXPECT_THAT(Get(**m, "blk.0.attn_q.bias").shape, ElementsAre(8));
  EXPECT_THAT(Get(**m, "blk.1.attn_v.bias").shape, ElementsAre(4));
  EXPECT_EQ(FloatAt(Get(**m, "blk.1.attn_v.bias"), 0), 28.0f);
  EXPECT_NE((*m)->tensors().find("output.weight"), (*m)->tensors().end());
}

TEST(OpenHfDirectory, MissingLmHeadMeansTiedEmbeddings) {
  const std::string dir = WriteModelDir("tied", LlamaConfig(), HfTensors(false, false));
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->config().tied_embeddings);
  EXPECT_EQ((*m)->tensors().count("output.weight"), 0u);
}

TEST(OpenHfDirectory, TieWordEmbeddingsIgnoresAStoredLmHead) {
  const std::string config = absl::StrReplaceAll(
      LlamaConfig(), {{R"("tie_word_embeddings": false)", R"("tie_word_embeddings": true)"}});
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("tie", config, HfTensors(true, false)));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->config().tied_embeddings);
  EXPECT_EQ((*m)->tensors().count("output.weight"), 0u);
}

TEST(OpenHfDirectory, ShardedCheckpointWithIndex) {
  std::vector<TestTensor> all = HfTensors(true, false);
  std::vector<TestTensor> first(all.begin(), all.begin() + 5), second(all.begin() + 5, all.end());
  const std::string dir = ScratchDir("sharded");
  WriteFile(dir + "/config.json", LlamaConfig());
  WriteFile(dir + "/model-00001-of-00002.safetensors", SafetensorsImage(first));
  WriteFile(dir + "/model-00002-of-00002.safetensors", SafetensorsImage(second));
  std::string index = R"({"metadata": {"total_size": 0}, "weight_map": {)";
  for (size_t i = 0; i < all.size(); ++i) {
    absl::StrAppend(&index, i == 0 ? "" : ",", "\"", all[i].name, "\": \"model-0000", i < 5 ? 1 : 2,
                    "-of-00002.safetensors\"");
  }
  index += "}}";
  WriteFile(dir + "/model.safetensors.index.json", index);
  WriteFile(dir + "/tokenizer.json", kTokenizerJson);
  WriteFile(dir + "/tokenizer_config.json", kTokenizerConfig);

  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->tensors().size(), 3u + 9u * kLayers);
  EXPECT_EQ(FloatAt(Get(**m, "token_embd.weight"), 0), 1.0f);
  EXPECT_EQ(FloatAt(Get(**m, "blk.1.ffn_down.weight"), 0), 32.0f);

  // An index that points a tensor at the wrong shard.
  absl::StrReplaceAll(
      {{R"("model.norm.weight": "model-00001)", R"("model.norm.weight": "model-00002)"}}, &index);
  WriteFile(dir + "/model.safetensors.index.json", index);
  m = OpenHfDirectory(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              HasSubstr("puts tensor \"model.norm.weight\" in model-00002-of-00002.safetensors"));

  // An index that points outside the directory.
  WriteFile(dir + "/model.safetensors.index.json",
            R"({"weight_map": {"model.norm.weight": "../evil.safetensors"}})");
  m = OpenHfDirectory(dir);
  EXPECT_THAT(m.status().message(), HasSubstr("not the name of a file in the directory"));
}

TEST(OpenHfDirectory, Bf16Weights) {
  std::vector<TestTensor> tensors = HfTensors(true, false);
  for (TestTensor& t : tensors) {
    t.dtype = "BF16";
    t.bytes = Bf16Bytes(Iota(NumElements(t.shape)));
  }
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("bf16", LlamaConfig(), tensors));
  ASSERT_TRUE(m.ok()) << m.status();
  const WeightTensor& q = Get(**m, "blk.0.attn_q.weight");
  EXPECT_EQ(q.type, GgmlType::kBF16);
  EXPECT_EQ(q.nbytes, 2 * 64);
  EXPECT_EQ(q.data[0], 0x80);  // 1.0 in bf16 is 0x3F80, little-endian
  EXPECT_EQ(q.data[1], 0x3F);
}

TEST(OpenHfDirectory, MissingTensorIsNamed) {
  std::vector<TestTensor> tensors = HfTensors(true, false);
  RemoveTensor(tensors, "model.layers.1.mlp.up_proj.weight");
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("missing", LlamaConfig(), tensors));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("tensor blk.1.ffn_up.weight is missing"));

  // Qwen2 needs its biases.
  tensors = HfTensors(true, false);
  m = OpenHfDirectory(WriteModelDir("missing_bias", Qwen2Config(), tensors));
  EXPECT_THAT(m.status().message(), HasSubstr("tensor blk.0.attn_q.bias is missing"));
}

TEST(OpenHfDirectory, WrongShapeIsNamed) {
  std::vector<TestTensor> tensors = HfTensors(true, false);
  RemoveTensor(tensors, "model.layers.0.self_attn.k_proj.weight");
  tensors.push_back(F32Tensor("model.layers.0.self_attn.k_proj.weight", {8, 8}));
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("shape", LlamaConfig(), tensors));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              HasSubstr("tensor blk.0.attn_k.weight has shape {8, 8} (ggml order) but "
                        "config.json implies {8, 4}"));
}

TEST(OpenHfDirectory, UnexpectedTensorsAreRejected) {
  std::vector<TestTensor> tensors = HfTensors(true, false);
  tensors.push_back(F32Tensor("model.layers.0.self_attn.o_proj.bias", {8}));
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("unknown", LlamaConfig(), tensors));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(m.status().message(), HasSubstr("\"model.layers.0.self_attn.o_proj.bias\""));

  tensors = HfTensors(true, false);
  tensors.push_back(F32Tensor("model.layers.2.input_layernorm.weight", {8}));
  m = OpenHfDirectory(WriteModelDir("extra_layer", LlamaConfig(), tensors));
  EXPECT_THAT(m.status().message(), HasSubstr("blk.2.attn_norm.weight belongs to layer 2 but "
                                              "config.json has num_hidden_layers = 2"));

  // Biases on a Llama without attention_bias are not silently dropped.
  m = OpenHfDirectory(WriteModelDir("llama_bias", LlamaConfig(), HfTensors(true, true)));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(m.status().message(), HasSubstr("attn_k.bias is not used"));

  // Rotary inverse frequencies of old checkpoints are skipped.
  tensors = HfTensors(true, false);
  tensors.push_back(F32Tensor("model.layers.0.self_attn.rotary_emb.inv_freq", {2}));
  m = OpenHfDirectory(WriteModelDir("inv_freq", LlamaConfig(), tensors));
  EXPECT_TRUE(m.ok()) << m.status();
}

TEST(OpenHfDirectory, MissingFiles) {
  const std::string dir = WriteModelDir("files", LlamaConfig(), HfTensors(true, false));
  EXPECT_EQ(OpenHfDirectory(dir + "/config.json").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(OpenHfDirectory(dir + "/nope").status().message(), HasSubstr("is not a directory"));

  std::filesystem::remove(dir + "/tokenizer.json");
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("has no tokenizer.json"));

  std::filesystem::remove(dir + "/model.safetensors");
  m = OpenHfDirectory(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("neither model.safetensors"));

  std::filesystem::remove(dir + "/config.json");
  m = OpenHfDirectory(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("no config.json"));
}

TEST(OpenHfDirectory, CorruptSafetensorsIsReportedWithItsPath) {
  const std::string dir = WriteModelDir("corrupt", LlamaConfig(), HfTensors(true, false));
  WriteFile(dir + "/model.safetensors", "\x08\x00\x00\x00\x00\x00\x00\x00{broken}");
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr(dir + "/model.safetensors"));
}

TEST(OpenHfDirectory, TokenizerLargerThanVocabIsRejected) {
  const std::string config =
      absl::StrReplaceAll(LlamaConfig(), {{R"("vocab_size": 10)", R"("vocab_size": 5)"}});
  std::vector<TestTensor> tensors = HfTensors(true, false);
  RemoveTensor(tensors, "model.embed_tokens.weight");
  RemoveTensor(tensors, "lm_head.weight");
  tensors.push_back(F32Tensor("model.embed_tokens.weight", {5, kHidden}));
  absl::StatusOr<std::unique_ptr<ModelFile>> m =
      OpenHfDirectory(WriteModelDir("small_vocab", config, tensors));
  EXPECT_THAT(m.status().message(),
              HasSubstr("tokenizer.json has 6 tokens but config.json vocab_size is 5"));
}

TEST(OpenHfDirectory, GenerationConfigAndChatTemplateFile) {
  const std::string dir = WriteModelDir("genconfig", LlamaConfig(), HfTensors(true, false));
  WriteFile(dir + "/generation_config.json", R"({"eos_token_id": [2, 0, 5]})");
  WriteFile(dir + "/tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  WriteFile(dir + "/chat_template.jinja", "JINJA");
  absl::StatusOr<std::unique_ptr<ModelFile>> m = OpenHfDirectory(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->tokenizer().eos_id, 2);
  EXPECT_THAT((*m)->tokenizer().eot_ids, ElementsAre(0, 5));
  EXPECT_EQ((*m)->chat_template(), "JINJA");

  WriteFile(dir + "/generation_config.json", R"({"eos_token_id": 77})");
  EXPECT_THAT(OpenHfDirectory(dir).status().message(), HasSubstr("eos_token_id 77 is not a token"));
}

TEST(ParseHfConfig, DefaultsAndDerivedFields) {
  absl::StatusOr<ModelConfig> c = ParseHfConfig(R"({
    "model_type": "mistral", "num_hidden_layers": 1, "hidden_size": 64,
    "num_attention_heads": 4, "intermediate_size": 96, "vocab_size": 100,
    "max_position_embeddings": 32768, "sliding_window": 4096})",
                                                "m");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->name, "m");
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope_dims, 16);
  EXPECT_FLOAT_EQ(c->rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_EQ(c->context_length, 4096);  // capped at Mistral's sliding window
  EXPECT_FALSE(c->tied_embeddings);

  c = ParseHfConfig(R"({
    "model_type": "llama", "num_hidden_layers": 1, "hidden_size": 64, "head_dim": 32,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
    "vocab_size": 100, "max_position_embeddings": 64, "tie_word_embeddings": true,
    "rope_scaling": {"type": "linear", "factor": 2}, "rope_theta": 10000})",
                    "m");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_EQ(c->rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 2.0f);
}

TEST(ParseHfConfig, ErrorsNameTheField) {
  const std::string good = R"({"model_type": "llama", "num_hidden_layers": 1,
    "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 96,
    "vocab_size": 100, "max_position_embeddings": 64})";
  auto error_with = [&](const std::string& from, const std::string& to) {
    return ParseHfConfig(absl::StrReplaceAll(good, {{from, to}}), "m").status();
  };
  ASSERT_TRUE(ParseHfConfig(good, "m").ok());
  EXPECT_THAT(error_with(R"("vocab_size": 100,)", "").message(),
              HasSubstr("required field \"vocab_size\" is missing"));
  EXPECT_THAT(error_with(R"("hidden_size": 64)", R"("hidden_size": "64")").message(),
              HasSubstr("field \"hidden_size\" is \"64\", not an integer"));
  EXPECT_THAT(error_with(R"("num_hidden_layers": 1)", R"("num_hidden_layers": 0)").message(),
              HasSubstr("\"num_hidden_layers\" is 0; it must be at least 1"));
  EXPECT_THAT(
      error_with(R"("model_type": "llama",)", R"("model_type": "llama", "num_key_value_heads": 3,)")
          .message(),
      HasSubstr("must divide num_attention_heads (4)"));
  EXPECT_THAT(error_with(R"("model_type": "llama")", R"("model_type": "gpt_neox")").message(),
              HasSubstr("model_type \"gpt_neox\" is not supported"));
  EXPECT_EQ(error_with(R"("model_type": "llama")", R"("model_type": "gpt_neox")").code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_THAT(
      error_with(R"("model_type": "llama",)", R"("model_type": "llama", "hidden_act": "gelu",)")
          .message(),
      HasSubstr("hidden_act \"gelu\""));
  EXPECT_THAT(error_with(R"("model_type": "llama",)",
                         R"("model_type": "llama", "rope_scaling": {"rope_type": "yarn"},)")
                  .message(),
              HasSubstr("rope_scaling type \"yarn\" is not supported"));
  EXPECT_THAT(
      error_with(R"("model_type": "llama",)", R"("model_type": "llama", "rms_norm_eps": -1,)")
          .message(),
      HasSubstr("\"rms_norm_eps\" is -1"));
  EXPECT_THAT(ParseHfConfig("{\"model_type\": ", "m").status().message(),
              HasSubstr("config.json: invalid JSON"));
  EXPECT_THAT(ParseHfConfig("[]", "m").status().message(), HasSubstr("not a JSON object"));
}

TEST(HfTensorNameToGguf, MapsEveryKnownName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
      {"model.layers.11.post_attention_layernorm.weight", "blk.11.ffn_norm.weight"},
      {"model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight"},
      {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"},
      {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
      {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
      {"model.layers.3.self_attn.q_proj.bias", "blk.3.attn_q.bias"},
      {"model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"},
      {"model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"},
      {"model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"},
      {"model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"},
      {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
  };
  for (const auto& [hf, gguf] : cases) EXPECT_EQ(HfTensorNameToGguf(hf), gguf) << hf;
  EXPECT_EQ(HfTensorNameToGguf("model.layers.x.mlp.up_proj.weight"), std::nullopt);
  EXPECT_EQ(HfTensorNameToGguf("model.layers.-1.mlp.up_proj.weight"), std::nullopt);
  EXPECT_EQ(HfTensorNameToGguf("model.layers.0.self_attn.o_proj.bias"), std::nullopt);
  EXPECT_EQ(HfTensorNameToGguf("vision_tower.weight"), std::nullopt);
}

}  // namespace
}  // namespace spillway::engine
