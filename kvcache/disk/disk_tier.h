// DiskTier: the SSD tier's block store of the tiered KV cache (issue #6). It keeps fixed-size
// KV blocks (`block_bytes` each) under opaque 64-bit keys — a block's chained prefix hash, or
// any unique key for a swapped-out sequence's block — in a few slab files of fixed slots in its
// own directory, and evicts the least recently written unpinned block when it is full. The tier
// manager (kvcache/tier_manager.h) is its one user; docs/kv-tiers.md ("SSD tier") has the
// on-disk format.
//
// Every slot holds a header {magic, version, key, layout fingerprint, payload length, XXH3-64
// of the payload} before the payload; a read checks all of it, so a corrupt, torn, missing or
// unreadable block is a miss (counted by kind), never wrong data. A failed write or a full disk
// marks the tier degraded: writes are refused (until restart after an I/O error; for a while
// after a full disk), reads of good blocks go on.
//
// Threads: every public method is called from one thread, the engine loop (or whatever single
// thread owns the tier); one tier per directory (a lock file enforces it). Disk I/O runs on one I/O
// thread that executes operations in the order they were submitted; the calling thread never waits
// for the disk except in WaitForRead, Flush, SaveIndex and the destructor. The index (key -> slot)
// is the caller's view: it changes at submit time, so Contains answers at once, and a read queued
// after a write of the same key reads what that write wrote.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvcache/disk/file_layer.h"

namespace spillway::kvcache {

namespace internal {
struct IndexEntry;  // kvcache/disk/internal/disk_format.h
}  // namespace internal

struct DiskTierOptions {
  std::string path;  // directory; created when missing. The tier owns only its files
                     // (slab-*.spw, index.spw, index.spw.tmp, tier.lock) in it.
  // On-disk bytes; the tier holds capacity_bytes / slot_bytes blocks, where slot_bytes = 4 KiB
  // (header page) + block_bytes rounded up to 4 KiB (stats().slot_bytes).
  int64_t capacity_bytes = 0;
  int64_t block_bytes = 0;  // payload of one block (> 0)
  // Identifies the model and its KV layout; a persisted index written under another value is
  // discarded at Open, with its files.
  uint64_t layout_fingerprint = 0;
  // true: the index survives a restart (saved by the destructor, by SaveIndex and every
  // persist_interval_ms); false: Open wipes the tier's files.
  bool persist = false;
  FileLayer* files = nullptr;  // nullptr: PosixFileLayer(); otherwise must outlive the tier
  int64_t persist_interval_ms = 30'000;  // persist mode: save a changed index this often (0: never)
  // A write that would grow a slab file while statvfs reports less than this free marks the
  // tier degraded (no space) instead of filling the disk to the last byte. Negative: no check
  // (the tier learns of a full disk from ENOSPC alone).
  int64_t min_free_bytes = 64 << 20;
  // A tier degraded by a full disk accepts writes again this long after (the first write that
  // grows a file then checks statvfs anew); negative: never. A failed write (I/O error) keeps
  // the tier degraded until restart.
  int64_t no_space_retry_ms = 60'000;
};

enum class DiskOp : uint8_t {
  kWrite,
  kRead,
  kEvicted,  // the tier dropped `key` to make room; no I/O was done
};

// The outcome of one operation; everything but kOk is a miss for a read and a failure for a
// write. The order is stable (stats index by it).
enum class DiskResult : uint8_t {
  kOk,
  kNotFound,          // read: no such key when the read ran (erased, evicted or never written)
  kHeaderMismatch,    // read: bad magic/version/length, another key, another layout fingerprint
  kChecksumMismatch,  // read: payload XXH3 differs from the header's
  kShortRead,         // read: the file ends inside the slot (truncated or deleted file)
  kIoError,           // read or write: the file layer failed
  kNoSpace,           // write: ENOSPC, or statvfs below min_free_bytes
  kDropped,           // write: not done because the tier became degraded after it was queued
};
inline constexpr int kNumDiskResults = 8;
std::string_view DiskResultName(DiskResult result);  // "ok", "not_found", "checksum", ...

struct DiskCompletion {
  DiskOp op = DiskOp::kWrite;
  DiskResult result = DiskResult::kOk;
  uint64_t key = 0;
  uint64_t tag = 0;  // reads: the caller's tag; 0 otherwise
  bool ok() const { return result == DiskResult::kOk; }
};

struct DiskTierStats {
  int64_t num_blocks = 0;         // keys in the index (including writes not yet on disk)
  int64_t num_pinned_blocks = 0;  // of which pinned
  int64_t capacity_blocks = 0;
  int64_t slot_bytes = 0;  // on-disk bytes per block: header + payload, rounded to 4 KiB
  int64_t used_bytes = 0;  // num_blocks * slot_bytes
  int64_t capacity_bytes = 0;
  int64_t num_queued_ops = 0;  // submitted, not yet completed
  int64_t num_writes = 0;      // completed OK
  int64_t num_reads = 0;       // completed OK (hits)
  int64_t num_evictions = 0;
  int64_t bytes_written = 0;
  int64_t bytes_read = 0;
  std::array<int64_t, kNumDiskResults> errors{};  // by DiskResult; errors[kOk] stays 0
  bool degraded = false;
};

class DiskTier {
 public:
  // Creates the directory, wipes (persist=false) or loads (persist=true) the tier's files, and
  // starts the I/O thread. A persisted index that is unreadable, corrupt or of another
  // fingerprint/geometry is discarded with its slab files (logged), not an error. Errors:
  // InvalidArgument for bad options; FailedPrecondition when another tier (in this process or
  // another) has the directory; the file layer's error when the directory is unusable.
  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);
  // Finishes queued operations, saves the index (persist mode) and stops the I/O thread.
  ~DiskTier();
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  // Queues a write of one block under `key` (replacing any block under that key), taking the
  // buffer. REQUIRES: bytes.size() == block_bytes. When the tier is full it first evicts the
  // least recently written unpinned keys (each reported as a kEvicted completion). Returns false,
  // changing nothing, when the tier is degraded or every slot holds a pinned block. A pinned
  // block is never evicted; Unpin or Erase releases it (use it for a swapped-out sequence).
  bool SubmitWrite(uint64_t key, std::vector<std::byte> bytes, bool pinned = false);
  // Queues a read of `key` into `dst`, which the caller keeps alive and untouched until the
  // completion with `tag` arrives. REQUIRES: dst.size() == block_bytes. Returns false (nothing
  // queued, no completion) when `key` is not in the index.
  bool SubmitRead(uint64_t key, std::span<std::byte> dst, uint64_t tag);
  // Completions since the last call (never blocks), in completion order. Completions taken by
  // WaitForRead are not repeated here.
  std::vector<DiskCompletion> PollCompletions();
  // Blocks until the read with `tag` completes and returns its completion; nullopt when no such
  // read is queued or pending collection.
  std::optional<DiskCompletion> WaitForRead(uint64_t tag);
  // Blocks until every queued operation has completed (their completions stay for Poll).
  void Flush();

  bool Contains(uint64_t key) const;
  // Drops `key` (its slot is reused by later writes; a read already queued still runs first).
  void Erase(uint64_t key);
  void Unpin(uint64_t key);
  // Keys in the index, least recently written first: after a restart in persist mode, what the
  // server may reuse.
  std::vector<uint64_t> Keys() const;
  DiskTierStats stats() const;
  bool degraded() const;

  // Persist mode: waits for queued writes, makes the slab files durable and atomically replaces
  // the index file (temp file, fsync, rename, fsync dir). FailedPrecondition when persist=false.
  [[nodiscard]] absl::Status SaveIndex();

 private:
  struct Geometry {
    int64_t slot_bytes = 0;
    int64_t num_slots = 0;
    int64_t slots_per_file = 0;
    int64_t num_files = 0;
  };

  DiskTier(const DiskTierOptions& options, FileLayer& files, Geometry geometry);
  absl::Status Start();

  enum class OpKind : uint8_t { kWrite, kRead, kSaveIndex };
  struct Op {
    OpKind kind = OpKind::kWrite;
    uint64_t key = 0;
    int64_t slot = 0;
    uint64_t write_seq = 0;              // the entry version this op belongs to
    std::vector<std::byte> bytes{};      // kWrite: the payload
    std::span<std::byte> dst{};          // kRead: where the payload goes
    uint64_t tag = 0;                    // kRead
    std::optional<uint64_t> checksum{};  // kRead: the payload XXH3 the index expects, if known
  };
  struct Entry {
    int64_t slot = 0;
    uint64_t write_seq = 0;  // order of writes: the LRU order, and the version of the entry
    bool pinned = false;
    bool on_disk = false;   // its write completed OK (or it came from a persisted index)
    uint64_t checksum = 0;  // valid when on_disk
    std::list<uint64_t>::iterator lru_pos{};  // valid when !pinned
  };
  using Index = std::unordered_map<uint64_t, Entry>;

  std::string PathOf(const std::string& name) const { return options_.path + "/" + name; }
  absl::Status WipeOwnFiles(const std::vector<std::string>& names);
  std::vector<internal::IndexEntry> LoadPersistedIndex(const std::vector<std::string>& names);
  absl::Status OpenSlabFiles(const std::vector<std::string>& names,
                             std::vector<internal::IndexEntry>& kept);

  // All below with mu_ held.
  void InsertEntry(uint64_t key, Entry entry);
  void RemoveEntry(Index::iterator it);
  bool IsCurrent(Index::iterator it, const Op& op) const {
    return it != index_.end() && it->second.slot == op.slot && it->second.write_seq == op.write_seq;
  }
  void Degrade(DiskResult cause, const absl::Status& status);
  // Ends a degraded state caused by a full disk once no_space_retry_ms have passed; returns
  // whether writes are allowed again (the next growing write checks statvfs anew).
  bool RetryAfterNoSpace();
  void Complete(const Op& op, DiskResult result, uint64_t checksum);

  // I/O thread.
  void Run();
  DiskResult ExecuteWrite(const Op& op, uint64_t& checksum);
  DiskResult ExecuteRead(const Op& op);
  absl::Status WriteIndexFile();
  int64_t FileOf(int64_t slot) const { return slot / geo_.slots_per_file; }
  int64_t OffsetOf(int64_t slot) const { return slot % geo_.slots_per_file * geo_.slot_bytes; }

  const DiskTierOptions options_;
  FileLayer& files_;
  const Geometry geo_;
  std::unique_ptr<FileLock> dir_lock_;
  std::thread thread_;

  // Touched by Start (before the thread exists) and then by the I/O thread only.
  std::vector<std::unique_ptr<File>> slabs_;
  std::vector<int64_t> slab_sizes_;
  std::vector<bool> slab_unsynced_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // the I/O thread waits for work
  std::condition_variable done_cv_;  // callers wait for completions
  Index index_;
  std::list<uint64_t> lru_;  // unpinned keys, least recently written first
  std::set<int64_t> free_slots_;
  uint64_t next_write_seq_ = 1;
  std::deque<Op> queue_;
  int64_t num_in_flight_ = 0;
  std::vector<DiskCompletion> completions_;
  std::unordered_multiset<uint64_t> pending_read_tags_;
  bool stopping_ = false;
  bool degraded_ = false;
  DiskResult degraded_cause_ = DiskResult::kOk;
  std::chrono::steady_clock::time_point degraded_since_;
  bool index_dirty_ = false;  // persist mode: the on-disk index is older than index_
  uint64_t saves_requested_ = 0;
  uint64_t saves_done_ = 0;
  absl::Status last_save_status_;
  DiskTierStats stats_;
};

}  // namespace spillway::kvcache
