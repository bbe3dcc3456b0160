// GgufWriter: writes a GGUF v3 file (metadata, tensor infos, tensor data aligned to 32 bytes)
// that OpenGguf reads. Tensor bytes are produced on demand by a callback, in pieces, so a
// file larger than memory (a random 8B model) streams to disk. Used by `spillway make-model`
// (random_model.h) and tests. Not thread-safe; one writer per file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine {

class GgufWriter {
 public:
  // Writes bytes [offset, offset + size) of a tensor's data into `dst`.
  using Fill = std::function<void(uint8_t* dst, int64_t offset, int64_t size)>;

  void SetString(const std::string& key, const std::string& value);
  void SetUint32(const std::string& key, uint32_t value);
  void SetFloat32(const std::string& key, float value);
  void SetBool(const std::string& key, bool value);
  void SetStrings(const std::string& key, const std::vector<std::string>& values);
  void SetFloat32s(const std::string& key, const std::vector<float>& values);
  void SetInt32s(const std::string& key, const std::vector<int32_t>& values);

  // A tensor of `type` with `shape` in ggml order (innermost first); `fill` is called with
  // consecutive ranges covering its RowBytes(type, shape[0]) * rows bytes.
  // REQUIRES: shape[0] is a multiple of BlockElements(type).
  void AddTensor(const std::string& name, GgmlType type, std::vector<int64_t> shape, Fill fill);

  // Writes the file; the pieces handed to each Fill are at most `chunk_bytes` long.
  absl::Status Write(const std::string& path, int64_t chunk_bytes = int64_t{64} << 20) const;

 private:
  using Value = std::variant<std::string, uint32_t, float, bool, std::vector<std::string>,
                             std::vector<float>, std::vector<int32_t>>;
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    int64_t nbytes;
    Fill fill;
  };
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace spillway::engine
