// HostTier: the host-RAM tier of the KV cache — a fixed number of block-sized slots in one
// buffer (--kv-host-bytes / block bytes), each holding the bytes of one KV block that left the
// device, indexed by its BlockKey, with a least-recently-used list of the slots that may be
// evicted. Only bookkeeping and bytes live here; TierManager (tier_manager.h) decides what
// moves where. Engine-loop thread only.
//
// Every slot is in exactly one of four states:
//
//   free       on the free list
//   reserved   taken by TakeFree, or left the index by Detach; not indexed (a copy into or
//              out of it is under way)
//   cached     indexed under its key; on the LRU list unless pinned
//   pinned     cached with pin count > 0 (a copy into it is in flight, or it is about to be
//              loaded back); never evicted
//
// The buffer comes from the backend (BlockIo::AllocateHostBuffer: pinned memory for a GPU) or
// is plain memory allocated uninitialised, so untouched slots cost no resident memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvcache/block_io.h"
#include "kvcache/block_pool.h"
#include "kvcache/ids.h"

namespace spillway::kvcache {

class HostTier {
 public:
  // `storage` holds at least num_slots * block_bytes bytes; null: plain memory.
  HostTier(int32_t num_slots, int64_t block_bytes, std::unique_ptr<HostBuffer> storage = nullptr);

  int32_t num_slots() const { return static_cast<int32_t>(states_.size()); }
  int64_t block_bytes() const { return block_bytes_; }
  // Slots that are not free (reserved or cached).
  int32_t num_used() const { return num_slots() - static_cast<int32_t>(free_.size()); }
  int32_t num_cached() const { return static_cast<int32_t>(index_.size()); }

  // TakeFree reserves the oldest free slot; nullopt when none is free (it never evicts).
  std::optional<int32_t> TakeFree();
  // The cached, unpinned slot least recently inserted or touched: the next to evict.
  std::optional<int32_t> NextVictim() const;
  // Insert indexes reserved slot `slot` under `key`; it becomes the most recently used.
  // Returns false (and frees the slot) when `key.hash` is already indexed.
  bool Insert(int32_t slot, const BlockKey& key);
  // The cached slot with exactly this key (hash, parent and tokens). Pins nothing.
  std::optional<int32_t> Lookup(const BlockKey& key) const;
  // The cached slot indexed under `hash`, if any.
  std::optional<int32_t> Find(BlockHash hash) const;
  // REQUIRES: `slot` is cached.
  const BlockKey& key(int32_t slot) const;

  // Pin keeps a cached slot from eviction until the matching Unpin.
  void Pin(int32_t slot);
  void Unpin(int32_t slot);
  // Detach takes a cached slot out of the index (and the LRU list, and drops its pins): it is
  // reserved again, its bytes kept until Free (a copy out of it is still under way).
  void Detach(int32_t slot);
  // Free returns a reserved or cached slot to the free list (it leaves the index).
  // REQUIRES: not pinned.
  void Free(int32_t slot);

  // The slot's bytes ([block_bytes]).
  std::span<std::byte> bytes(int32_t slot);

  // For tests: free list in TakeFree order, eviction order (next victim first), the index as
  // (hash, slot) pairs sorted by slot, and pin counts.
  std::vector<int32_t> FreeListForTesting() const { return {free_.begin(), free_.end()}; }
  std::vector<int32_t> EvictionOrderForTesting() const { return {lru_.begin(), lru_.end()}; }
  std::vector<std::pair<BlockHash, int32_t>> IndexForTesting() const;
  int32_t pins(int32_t slot) const { return pins_[Check(slot)]; }

 private:
  enum class State : uint8_t { kFree, kReserved, kCached };
  size_t Check(int32_t slot) const;

  const int64_t block_bytes_;
  std::unique_ptr<HostBuffer> storage_;  // [num_slots, block_bytes]
  std::vector<State> states_;
  std::vector<int32_t> pins_;
  std::vector<BlockKey> keys_;  // valid while cached
  std::deque<int32_t> free_;
  std::list<int32_t> lru_;  // cached and unpinned, least recently used first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::unordered_map<BlockHash, int32_t> index_;
};

}  // namespace spillway::kvcache
