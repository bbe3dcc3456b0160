// FileLayer: the file operations the SSD tier (kvcache/disk/disk_tier.h) performs, behind an
// interface so that tests can inject faults (failed writes, a full disk, flipped bytes, deleted
// files) without touching production code (LevelDB's Env; STYLE.md §9 "what to fake").
// PosixFileLayer() is the real implementation (open/pread/pwrite/fdatasync/rename/statvfs);
// tests/fakes/fault_file_layer.h wraps it with faults.
//
// Errors are absl::Status with one mapping used everywhere: ENOSPC and EDQUOT give
// ResourceExhausted (a full disk), ENOENT gives NotFound, anything else Internal with the errno
// text. Thread safety: a FileLayer and the Files it opens may be used from any thread; one File
// may serve concurrent ReadAt/WriteAt calls (pread/pwrite have no shared file position).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace spillway::kvcache {

enum class OpenMode : uint8_t {
  kRead,       // read only; NotFound when missing
  kReadWrite,  // read and write; created (empty) when missing, never truncated
  kTruncate,   // write; created when missing, truncated to 0 bytes when present
};

// One open file. Closed by the destructor.
class File {
 public:
  virtual ~File() = default;
  // Reads up to dst.size() bytes at `offset`; returns how many were read (fewer only at the end
  // of the file).
  virtual absl::StatusOr<int64_t> ReadAt(int64_t offset, std::span<std::byte> dst) = 0;
  // Writes all of `src` at `offset` (retrying short writes); an error may leave part written.
  [[nodiscard]] virtual absl::Status WriteAt(int64_t offset, std::span<const std::byte> src) = 0;
  // fdatasync: the data written so far is durable when this returns OK.
  [[nodiscard]] virtual absl::Status Sync() = 0;
  virtual absl::StatusOr<int64_t> Size() = 0;
};

// An exclusive advisory lock on a file (flock), held until destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class FileLayer {
 public:
  virtual ~FileLayer() = default;
  virtual absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) = 0;
  // Removes a file; NotFound when it does not exist.
  [[nodiscard]] virtual absl::Status Remove(const std::string& path) = 0;
  // rename(2): atomically replaces `to`.
  [[nodiscard]] virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  // Creates `dir` and its missing parents; OK when it already exists.
  [[nodiscard]] virtual absl::Status CreateDir(const std::string& dir) = 0;
  // fsync of the directory itself, so that a rename or a new file in it is durable.
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..", in no particular order.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // Bytes an unprivileged process may still allocate on the filesystem holding `path`
  // (statvfs: f_bavail * f_frsize).
  virtual absl::StatusOr<int64_t> FreeBytes(const std::string& path) = 0;
  // Creates `path` if needed and locks it exclusively without waiting: FailedPrecondition when
  // another holder (this process or another) has it.
  virtual absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
};

// The real POSIX layer; stateless, lives for the whole process.
FileLayer& PosixFileLayer();

// The Status for a failed system call, with the mapping above: `what` names the call and path.
absl::Status ErrnoStatus(int err, const std::string& what);

}  // namespace spillway::kvcache
