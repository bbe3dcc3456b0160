// FaultFileLayer: a kvcache::FileLayer over real files (PosixFileLayer) that injects the
// faults the SSD tier must survive (STYLE.md §9, LevelDB's SpecialEnv): failed writes (EIO),
// a full disk (ENOSPC, or a statvfs that reports little free space), bytes flipped on read,
// files deleted under open handles, failed fsync/rename; and it can hold writes so that a test
// can queue operations behind one in progress. Header-only. Thread-safe: the tier's I/O thread
// calls it while the test thread changes the faults.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kvcache/disk/file_layer.h"

namespace spillway::testing {

class FaultFileLayer final : public kvcache::FileLayer {
 public:
  explicit FaultFileLayer(kvcache::FileLayer& base = kvcache::PosixFileLayer()) : base_(base) {}

  // Every later WriteAt fails with EIO (Internal) / ENOSPC (ResourceExhausted).
  void FailWrites(bool on) { Set(&fail_writes_, on); }
  void NoSpace(bool on) { Set(&no_space_, on); }
  void FailSync(bool on) { Set(&fail_sync_, on); }
  // FreeBytes reports `bytes` instead of the real statvfs figure (nullopt: the real one).
  void SetFreeBytes(std::optional<int64_t> bytes) { Set(&free_bytes_, bytes); }
  // A ReadAt of `path` whose range covers `offset` returns that byte with its bits inverted.
  void FlipByteOnRead(const std::string& path, int64_t offset) {
    std::lock_guard lock(mu_);
    flips_.insert({path, offset});
  }
  // Removes the real file and makes handles already open to it fail with NotFound, as on a
  // filesystem where a deleted file's data is gone at once.
  absl::Status DeleteFile(const std::string& path) {
    {
      std::lock_guard lock(mu_);
      deleted_.insert(path);
    }
    return base_.Remove(path);
  }
  // While held, WriteAt blocks (before doing anything) until ReleaseWrites.
  void HoldWrites() { Set(&hold_writes_, true); }
  void ReleaseWrites() {
    Set(&hold_writes_, false);
    cv_.notify_all();
  }
  // Blocks until some WriteAt is waiting on the hold.
  void AwaitHeldWrite() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return num_held_ > 0; });
  }
  int64_t num_write_calls() const {
    std::lock_guard lock(mu_);
    return num_write_calls_;
  }

  absl::StatusOr<std::unique_ptr<kvcache::File>> Open(const std::string& path,
                                                      kvcache::OpenMode mode) override {
    auto file = base_.Open(path, mode);
    if (!file.ok()) return file.status();
    {
      std::lock_guard lock(mu_);
      deleted_.erase(path);  // a new file under that name
    }
    return std::unique_ptr<kvcache::File>(new FaultFile(*this, path, std::move(*file)));
  }
  absl::Status Remove(const std::string& path) override { return base_.Remove(path); }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    return base_.Rename(from, to);
  }
  absl::Status CreateDir(const std::string& dir) override { return base_.CreateDir(dir); }
  absl::Status SyncDir(const std::string& dir) override { return base_.SyncDir(dir); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_.ListDir(dir);
  }
  absl::StatusOr<std::unique_ptr<kvcache::FileLock>> LockFile(const std::string& path) override {
    return base_.LockFile(path);
  }
  absl::StatusOr<int64_t> FreeBytes(const std::string& path) override {
    {
      std::lock_guard lock(mu_);
      if (free_bytes_) return *free_bytes_;
    }
    return base_.FreeBytes(path);
  }

 private:
  class FaultFile final : public kvcache::File {
   public:
    FaultFile(FaultFileLayer& layer, std::string path, std::unique_ptr<kvcache::File> base)
        : layer_(layer), path_(std::move(path)), base_(std::move(base)) {}

    absl::StatusOr<int64_t> ReadAt(int64_t offset, std::span<std::byte> dst) override {
      if (layer_.IsDeleted(path_)) return absl::NotFoundError(path_ + " was deleted");
      auto n = base_->ReadAt(offset, dst);
      if (!n.ok()) return n;
      std::lock_guard lock(layer_.mu_);
      for (const auto& [path, at] : layer_.flips_) {
        if (path == path_ && at >= offset && at < offset + *n) dst[at - offset] ^= std::byte{0xff};
      }
      return n;
    }
    absl::Status WriteAt(int64_t offset, std::span<const std::byte> src) override {
      {
        std::unique_lock lock(layer_.mu_);
        ++layer_.num_write_calls_;
        ++layer_.num_held_;
        layer_.cv_.notify_all();
        layer_.cv_.wait(lock, [&] { return !layer_.hold_writes_; });
        --layer_.num_held_;
        if (layer_.fail_writes_) return absl::InternalError("pwrite " + path_ + ": injected EIO");
        if (layer_.no_space_) {
          return absl::ResourceExhaustedError("pwrite " + path_ + ": injected ENOSPC");
        }
      }
      if (layer_.IsDeleted(path_)) return absl::NotFoundError(path_ + " was deleted");
      return base_->WriteAt(offset, src);
    }
    absl::Status Sync() override {
      {
        std::lock_guard lock(layer_.mu_);
        if (layer_.fail_sync_) return absl::InternalError("fdatasync " + path_ + ": injected EIO");
      }
      return base_->Sync();
    }
    absl::StatusOr<int64_t> Size() override { return base_->Size(); }

   private:
    FaultFileLayer& layer_;
    std::string path_;
    std::unique_ptr<kvcache::File> base_;
  };

  template <typename T>
  void Set(T* field, T value) {
    std::lock_guard lock(mu_);
    *field = std::move(value);
  }
  bool IsDeleted(const std::string& path) const {
    std::lock_guard lock(mu_);
    return deleted_.contains(path);
  }

  kvcache::FileLayer& base_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool fail_writes_ = false;
  bool no_space_ = false;
  bool fail_sync_ = false;
  bool hold_writes_ = false;
  int64_t num_held_ = 0;
  int64_t num_write_calls_ = 0;
  std::optional<int64_t> free_bytes_;
  std::set<std::pair<std::string, int64_t>> flips_;
  std::set<std::string> deleted_;
};

}  // namespace spillway::testing
