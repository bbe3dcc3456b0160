// The training loss and LoRA gradients of the tiny Hugging Face models (build/tiny_models,
// from tests/golden/hf/make_tiny_models.py) against PyTorch + peft in float64
// (tests/golden/lora/make_lora_goldens.py), with the adapters peft itself saved (committed as
// text and reassembled byte for byte by tests/golden_safetensors.h).
#include <gtest/gtest.h>

#include "engine/lora/peft_io.h"
#include "engine/train/train_model.h"
#include "engine/weights/safetensors_reader.h"
#include "tests/golden_json.h"
#include "tests/golden_safetensors.h"
#include "tests/test_paths.h"

namespace spillway::engine::train {
namespace {

class PeftGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PeftGoldenTest, LossAndLoraGradientsMatchPytorch) {
  const std::string name = GetParam();
  const boost::json::object golden =
      testing::ReadJsonFile("tests/golden/lora/" + name + ".json").as_object();
  auto file = OpenModelFile(testing::BinaryPath("tiny_models/" + name));
  ASSERT_TRUE(file.ok()) << file.status() << " (scripts/setup.sh generates these)";
  testing::ScratchGoldens goldens("peft_golden_model_test");
  const absl::StatusOr<std::string> adapter_dir =
      goldens.PeftAdapter("tests/golden/lora/" + name + "-adapter");
  ASSERT_TRUE(adapter_dir.ok()) << adapter_dir.status();
  auto adapter = lora::LoadPeftAdapter(*adapter_dir, (*file)->config());
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.rank, 4);
  EXPECT_EQ(adapter->config.targets.size(), 7u);
  auto model = TrainModel<double>::Create(**file, nullptr);
  ASSERT_TRUE(model.ok()) << model.status();

  std::vector<std::vector<TokenId>> tokens;
  std::vector<std::vector<uint8_t>> masks;
  for (const auto& s : golden.at("sequences").as_array()) tokens.push_back(testing::TokenIds(s));
  for (const auto& m : golden.at("masks").as_array()) {
    std::vector<uint8_t> mask;
    for (const auto& v : m.as_array()) mask.push_back(static_cast<uint8_t>(v.to_number<int>()));
    masks.push_back(mask);
  }
  std::vector<TrainSequence> seqs;
  for (size_t i = 0; i < tokens.size(); ++i) seqs.push_back({tokens[i], masks[i]});
  std::vector<double> params(adapter->params.begin(), adapter->params.end());
  std::vector<double> grad(params.size(), 0.0);
  auto loss = (*model)->ForwardBackward(seqs, adapter->layout, adapter->config.scale(),
                                        params.data(), grad.data());
  ASSERT_TRUE(loss.ok()) << loss.status();
  ASSERT_EQ(loss->num_targets, golden.at("num_targets").to_number<int64_t>());
  const double mean = loss->loss / static_cast<double>(loss->num_targets);
  // Relative 1e-6, not 1e-12: transformers computes RoPE's inverse frequencies and cos/sin in
  // float32 even in a float64 model, which moves the loss by about 1e-7 of itself.
  const double want_loss = golden.at("mean_loss").to_number<double>();
  EXPECT_NEAR(mean, want_loss, 1e-6 * want_loss);

  const absl::StatusOr<std::string> grads_path =
      goldens.Safetensors("tests/golden/lora/" + name + "-grads.safetensors.json");
  ASSERT_TRUE(grads_path.ok()) << grads_path.status();
  auto grads = SafetensorsFile::Open(*grads_path);
  ASSERT_TRUE(grads.ok()) << grads.status();
  int64_t compared = 0;
  for (const lora::LoraMatrix& x : adapter->layout.Matrices()) {
    const std::string key = lora::PeftTensorName(x.layer, x.module, x.is_b);
    const SafetensorsTensor* t = grads->Find(key);
    ASSERT_NE(t, nullptr) << key;
    const float* want = reinterpret_cast<const float*>(t->data);
    const int64_t n = x.rows * x.cols;
    ASSERT_EQ(t->nbytes, n * 4);
    float max_abs = 0;
    for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::abs(want[i]));
    const double* got = grad.data() + x.offset;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i] / loss->num_targets, want[i], 1e-5 * max_abs + 1e-9)
          << key << " [" << i << "]";
    }
    compared += n;
  }
  EXPECT_EQ(compared, adapter->layout.num_params());
}

INSTANTIATE_TEST_SUITE_P(Models, PeftGoldenTest, ::testing::Values("llama-tiny", "qwen2-tiny"));

}  // namespace
}  // namespace spillway::engine::train
