// The GGUF container format (v2 and v3), read into plain data. OpenGguf (model_file.h) builds a
// ModelFile from it; tests and tools may use ParseGguf directly. Every offset, size and count
// in the file is checked against the file's size before use, so a truncated or corrupt file
// yields InvalidArgument naming what is wrong, never a crash or an absurd allocation.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine {

// One metadata value. Integers of every width are widened to int64/uint64, floats to double;
// arrays hold their elements the same way.
struct GgufValue {
  using Array = std::variant<std::vector<int64_t>, std::vector<double>, std::vector<std::string>,
                             std::vector<bool>>;
  std::variant<int64_t, uint64_t, double, bool, std::string, Array> value;

  std::optional<int64_t> AsInt() const;   // any integer (uint64 only if it fits), or nullopt
  std::optional<double> AsFloat() const;  // any number
  std::optional<bool> AsBool() const;
  const std::string* AsString() const;
  const std::vector<std::string>* AsStrings() const;
  const std::vector<int64_t>* AsInts() const;
  const std::vector<double>* AsFloats() const;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> shape;  // ggml order, innermost first
  int64_t offset = 0;          // from the start of the file (already includes the data base)
  int64_t nbytes = 0;
};

struct GgufContents {
  uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;
  int64_t alignment = 32;
};

// Parses the GGUF in `data[0, size)`. Tensor data is not copied: offsets point into `data`.
absl::StatusOr<GgufContents> ParseGguf(const uint8_t* data, int64_t size);

}  // namespace spillway::engine
