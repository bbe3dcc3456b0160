// TierManager: moves KV blocks between the device tier (the backend's KV pool, bookkept by
// BlockPool), the host tier (HostTier, RAM) and the SSD tier (DiskTier, kvcache/disk/). KvCache
// (kv_cache.h) is its one user and calls it at these points:
//
//   device block evicted  -> StartSpill: a device -> host copy of its bytes into a host slot
//                            starts (BlockIo, asynchronous); the device block stays "in
//                            flight" (neither free nor cached) until the copy completes, then
//                            goes back to KvCache (TakeSpilledBlocks) for the free list. A host
//                            slot that has to make room goes to the SSD (a write on the disk's
//                            I/O thread) unless the SSD already holds that block
//   prefix lookup         -> Locate: is the next block of a prefix on host or SSD, and is
//                            loading it cheaper than recomputing it (WorthLoading)?
//   admission             -> Prefetch: SSD reads into host (async); Poll collects them
//   Grow with a host hit  -> LoadToDevice: a host -> device copy starts; the block is the
//                            device's at once (the backend orders the next forward pass after
//                            the copy); the host slot is freed when the copy completes
//   every engine step     -> Poll: finished copies and SSD operations
//
// Blocks are identified by their BlockKey (chained prefix hash, parent, tokens) in every tier,
// so a block table never names a lower-tier block: only cold blocks (cached, no reference) move
// down, and a block comes back as a new device block under the same key. Device and host are
// exclusive (a block lives in one of them); the SSD keeps its copy after a load (it is the
// persistent tier, and a later spill of the same block then needs no write).
//
// Copy rules (docs/kv-tiers.md, "Asynchronous copies"): a device block is not handed out while
// its spill reads it; a host slot is neither evicted (to the SSD) nor loaded from while a spill
// writes it (a load waits for that one copy); a host slot being loaded from has left the index
// and is freed only when its copy completes; a device block is not spilled while a load writes
// it (the spill waits for that one copy). So copies may complete in any order.
//
// SSD payloads start with the block's full key (kDiskKeyBytes), checked on every read, so a
// 64-bit hash collision or a block of another prefix is a miss, never wrong KV.
//
// Engine-loop thread only.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kvcache/block_io.h"
#include "kvcache/block_pool.h"
#include "kvcache/disk/disk_tier.h"
#include "kvcache/host_tier.h"
#include "kvcache/ids.h"

namespace spillway::kvcache {

enum class Tier : uint8_t { kDevice, kHost, kDisk };
inline constexpr int kNumTiers = 3;
// "device", "host", "disk" (metric labels).
std::string_view TierName(Tier tier);

// Bytes of the key stored in front of every SSD payload: hash, parent, tokens.
inline constexpr int64_t kDiskKeyBytes = 16 + kBlockTokens * static_cast<int64_t>(sizeof(TokenId));

// Estimated cost of bringing one block back from each tier and of recomputing it. The
// defaults are starting points; every completed load or forward pass updates the estimate
// (exponential moving average), so the choice follows what this machine measures. A tier whose
// estimate is above recompute's is still tried now and then (TierManager::Options::
// explore_every), so that a tier that got faster again is measured again.
struct TierCosts {
  double host_us_per_block = 50;
  double disk_us_per_block = 1'000;
  double recompute_us_per_block = 5'000;
};

// Upper bounds (seconds) of the load-time histogram buckets (spillway_kv_load_seconds).
inline constexpr std::array<double, 10> kLoadSecondsBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1};

// Cumulative counters and current occupancy of the lower tiers.
struct TierStats {
  int32_t host_slots = 0;
  int32_t host_used = 0;  // slots holding a block
  bool disk_enabled = false;
  bool disk_degraded = false;
  int64_t disk_capacity_blocks = 0;
  int64_t disk_blocks = 0;
  int64_t spills_device_host = 0;  // blocks
  int64_t spills_host_disk = 0;    // blocks written to the SSD
  int64_t loads_host_device = 0;
  int64_t loads_disk_host = 0;
  int64_t bytes_device_host = 0;
  int64_t bytes_host_disk = 0;
  int64_t bytes_host_device = 0;
  int64_t bytes_disk_host = 0;
  int64_t host_errors = 0;  // a backend copy that failed
  // Device <-> host copies in flight now, and the times the engine thread blocked on one (an
  // allocation that found no free block but a spill in flight, a load from a slot a spill was
  // still writing, a spill of a block a load was still writing).
  int32_t spills_in_flight = 0;
  int32_t loads_in_flight = 0;
  int64_t copy_waits = 0;
  // SSD misses and failures by DiskResult (index 0 unused), plus reads whose stored key was
  // not the expected one (key_mismatch).
  std::array<int64_t, kNumDiskResults> disk_errors{};
  int64_t disk_key_mismatches = 0;
  // spillway_kv_load_seconds: one observation per block brought back to the device or host.
  std::array<int64_t, kLoadSecondsBuckets.size() + 1> load_buckets{};  // last: +Inf
  double load_seconds_sum = 0;
  TierCosts costs = {};
  // Times a tier whose estimate lost to recompute was opened for one more measurement.
  int64_t explorations = 0;
};

class TierManager {
 public:
  struct Options {
    int32_t host_slots = 0;
    // May be null (no SSD tier). Its block_bytes must be io.block_bytes() + kDiskKeyBytes.
    std::unique_ptr<DiskTier> disk = nullptr;
    TierCosts costs = {};
    // A lower tier whose estimate is above recompute's gets one more chance to be measured
    // after every `explore_every` forward passes observed (ObserveRecompute) while it lost:
    // WorthLoading then says yes until its next load (or failed SSD read) is measured. Without
    // this a tier that lost once would never be loaded, so never measured, again. 0: never.
    int32_t explore_every = 16;
    // Spill ahead: when the device pool's free list runs dry, KvCache starts the spills of
    // this many least recently used cached blocks at once, so that later allocations find free
    // blocks instead of waiting for a copy (docs/kv-tiers.md). 0: spill only on demand.
    int32_t spill_ahead_blocks = 0;
  };
  // `io` must outlive the manager.
  TierManager(BlockIo& io, Options options);
  // The same, owning `io`.
  TierManager(std::unique_ptr<BlockIo> io, Options options);
  ~TierManager();

  int64_t block_bytes() const { return io_.block_bytes(); }

  // StartSpill starts copying device block `id`, cached under `key` and just evicted from the
  // pool (the caller holds it), into a host slot, making room by moving the least recently
  // used host block to the SSD (or dropping it). Returns true when the copy is in flight: the
  // block then belongs to the manager until TakeSpilledBlocks returns it. False (no host slot
  // to be had, or the host tier already holds the key): nothing started, the caller keeps the
  // block. Never fails.
  bool StartSpill(BlockId id, const BlockKey& key);
  // WaitForSpill blocks until the oldest spill in flight completes (its block then comes out
  // of TakeSpilledBlocks). REQUIRES: num_spills_in_flight() > 0.
  void WaitForSpill();
  // Device blocks whose spills completed since the last call; the caller frees them.
  std::vector<BlockId> TakeSpilledBlocks() { return std::exchange(spilled_, {}); }
  // Spills in flight plus blocks not yet taken by TakeSpilledBlocks.
  int32_t num_spills_in_flight() const {
    return static_cast<int32_t>(spills_.size() + spilled_.size());
  }
  int32_t num_loads_in_flight() const { return static_cast<int32_t>(loads_.size()); }
  // True while a host -> device copy into device block `id` is in flight.
  bool loading(BlockId id) const { return load_of_block_.contains(id); }
  int32_t spill_ahead_blocks() const { return spill_ahead_blocks_; }
  // For tests: the device blocks counted by num_spills_in_flight().
  std::vector<BlockId> SpillingBlocksForTesting() const;
  // Locate says where the block with `key` lives below the device: kHost (exact key), kDisk
  // (hash in the SSD index; the key is checked when read), or nullopt.
  std::optional<Tier> Locate(const BlockKey& key) const;
  // True when loading a block from `tier` is estimated to be faster than recomputing it, or
  // when the tier is being explored (Options::explore_every).
  bool WorthLoading(Tier tier) const;

  // PinHost keeps the host copy of `key` from eviction until LoadToDevice or UnpinHost.
  // REQUIRES: Locate(key) == kHost.
  void PinHost(const BlockKey& key);
  void UnpinHost(const BlockKey& key);
  // LoadToDevice starts copying the pinned host block `key` into device block `id`: the key
  // leaves the host index at once (the block is the device's now; the backend orders forward
  // passes after the copy), and the slot is freed when the copy completes. Waits first when a
  // spill is still writing that slot. Returns the tier the block was found in by its prefix
  // lookup (kHost, or kDisk for a block that a prefetch brought up), or an error when that
  // spill failed (the block is then not on the host tier any more).
  absl::StatusOr<Tier> LoadToDevice(const BlockKey& key, BlockId id);
  // A device block now holds `hash`: a host copy would be a second home, so it is dropped.
  void OnDeviceRegistered(BlockHash hash);

  // Prefetch queues SSD reads of those `keys` that live only on the SSD (up to the host tier's
  // free capacity) and returns how many of `keys` are being read now.
  int32_t Prefetch(std::span<const BlockKey> keys);
  // How many of `keys` have a read in flight.
  int32_t NumLoading(std::span<const BlockKey> keys) const;
  int32_t num_loading() const { return static_cast<int32_t>(reads_.size()); }
  // Poll collects finished copies (completed spills' device blocks go to TakeSpilledBlocks)
  // and SSD operations (reads whose key checks out enter the host tier). Never blocks.
  void Poll();

  // A forward pass computed `num_tokens` tokens in `seconds` (updates the recompute cost, and
  // counts towards exploring a tier that loses to recompute).
  void ObserveRecompute(int32_t num_tokens, double seconds);
  // True while `tier` (kHost or kDisk) is open for one exploratory load.
  bool exploring(Tier tier) const { return explore_[static_cast<int>(tier)]; }

  TierStats stats() const;
  const HostTier& host() const { return host_; }
  DiskTier* disk() const { return disk_.get(); }

 private:
  struct Read {
    BlockKey key;
    std::vector<std::byte> buffer;  // [kDiskKeyBytes + block_bytes]
    std::chrono::steady_clock::time_point start;
  };
  // A device -> host copy in flight: the device block, the host slot it fills, and whether the
  // slot left the index meanwhile (the key was computed on the device again: one home).
  struct Spill {
    BlockId block = 0;
    int32_t slot = 0;
    bool detached = false;
  };
  // A host -> device copy in flight: the device block and the (detached) slot it reads.
  struct Load {
    BlockId block = 0;
    int32_t slot = 0;
  };
  void FinishCopy(const CopyDone& done);
  // Finishes the copies that completed (never blocks).
  void CollectCopies();
  // Blocks until copy `ticket` (a spill or a load) completes, and finishes it.
  void WaitFor(CopyTicket ticket);
  // A reserved host slot, evicting the LRU host block (to the SSD) when none is free.
  std::optional<int32_t> AcquireHostSlot();
  // Frees host slot `slot`, writing its block to the SSD first when the SSD lacks it.
  void EvictHostSlot(int32_t slot);
  void FinishRead(const DiskCompletion& c);
  void ObserveLoad(double seconds);
  // A load from `tier` was measured (or failed): its exploration, if any, is over.
  void EndExploration(Tier tier);

  std::unique_ptr<BlockIo> owned_io_;  // null when the caller owns io_
  BlockIo& io_;
  HostTier host_;
  std::unique_ptr<DiskTier> disk_;
  TierCosts costs_;
  int32_t explore_every_;
  // Per tier (indexed by Tier): forward passes observed since the tier last lost without an
  // exploration, and whether it is open for an exploratory load now.
  std::array<int32_t, kNumTiers> lost_passes_{};
  std::array<bool, kNumTiers> explore_{};
  int32_t spill_ahead_blocks_;
  std::map<CopyTicket, Spill> spills_;  // oldest first
  std::unordered_map<CopyTicket, Load> loads_;
  std::unordered_map<int32_t, CopyTicket> spill_of_slot_;
  std::unordered_map<BlockId, CopyTicket> load_of_block_;
  std::vector<BlockId> spilled_;              // spills completed, blocks not yet taken
  std::vector<CopyDone> copies_done_;         // PollCopies' buffer, kept for its capacity
  std::unordered_map<uint64_t, Read> reads_;  // by tag
  std::unordered_set<BlockHash> reading_;     // hashes with a read in flight
  std::unordered_set<BlockHash> from_disk_;   // host blocks a prefetch brought up
  uint64_t next_tag_ = 1;
  // When Poll last ran, and the time before that (the SSD cost estimate, FinishRead).
  std::chrono::steady_clock::time_point last_poll_{}, previous_poll_{};
  TierStats counters_;
};

}  // namespace spillway::kvcache
