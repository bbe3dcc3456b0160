// SafetensorsFile: one `.safetensors` file, memory-mapped, with its header parsed and checked.
// Used by the Hugging Face directory reader (hf_directory.cc); usable on its own by tools.
//
// File layout (https://github.com/huggingface/safetensors):
//
//   [u64 little-endian N][N bytes of JSON header][data buffer ...................]
//                                                 ^ data_offsets are relative to here
//
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} and may
// hold a "__metadata__" object of string -> string. Open() checks every tensor before exposing
// it: a supported dtype (F32, F16, BF16), a shape whose element count does not overflow,
// begin <= end <= size of the data buffer, and end - begin == elements × dtype size. So a
// SafetensorsFile that opened never points outside its mapping.
//
// Tensor data points into the mapping, which lives as long as the SafetensorsFile (moving the
// object keeps the pointers valid). Data is not copied, so it is only as aligned as the file
// puts it: the reference writer pads the header to a multiple of 8 bytes, but a hand-made file
// need not. Read-only after Open(), so safe to read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/weights/ggml_types.h"
#include "engine/weights/internal/mapped_file.h"

namespace spillway::engine {

// NOTE(hf): bounds the JSON header so that a corrupt length cannot make us read or allocate
// absurdly; the largest real headers (thousands of tensors) are a few hundred KB.
inline constexpr int64_t kMaxSafetensorsHeaderBytes = int64_t{100} << 20;

// One tensor as the file stores it.
struct SafetensorsTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;  // kF32, kF16 or kBF16
  // PyTorch order: shape[0] is the outermost dimension, the last one is contiguous. Empty for
  // a scalar (one element).
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; nullptr only when nbytes == 0
  int64_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps and parses `path`. Errors (each message names the file, and the tensor when there
  // is one): NotFound / PermissionDenied / Internal from opening the file; InvalidArgument for
  // a malformed file (short file, header length past the end or above
  // kMaxSafetensorsHeaderBytes, bad JSON, missing or ill-typed fields, unknown dtype, offsets
  // out of bounds or not matching shape × dtype); Unimplemented for a valid dtype that
  // spillway does not load (I8, F64, F8_E4M3, ...).
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  // Parses a file image that is already in memory, e.g. a MappedFile. `file` must outlive
  // the returned tensors' data. Same checks and errors as Open(); the returned object does
  // not own the bytes (mainly for tests and for readers that manage the mapping themselves).
  static absl::StatusOr<SafetensorsFile> Parse(const uint8_t* bytes, int64_t size,
                                               const std::string& path_for_messages);

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;

  const std::string& path() const { return path_; }
  // All tensors, sorted by name.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr.
  const SafetensorsTensor* Find(std::string_view name) const;
  // The "__metadata__" object (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  internal::MappedFile file_;  // empty when built by Parse()
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace spillway::engine
