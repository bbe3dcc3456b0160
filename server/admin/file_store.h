// FileStore: uploaded files (POST /v1/files) kept under <data dir>/files/, each as
// <id>.data (the bytes) and <id>.json (its metadata: name, purpose, size, SHA-256). Files are
// stored by id ("file-" and 24 hex digits), never by the client's name, and an id that is not
// of that form is simply not found, so no client string ever reaches a path. The content is
// checked against its digest before every use (Content). Purpose "fine-tune" files are
// validated as fine-tuning JSONL at upload (dataset.h).
//
// Thread safety: every method is safe from any thread (one mutex; file I/O is small).
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace spillway::server::admin {

struct FileInfo {
  std::string id;
  int64_t bytes = 0;
  int64_t created_at = 0;  // unix seconds
  std::string filename;    // as uploaded (its last path component), for display only
  std::string purpose;
  std::string sha256;
};

// NotFound "No such File object: <id>" (param "file_id"), as OpenAI answers.
absl::Status FileNotFoundError(std::string_view id);

// OpenAI's `file` object for `f` (what the HTTP and gRPC admin APIs return).
boost::json::object FileObject(const FileInfo& f);

class FileStore {
 public:
  // Opens (creating) `dir` and reads the metadata of the files already there.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(std::string dir, int64_t max_bytes);

  // Stores `data`. InvalidArgument (param "purpose" / "file") for a purpose other than
  // "fine-tune", an empty file, or JSONL that does not validate (the message names the line);
  // ResourceExhausted over max_bytes; the file layer's errors.
  absl::StatusOr<FileInfo> Put(std::string filename, std::string purpose, std::string data);
  // Stores a file the server made: a fine-tuning job's results (purpose "fine-tune-results",
  // a CSV; OpenAI's `result_files`). Not validated, not bounded by max_bytes.
  absl::StatusOr<FileInfo> PutResult(std::string filename, std::string data);
  std::vector<FileInfo> List() const;                         // oldest first
  absl::StatusOr<FileInfo> Get(const std::string& id) const;  // NotFound
  absl::Status Delete(const std::string& id);                 // NotFound
  // The bytes, checked against the stored SHA-256 (DataLoss when they differ).
  absl::StatusOr<std::string> Content(const std::string& id) const;

  static bool IsValidId(const std::string& id);
  int64_t max_bytes() const { return max_bytes_; }

 private:
  FileStore(std::string dir, int64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  std::string PathOf(const std::string& id, const char* ext) const;
  // Writes the data and the metadata (atomically), then lists the file.
  absl::StatusOr<FileInfo> Store(std::string filename, std::string purpose,
                                 const std::string& data);

  const std::string dir_;
  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  absl::btree_map<std::string, FileInfo> files_ ABSL_GUARDED_BY(mu_);
};

}  // namespace spillway::server::admin
