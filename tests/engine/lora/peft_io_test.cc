// PEFT adapter directories: reading what peft wrote (tests/golden/lora/*-adapter, reassembled
// from text by tests/golden_safetensors.h), save/load round trips, the q/k row permutation for
// GGUF Llama models, and the errors.
#include "engine/lora/peft_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "engine/lora/atomic_file.h"
#include "engine/weights/safetensors_reader.h"
#include "tests/golden_safetensors.h"

namespace spillway::engine::lora {
namespace {

// llama-tiny of tests/golden/hf/make_tiny_models.py.
ModelConfig TinyConfig(RopeStyle style) {
  ModelConfig c;
  c.architecture = "llama";
  c.num_layers = 2;
  c.hidden = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_hidden = 128;
  c.vocab_size = 288;
  c.rope_style = style;
  return c;
}

std::string TempDir(const std::string& name) {
  const std::string dir =
      ::testing::TempDir() + "/peft_io_test_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(PeftIoTest, ReadsAnAdapterPeftSaved) {
  testing::ScratchGoldens goldens("peft_io_test_reads");
  const absl::StatusOr<std::string> dir =
      goldens.PeftAdapter("tests/golden/lora/llama-tiny-adapter");
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto a = LoadPeftAdapter(*dir, TinyConfig(RopeStyle::kNeox));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->config.rank, 4);
  EXPECT_FLOAT_EQ(a->config.alpha, 8.0f);
  EXPECT_FLOAT_EQ(a->config.scale(), 2.0f);
  EXPECT_EQ(a->config.targets.size(), 7u);
  auto file = SafetensorsFile::Open(*dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  const SafetensorsTensor* b =
      file->Find("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight");
  ASSERT_NE(b, nullptr);
  const float* want = reinterpret_cast<const float*>(b->data);
  const float* got = a->b(1, LoraModule::kK);
  for (int64_t i = 0; i < 32 * 4; ++i) ASSERT_EQ(got[i], want[i]) << i;
}

TEST(PeftIoTest, HfRowOfGgufRowIsLlamaCppsPermutation) {
  // convert_hf_to_gguf.py: w.reshape(heads, 2, hd/2, in).swapaxes(1, 2): model row
  // (head, i, j) holds HF row (head, j, i).
  const std::vector<int64_t> want = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
  for (int64_t r = 0; r < 16; ++r) EXPECT_EQ(HfRowOfGgufRow(r, 8), want[r]) << r;
}

TEST(PeftIoTest, SaveLoadRoundTripsAndPermutesQkForGgufLlama) {
  const ModelConfig gguf = TinyConfig(RopeStyle::kNormal);
  LoraConfig config;
  config.rank = 2;
  config.alpha = 5.0f;
  config.targets = {LoraModule::kQ, LoraModule::kK, LoraModule::kDown};
  config.layers = {1};
  auto a = NewLoraAdapter(gguf, config, 3);
  ASSERT_TRUE(a.ok());
  for (size_t i = 0; i < a->params.size(); ++i) a->params[i] = static_cast<float>(i) * 0.001f;
  const std::string dir = TempDir("roundtrip");
  ASSERT_TRUE(SavePeftAdapter(*a, gguf, dir).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/adapter_model.safetensors.tmp"));

  auto back = LoadPeftAdapter(dir, gguf);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->params, a->params);
  EXPECT_EQ(back->config.layers, std::vector<int32_t>{1});
  EXPECT_FLOAT_EQ(back->config.alpha, 5.0f);

  // Read as a Hugging Face (NeoX) model, q's B rows come back in HF order; A and down's B
  // are not permuted.
  auto hf = LoadPeftAdapter(dir, TinyConfig(RopeStyle::kNeox));
  ASSERT_TRUE(hf.ok());
  for (int64_t row = 0; row < 64; ++row) {
    for (int64_t k = 0; k < 2; ++k) {
      ASSERT_EQ(hf->b(1, LoraModule::kQ)[HfRowOfGgufRow(row, 16) * 2 + k],
                a->b(1, LoraModule::kQ)[row * 2 + k]);
    }
  }
  const LoraSlot& down = a->layout.slot(1, LoraModule::kDown);
  for (int64_t i = 0; i < down.out * 2; ++i) {
    ASSERT_EQ(hf->b(1, LoraModule::kDown)[i], a->b(1, LoraModule::kDown)[i]);
  }
  for (int64_t i = 0; i < 2 * 64; ++i)
    ASSERT_EQ(hf->a(1, LoraModule::kQ)[i], a->a(1, LoraModule::kQ)[i]);
  std::filesystem::remove_all(dir);
}

void WriteConfig(const std::string& dir, const std::string& json) {
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteFileAtomically(dir + "/adapter_config.json", json).ok());
}

TEST(PeftIoTest, Errors) {
  const ModelConfig c = TinyConfig(RopeStyle::kNeox);
  EXPECT_EQ(LoadPeftAdapter("/nonexistent/adapter", c).status().code(),
            absl::StatusCode::kNotFound);
  const std::string dir = TempDir("errors");
  testing::ScratchGoldens goldens("peft_io_test_errors");
  const absl::StatusOr<std::string> golden =
      goldens.Safetensors("tests/golden/lora/llama-tiny-adapter/adapter_model.safetensors.json");
  ASSERT_TRUE(golden.ok()) << golden.status();
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(*golden, dir + "/adapter_model.safetensors");
  const std::string base = R"("peft_type": "LORA", "lora_alpha": 8, "bias": "none", )";
  struct Case {
    std::string config;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"{" + base + R"("r": 8, "target_modules": ["q_proj"]})", absl::StatusCode::kInvalidArgument},
      {"{" + base + R"("r": 4, "target_modules": ["q_proj"]})", absl::StatusCode::kInvalidArgument},
      {"{" + base + R"("r": 4, "target_modules": ["lm_head"]})",
       absl::StatusCode::kInvalidArgument},
      {"{" + base + R"("r": 4, "use_rslora": true, "target_modules": ["q_proj"]})",
       absl::StatusCode::kUnimplemented},
      {"{" + base + R"("r": 4, "target_modules": ".*proj"})", absl::StatusCode::kUnimplemented},
      {"{" + base + R"("r": 0, "target_modules": ["q_proj"]})", absl::StatusCode::kInvalidArgument},
      {"not json", absl::StatusCode::kInvalidArgument},
  };
  for (const Case& k : cases) {
    WriteConfig(dir, k.config);
    EXPECT_EQ(LoadPeftAdapter(dir, c).status().code(), k.code) << k.config;
  }
  // All seven targets: the file matches.
  WriteConfig(dir, "{" + base + R"("r": 4, "target_modules": ["q_proj", "k_proj", "v_proj",
      "o_proj", "gate_proj", "up_proj", "down_proj"]})");
  EXPECT_TRUE(LoadPeftAdapter(dir, c).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace spillway::engine::lora
