// ParseGguf on files built byte by byte: valid ones parse, and every kind of damage — truncation
// at every length, wrong magic, bad version, absurd counts, offsets past the end, unknown
// types — gives a clear error (and never a crash: the sanitizer build runs this too).
#include "engine/weights/gguf_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace spillway::engine {
namespace {

using ::testing::HasSubstr;

// Writes a GGUF file the way the format specifies, with hooks to break it.
class GgufBuilder {
 public:
  GgufBuilder& Version(uint32_t v) {
    version_ = v;
    return *this;
  }
  GgufBuilder& KvString(const std::string& key, const std::string& value) {
    Str(kv_, key);
    U32(kv_, 8);
    Str(kv_, value);
    ++kv_count_;
    return *this;
  }
  GgufBuilder& KvU32(const std::string& key, uint32_t value) {
    Str(kv_, key);
    U32(kv_, 4);
    U32(kv_, value);
    ++kv_count_;
    return *this;
  }
  GgufBuilder& KvF32(const std::string& key, float value) {
    Str(kv_, key);
    U32(kv_, 6);
    Raw(kv_, &value, 4);
    ++kv_count_;
    return *this;
  }
  GgufBuilder& KvStrings(const std::string& key, const std::vector<std::string>& values) {
    Str(kv_, key);
    U32(kv_, 9);
    U32(kv_, 8);
    U64(kv_, values.size());
    for (const auto& v : values) Str(kv_, v);
    ++kv_count_;
    return *this;
  }
  // A tensor of `type` with `shape`; its data (zeros) follows at the next aligned offset.
  GgufBuilder& Tensor(const std::string& name, uint32_t type, std::vector<uint64_t> shape,
                      uint64_t nbytes) {
    Str(infos_, name);
    U32(infos_, static_cast<uint32_t>(shape.size()));
    for (uint64_t d : shape) U64(infos_, d);
    U32(infos_, type);
    U64(infos_, data_.size());
    data_.resize(data_.size() + nbytes, 0);
    while (data_.size() % 32 != 0) data_.push_back(0);
    ++tensor_count_;
    return *this;
  }
  GgufBuilder& TensorCount(uint64_t n) {
    tensor_count_override_ = n;
    return *this;
  }
  GgufBuilder& KvCount(uint64_t n) {
    kv_count_override_ = n;
    return *this;
  }

  std::vector<uint8_t> Build() const {
    std::vector<uint8_t> out;
    U32(out, 0x46554747);
    U32(out, version_);
    U64(out, tensor_count_override_.value_or(tensor_count_));
    U64(out, kv_count_override_.value_or(kv_count_));
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), infos_.begin(), infos_.end());
    while (out.size() % 32 != 0) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    return out;
  }

 private:
  static void Raw(std::vector<uint8_t>& b, const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
  static void U32(std::vector<uint8_t>& b, uint32_t v) { Raw(b, &v, 4); }
  static void U64(std::vector<uint8_t>& b, uint64_t v) { Raw(b, &v, 8); }
  static void Str(std::vector<uint8_t>& b, const std::string& s) {
    U64(b, s.size());
    Raw(b, s.data(), s.size());
  }

  uint32_t version_ = 3;
  uint64_t kv_count_ = 0, tensor_count_ = 0;
  std::optional<uint64_t> kv_count_override_, tensor_count_override_;
  std::vector<uint8_t> kv_, infos_, data_;
};

GgufBuilder ValidFile() {
  GgufBuilder b;
  b.KvString("general.architecture", "llama")
      .KvU32("llama.block_count", 2)
      .KvF32("llama.rope.freq_base", 10000.0f)
      .KvStrings("tokenizer.ggml.tokens", {"a", "b", "c"})
      .Tensor("token_embd.weight", /*q4_1=*/3, {64, 3}, 3 * 2 * 20)
      .Tensor("output_norm.weight", /*f32=*/0, {64}, 64 * 4);
  return b;
}

absl::StatusOr<GgufContents> Parse(const std::vector<uint8_t>& bytes) {
  return ParseGguf(bytes.data(), static_cast<int64_t>(bytes.size()));
}

TEST(GgufReader, ParsesMetadataAndTensors) {
  const std::vector<uint8_t> bytes = ValidFile().Build();
  auto gguf = Parse(bytes);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_EQ(gguf->version, 3u);
  EXPECT_EQ(*gguf->metadata.at("general.architecture").AsString(), "llama");
  EXPECT_EQ(gguf->metadata.at("llama.block_count").AsInt(), 2);
  EXPECT_FLOAT_EQ(*gguf->metadata.at("llama.rope.freq_base").AsFloat(), 10000.0f);
  EXPECT_EQ(*gguf->metadata.at("tokenizer.ggml.tokens").AsStrings(),
            (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_EQ(gguf->tensors.size(), 2u);
  EXPECT_EQ(gguf->tensors[0].name, "token_embd.weight");
  EXPECT_EQ(gguf->tensors[0].type, GgmlType::kQ4_1);
  EXPECT_EQ(gguf->tensors[0].shape, (std::vector<int64_t>{64, 3}));
  EXPECT_EQ(gguf->tensors[0].nbytes, 3 * 2 * 20);
  EXPECT_EQ(gguf->tensors[1].offset - gguf->tensors[0].offset, 128);  // 120 bytes, aligned to 32
  EXPECT_LE(gguf->tensors[1].offset + gguf->tensors[1].nbytes, static_cast<int64_t>(bytes.size()));
}

TEST(GgufReader, AcceptsVersion2) {
  auto gguf = Parse(ValidFile().Version(2).Build());
  EXPECT_TRUE(gguf.ok()) << gguf.status();
}

TEST(GgufReader, EveryTruncationIsAClearError) {
  const std::vector<uint8_t> bytes = ValidFile().Build();
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    auto gguf = Parse(cut);
    ASSERT_FALSE(gguf.ok()) << "length " << len;
    EXPECT_EQ(gguf.status().code(), absl::StatusCode::kInvalidArgument) << len;
    EXPECT_THAT(std::string(gguf.status().message()),
                testing::AnyOf(HasSubstr("truncated"), HasSubstr("more than")))
        << "length " << len << ": " << gguf.status();
  }
}

TEST(GgufReader, RejectsWrongMagic) {
  std::vector<uint8_t> bytes = ValidFile().Build();
  std::memcpy(bytes.data(), "GGML", 4);
  auto gguf = Parse(bytes);
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("not a GGUF file"));
}

TEST(GgufReader, RejectsUnsupportedVersion) {
  auto gguf = Parse(ValidFile().Version(1).Build());
  EXPECT_EQ(gguf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("version 1"));
}

TEST(GgufReader, RejectsAbsurdCounts) {
  auto a = Parse(ValidFile().KvCount(uint64_t{1} << 62).Build());
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("metadata entries"));
  auto b = Parse(ValidFile().TensorCount(uint64_t{1} << 40).Build());
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("tensors"));
}

TEST(GgufReader, RejectsTensorDataPastTheEnd) {
  GgufBuilder b = ValidFile();
  std::vector<uint8_t> bytes = b.Build();
  bytes.resize(bytes.size() - 64);  // cut into the last tensor's data
  auto gguf = Parse(bytes);
  EXPECT_THAT(std::string(gguf.status().message()),
              HasSubstr("'output_norm.weight' (256 bytes at byte"));
}

TEST(GgufReader, RejectsUnknownTensorType) {
  GgufBuilder b;
  b.Tensor("w", 99, {32}, 32);
  auto gguf = Parse(b.Build());
  EXPECT_EQ(gguf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("'w' has type 99"));
}

TEST(GgufReader, RejectsRowsNotAWholeNumberOfBlocks) {
  GgufBuilder b;
  b.Tensor("w", /*q4_1=*/3, {48, 2}, 80);
  auto gguf = Parse(b.Build());
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("not a multiple of its block size"));
}

TEST(GgufReader, RejectsZeroAndHugeDimensions) {
  GgufBuilder zero;
  zero.Tensor("w", 0, {0}, 0);
  EXPECT_THAT(std::string(Parse(zero.Build()).status().message()), HasSubstr("invalid dimension"));
  GgufBuilder huge;
  huge.Tensor("w", 0, {uint64_t{1} << 62, 4}, 0);
  EXPECT_THAT(std::string(Parse(huge.Build()).status().message()), HasSubstr("invalid dimension"));
}

TEST(GgufReader, RejectsHugeStringLength) {
  std::vector<uint8_t> bytes = ValidFile().Build();
  // The first key's length field follows the 24-byte header.
  const uint64_t huge = uint64_t{1} << 50;
  std::memcpy(bytes.data() + 24, &huge, 8);
  auto gguf = Parse(bytes);
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("over the"));
}

TEST(GgufReader, RejectsUnknownValueType) {
  std::vector<uint8_t> bytes = ValidFile().Build();
  // Key "general.architecture" (8 + 20 bytes) follows the header; then its value type.
  const uint32_t bad = 77;
  std::memcpy(bytes.data() + 24 + 8 + 20, &bad, 4);
  auto gguf = Parse(bytes);
  EXPECT_THAT(std::string(gguf.status().message()), HasSubstr("unknown value type 77"));
}

}  // namespace
}  // namespace spillway::engine
