// KvLayoutFingerprint: the same model file and KV layout give the same fingerprint; another
// model of the same shape (other weights), another shape, or another block size do not — so a
// persisted SSD tier is reused only by the model that wrote it.
#include "server/cli/kv_tiers.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "engine/weights/model_file.h"
#include "engine/weights/random_model.h"
#include "tests/test_paths.h"

namespace spillway::server {
namespace {

std::unique_ptr<engine::ModelFile> Tiny(uint64_t seed, int64_t layers) {
  const std::string path = spillway::testing::BinaryPath(
      "tests/tmp/kv_fingerprint_" + std::to_string(seed) + "_" + std::to_string(layers) + ".gguf");
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  engine::ModelShape shape = *engine::FindModelShape("tiny");
  shape.num_layers = layers;
  EXPECT_TRUE(engine::WriteRandomModel({.shape = shape, .seed = seed, .threads = 1}, path).ok());
  absl::StatusOr<std::unique_ptr<engine::ModelFile>> file = engine::OpenModelFile(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return *std::move(file);
}

TEST(KvLayoutFingerprint, DependsOnTheWeightsTheShapeAndTheBlockSize) {
  const auto a = Tiny(1, 2), a_again = Tiny(1, 2), other_weights = Tiny(2, 2), deeper = Tiny(1, 3);
  const uint64_t fa = KvLayoutFingerprint(*a, 4096);
  EXPECT_EQ(fa, KvLayoutFingerprint(*a_again, 4096));
  EXPECT_NE(fa, KvLayoutFingerprint(*other_weights, 4096));
  EXPECT_NE(fa, KvLayoutFingerprint(*deeper, 4096));
  EXPECT_NE(fa, KvLayoutFingerprint(*a, 8192));
}

}  // namespace
}  // namespace spillway::server
