// The tokenizer of the default model file (SmolLM2-135M-Instruct GGUF): its tokenizer metadata
// must be what tests/golden/tokenizer/smollm2_vocab.json holds, and the Tokenizer built from it
// must match Hugging Face `tokenizers` on the golden corpus.
// NOTE(tok): engine/tokenizer/ cannot depend on engine/weights/ (weights depends on tokenizer),
// so this test reads the GGUF's key/value section itself, with the small reader below.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer/golden_json.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

// One GGUF metadata value: a scalar (as int64/double/bool), a string, or an array of those.
struct GgufValue {
  std::variant<int64_t, double, bool, std::string> scalar;
  std::vector<GgufValue> array;
  bool is_array = false;
};

class GgufMetadataReader {
 public:
  explicit GgufMetadataReader(const std::string& path) : in_(path, std::ios::binary) {}

  // Reads every key/value pair; false on a malformed file.
  bool Read(std::map<std::string, GgufValue>* kv) {
    char magic[4];
    if (!in_.read(magic, 4) || std::memcmp(magic, "GGUF", 4) != 0) return false;
    const uint32_t version = Pod<uint32_t>();
    if (version < 2) return false;
    Pod<uint64_t>();  // tensor count
    const uint64_t num_kv = Pod<uint64_t>();
    for (uint64_t i = 0; i < num_kv && in_; ++i) {
      std::string key = String();
      (*kv)[key] = Value(Pod<uint32_t>());
    }
    return static_cast<bool>(in_);
  }

 private:
  template <typename T>
  T Pod() {
    T v{};
    in_.read(reinterpret_cast<char*>(&v), sizeof(v));
    return v;
  }
  std::string String() {
    const uint64_t n = Pod<uint64_t>();
    std::string s(n, '\0');
    in_.read(s.data(), static_cast<std::streamsize>(n));
    return s;
  }
  GgufValue Value(uint32_t type) {
    GgufValue v;
    switch (type) {
      case 0:
        v.scalar = int64_t{Pod<uint8_t>()};
        break;
      case 1:
        v.scalar = int64_t{Pod<int8_t>()};
        break;
      case 2:
        v.scalar = int64_t{Pod<uint16_t>()};
        break;
      case 3:
        v.scalar = int64_t{Pod<int16_t>()};
        break;
      case 4:
        v.scalar = int64_t{Pod<uint32_t>()};
        break;
      case 5:
        v.scalar = int64_t{Pod<int32_t>()};
        break;
      case 6:
        v.scalar = double{Pod<float>()};
        break;
      case 7:
        v.scalar = Pod<uint8_t>() != 0;
        break;
      case 8:
        v.scalar = String();
        break;
      case 9: {
        const uint32_t elem_type = Pod<uint32_t>();
        const uint64_t n = Pod<uint64_t>();
        v.is_array = true;
        v.array.reserve(n);
        for (uint64_t i = 0; i < n && in_; ++i) v.array.push_back(Value(elem_type));
        break;
      }
      case 10:
        v.scalar = static_cast<int64_t>(Pod<uint64_t>());
        break;
      case 11:
        v.scalar = Pod<int64_t>();
        break;
      case 12:
        v.scalar = Pod<double>();
        break;
      default:
        in_.setstate(std::ios::failbit);
        break;
    }
    return v;
  }

  std::ifstream in_;
};

TokenizerSpec SpecFromGguf(const std::map<std::string, GgufValue>& kv) {
  auto str = [&](const std::string& k) { return std::get<std::string>(kv.at(k).scalar); };
  auto id = [&](const std::string& k) {
    return kv.count(k) ? static_cast<TokenId>(std::get<int64_t>(kv.at(k).scalar)) : -1;
  };
  auto flag = [&](const std::string& k) {
    return kv.count(k) ? std::get<bool>(kv.at(k).scalar) : false;
  };
  TokenizerSpec spec;
  spec.model = str("tokenizer.ggml.model");
  spec.pre = str("tokenizer.ggml.pre");
  for (const auto& t : kv.at("tokenizer.ggml.tokens").array) {
    spec.tokens.push_back(std::get<std::string>(t.scalar));
  }
  for (const auto& t : kv.at("tokenizer.ggml.token_type").array) {
    spec.token_types.push_back(static_cast<TokenType>(std::get<int64_t>(t.scalar)));
  }
  for (const auto& m : kv.at("tokenizer.ggml.merges").array) {
    spec.merges.push_back(std::get<std::string>(m.scalar));
  }
  spec.bos_id = id("tokenizer.ggml.bos_token_id");
  spec.eos_id = id("tokenizer.ggml.eos_token_id");
  spec.unk_id = id("tokenizer.ggml.unknown_token_id");
  spec.pad_id = id("tokenizer.ggml.padding_token_id");
  spec.add_bos = flag("tokenizer.ggml.add_bos_token");
  spec.add_eos = flag("tokenizer.ggml.add_eos_token");
  return spec;
}

TEST(TokenizerModelTest, DefaultModelTokenizerMatchesGoldens) {
  const std::string path = spillway::testing::DefaultModelPath();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no model at " << path;
  std::map<std::string, GgufValue> kv;
  ASSERT_TRUE(GgufMetadataReader(path).Read(&kv)) << path;
  const TokenizerSpec spec = SpecFromGguf(kv);
  const TokenizerSpec golden = testing::Smollm2Spec();
  EXPECT_EQ(spec.model, golden.model);
  EXPECT_EQ(spec.pre, golden.pre);
  EXPECT_EQ(spec.tokens, golden.tokens);
  EXPECT_EQ(spec.token_types, golden.token_types);
  EXPECT_EQ(spec.merges, golden.merges);
  EXPECT_EQ(spec.bos_id, golden.bos_id);
  EXPECT_EQ(spec.eos_id, golden.eos_id);
  EXPECT_EQ(spec.add_bos, golden.add_bos);

  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const boost::json::value cases = testing::ReadGoldenJson("smollm2_cases.json");
  for (const auto& c : cases.at("cases").as_array()) {
    const std::string text = testing::StringFromJson(c.at("text"));
    EXPECT_EQ((*tok)->Encode(text, false, true), testing::IdsFromJson(c.at("ids"))) << text;
  }
  EXPECT_EQ((*tok)->FindToken("<|im_end|>"), 2);
}

}  // namespace
}  // namespace spillway::engine
