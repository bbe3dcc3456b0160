#include "engine/weights/safetensors_reader.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/weights/test_files.h"

namespace spillway::engine {
namespace {

using ::spillway::engine::testing::Bf16Bytes;
using ::spillway::engine::testing::F32Bytes;
using ::spillway::engine::testing::F32Tensor;
using ::spillway::engine::testing::LengthPrefix;
using ::spillway::engine::testing::RawImage;
using ::spillway::engine::testing::SafetensorsImage;
using ::spillway::engine::testing::ScratchDir;
using ::spillway::engine::testing::TestTensor;
using ::spillway::engine::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

float FloatAt(const SafetensorsTensor& t, int64_t i) {
  float v;
  std::memcpy(&v, t.data + 4 * i, 4);
  return v;
}

// Writes `image` to a scratch file and opens it.
absl::StatusOr<SafetensorsFile> OpenImage(const std::string& image, std::string* path_out) {
  const std::string path = ScratchDir("st") + "/model.safetensors";
  WriteFile(path, image);
  if (path_out != nullptr) *path_out = path;
  return SafetensorsFile::Open(path);
}

// Opens a file whose header is `header` and data buffer `data_bytes` zero bytes, and
// returns the error.
absl::Status ErrorOf(const std::string& header, size_t data_bytes = 16) {
  absl::StatusOr<SafetensorsFile> f =
      OpenImage(RawImage(header, std::string(data_bytes, '\0')), nullptr);
  return f.status();
}

TEST(SafetensorsFile, ReadsTensorsDtypesShapesDataAndMetadata) {
  const std::string f16_one_two("\x00\x3c\x00\x40", 4);  // 1.0, 2.0 in IEEE half
  std::string path;
  absl::StatusOr<SafetensorsFile> f =
      OpenImage(SafetensorsImage({F32Tensor("z.weight", {2, 3}),
                                  {"a.bias", "BF16", {3}, Bf16Bytes({0.5f, -1.0f, 2.0f})},
                                  {"m.half", "F16", {2}, f16_one_two}},
                                 R"({"format":"pt","note":"hi"})"),
                &path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->path(), path);
  ASSERT_EQ(f->tensors().size(), 3u);
  // Sorted by name.
  EXPECT_EQ(f->tensors()[0].name, "a.bias");
  EXPECT_EQ(f->tensors()[1].name, "m.half");
  EXPECT_EQ(f->tensors()[2].name, "z.weight");

  const SafetensorsTensor* z = f->Find("z.weight");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->type, GgmlType::kF32);
  EXPECT_THAT(z->shape, ElementsAre(2, 3));
  EXPECT_EQ(z->nbytes, 24);
  EXPECT_EQ(FloatAt(*z, 0), 1.0f);
  EXPECT_EQ(FloatAt(*z, 5), 6.0f);

  const SafetensorsTensor* a = f->Find("a.bias");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, GgmlType::kBF16);
  EXPECT_EQ(a->nbytes, 6);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a->data), 6), Bf16Bytes({0.5f, -1.0f, 2.0f}));

  const SafetensorsTensor* m = f->Find("m.half");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->type, GgmlType::kF16);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m->data), 4), f16_one_two);

  EXPECT_EQ(f->Find("nope"), nullptr);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "hi");
}

TEST(SafetensorsFile, DataStaysValidAfterMove) {
  absl::StatusOr<SafetensorsFile> f = OpenImage(SafetensorsImage({F32Tensor("w", {4})}), nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  const uint8_t* before = f->Find("w")->data;
  SafetensorsFile moved = *std::move(f);
  EXPECT_EQ(moved.Find("w")->data, before);
  EXPECT_EQ(FloatAt(*moved.Find("w"), 3), 4.0f);
}

TEST(SafetensorsFile, ScalarAndEmptyTensors) {
  absl::StatusOr<SafetensorsFile> f = OpenImage(
      SafetensorsImage({{"scalar", "F32", {}, F32Bytes({7.0f})}, {"empty", "F32", {0, 4}, ""}}),
      nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->Find("scalar")->shape.empty());
  EXPECT_EQ(FloatAt(*f->Find("scalar"), 0), 7.0f);
  EXPECT_EQ(f->Find("empty")->nbytes, 0);
  EXPECT_EQ(f->Find("empty")->data, nullptr);
}

TEST(SafetensorsFile, EmptyHeaderObjectHasNoTensors) {
  absl::StatusOr<SafetensorsFile> f = OpenImage(RawImage("{}", ""), nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->tensors().empty());
}

TEST(SafetensorsFile, ParseWorksOnMemoryImages) {
  const std::string image = SafetensorsImage({F32Tensor("w", {2})});
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Parse(
      reinterpret_cast<const uint8_t*>(image.data()), std::ssize(image), "mem.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(FloatAt(*f->Find("w"), 1), 2.0f);
}

TEST(SafetensorsFile, MissingFileIsNotFound) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(ScratchDir("missing") + "/x.st");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("x.st"));
}

TEST(SafetensorsFile, FileShorterThanLengthPrefix) {
  std::string path;
  absl::StatusOr<SafetensorsFile> f = OpenImage(std::string("\x10\x00\x00", 3), &path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr(path));
  EXPECT_THAT(f.status().message(), HasSubstr("shorter than the 8-byte header length"));
}

TEST(SafetensorsFile, HeaderLengthPastEndOfFile) {
  absl::StatusOr<SafetensorsFile> f = OpenImage(LengthPrefix(1000) + "{}", nullptr);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("header length 1000 bytes runs past the end"));
}

TEST(SafetensorsFile, AbsurdHeaderLengthIsRejectedBeforeReading) {
  absl::StatusOr<SafetensorsFile> f = OpenImage(LengthPrefix(uint64_t{1} << 62) + "{}", nullptr);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("exceeds the limit"));
}

TEST(SafetensorsFile, TruncatedHeaderIsBadJson) {
  // The length says 20 bytes but the JSON is cut short inside them.
  const std::string header = R"({"w":{"dtype":"F32")";
  absl::StatusOr<SafetensorsFile> f = OpenImage(LengthPrefix(header.size()) + header, nullptr);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("not valid JSON"));
}

TEST(SafetensorsFile, HeaderMustBeAnObject) {
  EXPECT_THAT(ErrorOf("[1,2]").message(), HasSubstr("header is not a JSON object"));
}

TEST(SafetensorsFile, UnknownDtypeNamesTensorAndDtype) {
  const absl::Status s = ErrorOf(R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor \"w\""));
  EXPECT_THAT(s.message(), HasSubstr("unknown dtype \"F33\""));
}

TEST(SafetensorsFile, UnsupportedDtypeIsUnimplemented) {
  const absl::Status s = ErrorOf(R"({"q":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("tensor \"q\""));
  EXPECT_THAT(s.message(), HasSubstr("dtype I8 is not supported"));
}

TEST(SafetensorsFile, OffsetsPastEndOfData) {
  const absl::Status s =
      ErrorOf(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", /*data_bytes=*/16);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor \"w\""));
  EXPECT_THAT(s.message(), HasSubstr("run past the end of the data buffer (16 bytes"));
}

TEST(SafetensorsFile, OffsetsInconsistentWithShape) {
  const absl::Status s = ErrorOf(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("hold 12 bytes but shape [2,2] of F32 needs 16"));
}

TEST(SafetensorsFile, OffsetsEndingBeforeTheyBegin) {
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})").message(),
              HasSubstr("end before they begin"));
}

TEST(SafetensorsFile, MalformedFields) {
  EXPECT_THAT(ErrorOf(R"({"w":{"shape":[1],"data_offsets":[0,4]}})").message(),
              HasSubstr("missing or non-string \"dtype\""));
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})").message(),
              HasSubstr("missing or non-array \"shape\""));
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})").message(),
              HasSubstr("not a non-negative integer"));
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})").message(),
              HasSubstr("not a non-negative integer"));
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})").message(),
              HasSubstr("data_offsets"));
  EXPECT_THAT(ErrorOf(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})").message(),
              HasSubstr("not non-negative integers"));
  EXPECT_THAT(ErrorOf(R"({"w":7})").message(), HasSubstr("entry is not a JSON object"));
  EXPECT_THAT(ErrorOf(R"({"__metadata__":{"a":1}})").message(),
              HasSubstr("\"__metadata__\" value of \"a\" is not a string"));
}

TEST(SafetensorsFile, ShapeWhoseSizeOverflowsIsRejected) {
  const absl::Status s =
      ErrorOf(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("too large"));
}

}  // namespace
}  // namespace spillway::engine
