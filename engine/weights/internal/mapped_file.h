// MappedFile: a whole file mapped read-only into memory (mmap), unmapped when the object dies.
// The model-file readers (GGUF, safetensors) keep one per file so that tensors can point into
// the mapping instead of copying gigabytes. Movable, not copyable. The bytes are read-only and
// never change, so a MappedFile may be read from any thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace spillway::engine::internal {

class MappedFile {
 public:
  // Opens and maps `path` read-only. Fails with NotFound if the file does not exist,
  // InvalidArgument if it is not a regular file, and Internal/PermissionDenied on other I/O
  // errors; the message names the path. An empty file maps to data() == nullptr, size() == 0.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // First byte of the file; nullptr for an empty or moved-from file.
  const uint8_t* data() const { return data_; }
  // Length of the file in bytes.
  int64_t size() const { return size_; }
  // The path it was opened from (for error messages).
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, int64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  void Reset();

  std::string path_;
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace spillway::engine::internal
