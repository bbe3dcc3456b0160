#include "kvcache/disk/disk_tier.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kvcache/disk/internal/disk_format.h"
#include "spdlog/spdlog.h"

namespace spillway::kvcache {

using internal::IndexEntry;
using internal::IndexFile;
using internal::kEncodedHeaderBytes;
using internal::kSlotHeaderBytes;

std::string_view DiskResultName(DiskResult result) {
  switch (result) {
    case DiskResult::kOk:
      return "ok";
    case DiskResult::kNotFound:
      return "not_found";
    case DiskResult::kHeaderMismatch:
      return "header";
    case DiskResult::kChecksumMismatch:
      return "checksum";
    case DiskResult::kShortRead:
      return "short_read";
    case DiskResult::kIoError:
      return "io_error";
    case DiskResult::kNoSpace:
      return "no_space";
    case DiskResult::kDropped:
      return "dropped";
  }
  return "unknown";
}

namespace {

constexpr char kIndexName[] = "index.spw";
constexpr char kIndexTempName[] = "index.spw.tmp";
constexpr char kLockName[] = "tier.lock";

std::string SlabName(int64_t file) { return absl::StrFormat("slab-%05d.spw", file); }

// The only names the tier creates, and so the only ones it ever removes.
bool IsOwnFile(const std::string& name) {
  return name == kIndexName || name == kIndexTempName ||
         (absl::StartsWith(name, "slab-") && absl::EndsWith(name, ".spw"));
}

DiskResult ResultOf(const absl::Status& status) {
  if (absl::IsResourceExhausted(status)) return DiskResult::kNoSpace;
  if (absl::IsNotFound(status)) return DiskResult::kNotFound;
  return DiskResult::kIoError;
}

// Reads a whole small file (the index).
absl::StatusOr<std::vector<std::byte>> ReadWholeFile(FileLayer& files, const std::string& path) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<File> file, files.Open(path, OpenMode::kRead));
  SPW_ASSIGN_OR_RETURN(int64_t size, file->Size());
  std::vector<std::byte> bytes(size);
  SPW_ASSIGN_OR_RETURN(int64_t n, file->ReadAt(0, bytes));
  bytes.resize(n);
  return bytes;
}

}  // namespace

// NOTE(disk): one mutex guards the index and the queues; the I/O thread holds it only to pop
// an operation and to record its outcome, never during I/O, so the engine thread's calls wait
// at most for that bookkeeping. One I/O thread executing operations in submission order is what
// makes slot reuse safe without pins: a read queued before a write to the same slot runs first.
DiskTier::DiskTier(const DiskTierOptions& options, FileLayer& files, Geometry geometry)
    : options_(options), files_(files), geo_(geometry) {}

DiskTier::~DiskTier() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status DiskTier::WipeOwnFiles(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (!IsOwnFile(name)) continue;
    absl::Status status = files_.Remove(PathOf(name));
    if (!status.ok() && !absl::IsNotFound(status)) return status;
  }
  return absl::OkStatus();
}

// The entries of a persisted index that this tier can reuse, oldest first; empty (with a log
// line) when there is none or it does not match this model and geometry.
std::vector<IndexEntry> DiskTier::LoadPersistedIndex(const std::vector<std::string>& names) {
  if (std::find(names.begin(), names.end(), kIndexName) == names.end()) return {};
  absl::StatusOr<IndexFile> index = [&]() -> absl::StatusOr<IndexFile> {
    SPW_ASSIGN_OR_RETURN(std::vector<std::byte> bytes, ReadWholeFile(files_, PathOf(kIndexName)));
    return internal::DecodeIndex(bytes);
  }();
  if (!index.ok()) {
    spdlog::warn("kv disk tier {}: discarding the persisted index and its blocks: {}",
                 options_.path, index.status().ToString());
    return {};
  }
  if (index->layout_fingerprint != options_.layout_fingerprint ||
      index->block_bytes != options_.block_bytes || index->slot_bytes != geo_.slot_bytes ||
      index->slots_per_file != geo_.slots_per_file) {
    spdlog::warn(
        "kv disk tier {}: discarding {} persisted blocks of another model or KV layout "
        "(fingerprint {:#x}, {} bytes per block; this server: {:#x}, {} bytes per block)",
        options_.path, index->entries.size(), index->layout_fingerprint, index->block_bytes,
        options_.layout_fingerprint, options_.block_bytes);
    return {};
  }
  std::vector<IndexEntry> kept;
  std::unordered_set<uint64_t> keys;
  std::unordered_set<int64_t> slots;
  for (const IndexEntry& e : index->entries) {
    // A smaller capacity drops the slots beyond it; duplicates would mean a corrupt writer.
    if (e.slot < 0 || e.slot >= geo_.num_slots) continue;
    if (!keys.insert(e.key).second || !slots.insert(e.slot).second) continue;
    kept.push_back(e);
  }
  return kept;
}

// Opens (creating) every slab file; entries whose slab file was missing are dropped from `kept`.
absl::Status DiskTier::OpenSlabFiles(const std::vector<std::string>& names,
                                     std::vector<IndexEntry>& kept) {
  std::vector<bool> existed(geo_.num_files);
  for (int64_t f = 0; f < geo_.num_files; ++f) {
    existed[f] = std::find(names.begin(), names.end(), SlabName(f)) != names.end();
    SPW_ASSIGN_OR_RETURN(std::unique_ptr<File> file,
                         files_.Open(PathOf(SlabName(f)), OpenMode::kReadWrite));
    SPW_ASSIGN_OR_RETURN(int64_t size, file->Size());
    slabs_.push_back(std::move(file));
    slab_sizes_.push_back(size);
    slab_unsynced_.push_back(false);
  }
  size_t before = kept.size();
  std::erase_if(kept, [&](const IndexEntry& e) { return !existed[FileOf(e.slot)]; });
  if (kept.size() != before) {
    spdlog::warn("kv disk tier {}: {} persisted blocks lost with their missing slab files",
                 options_.path, before - kept.size());
  }
  return absl::OkStatus();
}

absl::Status DiskTier::Start() {
  SPW_RETURN_IF_ERROR(files_.CreateDir(options_.path));
  // NOTE(disk): two tiers in one directory would overwrite each other's slots; the lock file
  // is not one of the tier's own files, so a wipe never removes it while it is held.
  SPW_ASSIGN_OR_RETURN(dir_lock_, files_.LockFile(PathOf(kLockName)));
  SPW_ASSIGN_OR_RETURN(std::vector<std::string> names, files_.ListDir(options_.path));
  std::vector<IndexEntry> kept;
  if (options_.persist) kept = LoadPersistedIndex(names);
  if (kept.empty()) {
    SPW_RETURN_IF_ERROR(WipeOwnFiles(names));
    SPW_ASSIGN_OR_RETURN(names, files_.ListDir(options_.path));
  } else {
    // Slab files beyond this capacity and a half-written index are not needed.
    for (const std::string& name : names) {
      bool in_use = name == kIndexName;
      for (int64_t f = 0; f < geo_.num_files && !in_use; ++f) in_use = name == SlabName(f);
      if (IsOwnFile(name) && !in_use) SPW_RETURN_IF_ERROR(files_.Remove(PathOf(name)));
    }
  }
  SPW_RETURN_IF_ERROR(OpenSlabFiles(names, kept));

  std::lock_guard lock(mu_);
  for (int64_t s = 0; s < geo_.num_slots; ++s) free_slots_.insert(s);
  for (const IndexEntry& e : kept) {
    free_slots_.erase(e.slot);
    InsertEntry(e.key, Entry{.slot = e.slot,
                             .write_seq = next_write_seq_++,
                             .on_disk = true,
                             .checksum = e.payload_checksum});
  }
  if (!kept.empty()) {
    spdlog::info("kv disk tier {}: reusing {} persisted blocks", options_.path, kept.size());
  }
  stats_.capacity_blocks = geo_.num_slots;
  stats_.slot_bytes = geo_.slot_bytes;
  stats_.capacity_bytes = geo_.num_slots * geo_.slot_bytes;
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void DiskTier::InsertEntry(uint64_t key, Entry entry) {
  if (!entry.pinned) entry.lru_pos = lru_.insert(lru_.end(), key);
  index_[key] = entry;
}

void DiskTier::RemoveEntry(Index::iterator it) {
  if (!it->second.pinned) lru_.erase(it->second.lru_pos);
  free_slots_.insert(it->second.slot);
  index_.erase(it);
  index_dirty_ = true;
}

bool DiskTier::SubmitWrite(uint64_t key, std::vector<std::byte> bytes, bool pinned) {
  SPW_CHECK(std::ssize(bytes) == options_.block_bytes)
      << "a block is " << options_.block_bytes << " bytes, got " << bytes.size();
  {
    std::lock_guard lock(mu_);
    if (degraded_ && !RetryAfterNoSpace()) return false;
    int64_t slot;
    if (auto it = index_.find(key); it != index_.end()) {
      slot = it->second.slot;  // rewritten in place; queued reads of it run first
      if (!it->second.pinned) lru_.erase(it->second.lru_pos);
      index_.erase(it);
    } else {
      if (free_slots_.empty()) {
        if (lru_.empty()) return false;  // every block is pinned
        uint64_t victim = lru_.front();
        RemoveEntry(index_.find(victim));
        completions_.push_back({.op = DiskOp::kEvicted, .key = victim});
        ++stats_.num_evictions;
      }
      slot = *free_slots_.begin();
      free_slots_.erase(free_slots_.begin());
    }
    uint64_t seq = next_write_seq_++;
    InsertEntry(key, Entry{.slot = slot, .write_seq = seq, .pinned = pinned});
    queue_.push_back(Op{.kind = OpKind::kWrite,
                        .key = key,
                        .slot = slot,
                        .write_seq = seq,
                        .bytes = std::move(bytes)});
  }
  work_cv_.notify_one();
  return true;
}

bool DiskTier::SubmitRead(uint64_t key, std::span<std::byte> dst, uint64_t tag) {
  SPW_CHECK(std::ssize(dst) == options_.block_bytes)
      << "a block is " << options_.block_bytes << " bytes, got " << dst.size();
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    const Entry& e = it->second;
    queue_.push_back(Op{.kind = OpKind::kRead,
                        .key = key,
                        .slot = e.slot,
                        .write_seq = e.write_seq,
                        .dst = dst,
                        .tag = tag,
                        .checksum = e.on_disk ? std::optional(e.checksum) : std::nullopt});
    pending_read_tags_.insert(tag);
  }
  work_cv_.notify_one();
  return true;
}

std::vector<DiskCompletion> DiskTier::PollCompletions() {
  std::lock_guard lock(mu_);
  return std::exchange(completions_, {});
}

std::optional<DiskCompletion> DiskTier::WaitForRead(uint64_t tag) {
  std::unique_lock lock(mu_);
  for (;;) {
    auto it = std::find_if(completions_.begin(), completions_.end(), [&](const DiskCompletion& c) {
      return c.op == DiskOp::kRead && c.tag == tag;
    });
    if (it != completions_.end()) {
      DiskCompletion c = *it;
      completions_.erase(it);
      return c;
    }
    if (!pending_read_tags_.contains(tag)) return std::nullopt;
    done_cv_.wait(lock);
  }
}

void DiskTier::Flush() {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return queue_.empty() && num_in_flight_ == 0; });
}

bool DiskTier::Contains(uint64_t key) const {
  std::lock_guard lock(mu_);
  return index_.contains(key);
}

void DiskTier::Erase(uint64_t key) {
  std::lock_guard lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) RemoveEntry(it);
}

void DiskTier::Unpin(uint64_t key) {
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end() || !it->second.pinned) return;
  it->second.pinned = false;
  it->second.lru_pos = lru_.insert(lru_.end(), key);
}

std::vector<uint64_t> DiskTier::Keys() const {
  std::vector<std::pair<uint64_t, uint64_t>> by_seq;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, e] : index_) by_seq.emplace_back(e.write_seq, key);
  }
  std::sort(by_seq.begin(), by_seq.end());
  std::vector<uint64_t> keys;
  keys.reserve(by_seq.size());
  for (const auto& [seq, key] : by_seq) keys.push_back(key);
  return keys;
}

DiskTierStats DiskTier::stats() const {
  std::lock_guard lock(mu_);
  DiskTierStats s = stats_;
  s.num_blocks = std::ssize(index_);
  s.num_pinned_blocks = s.num_blocks - std::ssize(lru_);
  s.used_bytes = s.num_blocks * geo_.slot_bytes;
  s.num_queued_ops = std::ssize(queue_) + num_in_flight_;
  s.degraded = degraded_;
  return s;
}

bool DiskTier::degraded() const {
  std::lock_guard lock(mu_);
  return degraded_;
}

absl::Status DiskTier::SaveIndex() {
  if (!options_.persist) {
    return absl::FailedPreconditionError("the kv disk tier was opened with persist=false");
  }
  std::unique_lock lock(mu_);
  uint64_t ticket = ++saves_requested_;
  queue_.push_back(Op{.kind = OpKind::kSaveIndex});
  work_cv_.notify_one();
  done_cv_.wait(lock, [&] { return saves_done_ >= ticket; });
  return last_save_status_;
}

// With mu_ held. Sticky until restart after an I/O error (STYLE.md §6); after a full disk,
// until no_space_retry_ms have passed. Queued writes are dropped at once, which frees their
// buffers and slots; reads go on, since every read is verified anyway.
void DiskTier::Degrade(DiskResult cause, const absl::Status& status) {
  if (degraded_) return;
  degraded_ = true;
  degraded_cause_ = cause;
  degraded_since_ = std::chrono::steady_clock::now();
  const bool retry = cause == DiskResult::kNoSpace && options_.no_space_retry_ms >= 0;
  spdlog::warn(
      "kv disk tier {} degraded ({}): {}; refusing writes {}, reads of stored blocks go on",
      options_.path, DiskResultName(cause), status.ToString(),
      retry ? absl::StrFormat("for %d ms", options_.no_space_retry_ms)
            : std::string("until restart"));
  std::deque<Op> kept;
  for (Op& op : queue_) {
    if (op.kind == OpKind::kWrite) {
      Complete(op, DiskResult::kDropped, 0);
    } else {
      kept.push_back(std::move(op));
    }
  }
  queue_ = std::move(kept);
}

bool DiskTier::RetryAfterNoSpace() {
  if (degraded_cause_ != DiskResult::kNoSpace || options_.no_space_retry_ms < 0) return false;
  if (std::chrono::steady_clock::now() - degraded_since_ <
      std::chrono::milliseconds(options_.no_space_retry_ms)) {
    return false;
  }
  degraded_ = false;
  spdlog::info("kv disk tier {}: retrying writes after a full disk", options_.path);
  return true;
}

// With mu_ held: records the outcome of `op` and publishes its completion.
void DiskTier::Complete(const Op& op, DiskResult result, uint64_t checksum) {
  auto it = index_.find(op.key);
  bool current = IsCurrent(it, op);
  if (result != DiskResult::kOk) {
    ++stats_.errors[static_cast<int>(result)];
    if (current) RemoveEntry(it);  // the slot holds nothing this key can trust
  }
  if (op.kind == OpKind::kWrite) {
    if (result == DiskResult::kOk) {
      ++stats_.num_writes;
      stats_.bytes_written += options_.block_bytes;
      if (current) {
        it->second.on_disk = true;
        it->second.checksum = checksum;
        index_dirty_ = true;
      }
    }
    completions_.push_back({.op = DiskOp::kWrite, .result = result, .key = op.key});
  } else {
    if (result == DiskResult::kOk) {
      ++stats_.num_reads;
      stats_.bytes_read += options_.block_bytes;
    }
    completions_.push_back({.op = DiskOp::kRead, .result = result, .key = op.key, .tag = op.tag});
    pending_read_tags_.erase(pending_read_tags_.find(op.tag));
  }
}

void DiskTier::Run() {
  using Clock = std::chrono::steady_clock;
  const auto interval = std::chrono::milliseconds(options_.persist_interval_ms);
  const bool periodic = options_.persist && options_.persist_interval_ms > 0;
  auto next_save = Clock::now() + interval;
  std::unique_lock lock(mu_);
  for (;;) {
    if (queue_.empty() && !stopping_) {
      if (periodic && index_dirty_) {
        work_cv_.wait_until(lock, next_save);
      } else {
        work_cv_.wait(lock);
      }
    }
    bool save_due = periodic && index_dirty_ && Clock::now() >= next_save;
    if (queue_.empty() && !save_due) {
      if (stopping_) break;
      continue;
    }
    if (save_due || queue_.front().kind == OpKind::kSaveIndex) {
      bool requested = !save_due || (!queue_.empty() && queue_.front().kind == OpKind::kSaveIndex);
      if (requested) queue_.pop_front();
      ++num_in_flight_;
      lock.unlock();
      absl::Status status = WriteIndexFile();
      lock.lock();
      --num_in_flight_;
      next_save = Clock::now() + interval;
      if (requested) {
        ++saves_done_;
        last_save_status_ = status;
      }
      done_cv_.notify_all();
      continue;
    }
    Op op = std::move(queue_.front());
    queue_.pop_front();
    ++num_in_flight_;
    lock.unlock();
    uint64_t checksum = 0;
    DiskResult result = op.kind == OpKind::kWrite ? ExecuteWrite(op, checksum) : ExecuteRead(op);
    op.bytes = {};  // free the payload before taking the lock
    lock.lock();
    --num_in_flight_;
    Complete(op, result, checksum);
    done_cv_.notify_all();
  }
  lock.unlock();
  if (options_.persist) (void)WriteIndexFile();
}

DiskResult DiskTier::ExecuteWrite(const Op& op, uint64_t& checksum) {
  {
    std::lock_guard lock(mu_);
    if (degraded_) return DiskResult::kDropped;
  }
  const int64_t file = FileOf(op.slot);
  const int64_t offset = OffsetOf(op.slot);
  const int64_t end = offset + kSlotHeaderBytes + options_.block_bytes;
  absl::Status status;
  // The file grows: is there room left on the disk? (a negative reserve skips the check)
  if (options_.min_free_bytes >= 0 && end > slab_sizes_[file]) {
    absl::StatusOr<int64_t> free_bytes = files_.FreeBytes(options_.path);
    if (!free_bytes.ok()) {
      status = free_bytes.status();
    } else if (*free_bytes < options_.min_free_bytes + geo_.slot_bytes) {
      status = absl::ResourceExhaustedError(
          absl::StrFormat("%d bytes free, below the reserve of %d bytes plus one %d-byte block",
                          *free_bytes, options_.min_free_bytes, geo_.slot_bytes));
    }
  }
  // The payload first, then the header: a torn write leaves a header that does not match.
  if (status.ok()) {
    checksum = internal::PayloadChecksum(op.bytes);
    status = slabs_[file]->WriteAt(offset + kSlotHeaderBytes, op.bytes);
  }
  if (status.ok()) {
    std::vector<std::byte> header =
        internal::EncodeSlotHeader({.key = op.key,
                                    .layout_fingerprint = options_.layout_fingerprint,
                                    .payload_bytes = options_.block_bytes,
                                    .payload_checksum = checksum});
    status = slabs_[file]->WriteAt(offset, header);
  }
  if (!status.ok()) {
    DiskResult result = ResultOf(status);
    if (result == DiskResult::kNotFound) result = DiskResult::kIoError;
    std::lock_guard lock(mu_);
    Degrade(result, status);
    return result;
  }
  slab_sizes_[file] = std::max(slab_sizes_[file], end);
  slab_unsynced_[file] = true;
  return DiskResult::kOk;
}

DiskResult DiskTier::ExecuteRead(const Op& op) {
  File& slab = *slabs_[FileOf(op.slot)];
  const int64_t offset = OffsetOf(op.slot);
  std::array<std::byte, kEncodedHeaderBytes> header_bytes;
  absl::StatusOr<int64_t> n = slab.ReadAt(offset, header_bytes);
  if (!n.ok()) return ResultOf(n.status());
  if (*n < kEncodedHeaderBytes) return DiskResult::kShortRead;
  absl::StatusOr<internal::SlotHeader> header = internal::DecodeSlotHeader(header_bytes);
  if (!header.ok() || header->key != op.key ||
      header->layout_fingerprint != options_.layout_fingerprint ||
      header->payload_bytes != options_.block_bytes ||
      (op.checksum && header->payload_checksum != *op.checksum)) {
    return DiskResult::kHeaderMismatch;
  }
  n = slab.ReadAt(offset + kSlotHeaderBytes, op.dst);
  if (!n.ok()) return ResultOf(n.status());
  if (*n < options_.block_bytes) return DiskResult::kShortRead;
  if (internal::PayloadChecksum(op.dst) != header->payload_checksum) {
    return DiskResult::kChecksumMismatch;
  }
  return DiskResult::kOk;
}

// I/O thread. Makes the slab files durable, then replaces the index atomically: the index never
// names a block whose bytes may not be on disk yet.
absl::Status DiskTier::WriteIndexFile() {
  IndexFile index{.layout_fingerprint = options_.layout_fingerprint,
                  .block_bytes = options_.block_bytes,
                  .slot_bytes = geo_.slot_bytes,
                  .slots_per_file = geo_.slots_per_file,
                  .num_slots = geo_.num_slots};
  {
    std::lock_guard lock(mu_);
    std::vector<std::pair<uint64_t, IndexEntry>> by_seq;
    for (const auto& [key, e] : index_) {
      // Pinned blocks belong to sequences that do not outlive the process.
      if (!e.on_disk || e.pinned) continue;
      by_seq.push_back({e.write_seq, {.key = key, .payload_checksum = e.checksum, .slot = e.slot}});
    }
    std::sort(by_seq.begin(), by_seq.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [seq, entry] : by_seq) index.entries.push_back(entry);
    index_dirty_ = false;
  }
  absl::Status status = [&]() -> absl::Status {
    for (size_t f = 0; f < slabs_.size(); ++f) {
      if (!slab_unsynced_[f]) continue;
      SPW_RETURN_IF_ERROR(slabs_[f]->Sync());
      slab_unsynced_[f] = false;
    }
    const std::string temp = PathOf(kIndexTempName);
    {
      SPW_ASSIGN_OR_RETURN(std::unique_ptr<File> file, files_.Open(temp, OpenMode::kTruncate));
      SPW_RETURN_IF_ERROR(file->WriteAt(0, internal::EncodeIndex(index)));
      SPW_RETURN_IF_ERROR(file->Sync());
    }
    SPW_RETURN_IF_ERROR(files_.Rename(temp, PathOf(kIndexName)));
    return files_.SyncDir(options_.path);
  }();
  if (!status.ok()) {
    spdlog::warn("kv disk tier {}: could not save the index: {}", options_.path, status.ToString());
    std::lock_guard lock(mu_);
    index_dirty_ = true;
  }
  return status;
}

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("kv disk tier: empty path");
  if (options.block_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kv disk tier: block_bytes is %d; it must be > 0", options.block_bytes));
  }
  Geometry geo;
  geo.slot_bytes = internal::SlotBytes(options.block_bytes);
  geo.num_slots = options.capacity_bytes / geo.slot_bytes;
  if (geo.num_slots < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv disk tier: capacity of %d bytes holds no block of %d bytes (%d on disk)",
        options.capacity_bytes, options.block_bytes, geo.slot_bytes));
  }
  geo.slots_per_file =
      std::min(geo.num_slots, std::max<int64_t>(1, internal::kSlabFileBytes / geo.slot_bytes));
  geo.num_files = (geo.num_slots + geo.slots_per_file - 1) / geo.slots_per_file;
  FileLayer& files = options.files != nullptr ? *options.files : PosixFileLayer();
  std::unique_ptr<DiskTier> tier(new DiskTier(options, files, geo));
  SPW_RETURN_IF_ERROR(tier->Start());
  return tier;
}

}  // namespace spillway::kvcache
