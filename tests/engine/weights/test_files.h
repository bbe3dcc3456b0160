// Helpers for the weights tests: scratch directories and hand-made safetensors files, so the
// tests need no Python and no files outside the source tree.
#pragma once

#include <unistd.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace spillway::engine::testing {

// A fresh, empty directory under the test's temporary directory.
inline std::string ScratchDir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    absl::StrCat("spw_weights_", ::getpid(), "_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline std::string F32Bytes(const std::vector<float>& values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Truncates to bfloat16 (the test values are exact in bf16).
inline std::string Bf16Bytes(const std::vector<float>& values) {
  std::string out;
  for (float v : values) {
    const uint32_t bits = std::bit_cast<uint32_t>(v);
    out.push_back(static_cast<char>((bits >> 16) & 0xFF));
    out.push_back(static_cast<char>(bits >> 24));
  }
  return out;
}

// 1, 2, 3, ... n as floats, scaled (distinct, exact in bf16 for small n).
inline std::vector<float> Iota(int64_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i + 1) * scale;
  return v;
}

struct TestTensor {
  std::string name;
  std::string dtype;           // "F32", "BF16", ...
  std::vector<int64_t> shape;  // PyTorch order
  std::string bytes;
};

inline int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// An F32 tensor of `shape` holding Iota(elements, scale).
inline TestTensor F32Tensor(const std::string& name, std::vector<int64_t> shape,
                            float scale = 1.0f) {
  const int64_t n = NumElements(shape);
  return {name, "F32", std::move(shape), F32Bytes(Iota(n, scale))};
}

// The 8-byte little-endian length that starts a safetensors file.
inline std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// A safetensors file image: the tensors laid out back to back in the given order, with a
// header padded by spaces to a multiple of 8 bytes, as the reference writer does.
inline std::string SafetensorsImage(const std::vector<TestTensor>& tensors,
                                    const std::string& metadata_json = "") {
  std::vector<std::string> entries;
  if (!metadata_json.empty()) entries.push_back(absl::StrCat("\"__metadata__\":", metadata_json));
  int64_t offset = 0;
  std::string data;
  for (const TestTensor& t : tensors) {
    entries.push_back(absl::StrCat("\"", t.name, "\":{\"dtype\":\"", t.dtype, "\",\"shape\":[",
                                   absl::StrJoin(t.shape, ","), "],\"data_offsets\":[", offset, ",",
                                   offset + static_cast<int64_t>(t.bytes.size()), "]}"));
    offset += static_cast<int64_t>(t.bytes.size());
    data += t.bytes;
  }
  std::string header = absl::StrCat("{", absl::StrJoin(entries, ","), "}");
  while (header.size() % 8 != 0) header.push_back(' ');
  return absl::StrCat(LengthPrefix(header.size()), header, data);
}

// A file image with a hand-written header (not padded) followed by `data`.
inline std::string RawImage(const std::string& header, const std::string& data) {
  return absl::StrCat(LengthPrefix(header.size()), header, data);
}

}  // namespace spillway::engine::testing
