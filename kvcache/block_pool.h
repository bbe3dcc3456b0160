// BlockPool: the fixed set of KV blocks of one tier — a reference count per block, the free
// list, and the prefix index (block key -> block) with its least-recently-used list of cached
// blocks that no sequence uses. Only bookkeeping lives here; the KV tensors belong to the
// backend, indexed by BlockId. KvCache (kv_cache.h) is its one user. Engine-loop thread only.
//
// Every block is in exactly one of three states:
//
//   in use      ref_count > 0 (it may also be cached: indexed under its key)
//   evictable   ref_count == 0, cached; on the LRU list, least recently released first
//   free        ref_count == 0, not cached; on the free list
//
// Allocate takes a free block first and evicts the least recently used evictable block only
// when no free block is left (vLLM's BlockPool, with uncached blocks preferred).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvcache/ids.h"

namespace spillway::kvcache {

// What a cached block holds: its key, its parent's key and its tokens. Lookups compare all
// three, so a 64-bit hash collision can cost a cache miss but never a wrong match.
struct BlockKey {
  BlockHash hash = 0;
  BlockHash parent = 0;
  std::array<TokenId, kBlockTokens> tokens{};
};

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  // Blocks Allocate can hand out: free plus evictable.
  int32_t num_free() const { return static_cast<int32_t>(free_.size() + lru_.size()); }
  int32_t num_evictable() const { return static_cast<int32_t>(lru_.size()); }
  int32_t num_cached() const { return static_cast<int32_t>(index_.size()); }

  // Takes the oldest free block, or else evicts the least recently used evictable block (it
  // leaves the index). Its ref count becomes 1. nullopt when neither exists.
  std::optional<BlockId> Allocate();
  // Adds a reference. An evictable block leaves the LRU list and is in use again.
  // REQUIRES: ref_count(id) > 0 or is_cached(id).
  void AddRef(BlockId id);
  // Drops a reference. At zero a cached block goes to the back of the LRU list (most recently
  // used), any other to the back of the free list. REQUIRES: ref_count(id) > 0.
  void Release(BlockId id);
  int32_t ref_count(BlockId id) const;

  // Indexes block `id` under `key.hash`. Returns false (and changes nothing) when that hash is
  // already indexed or `id` already is: the first block computed for a prefix stays the one
  // found. REQUIRES: ref_count(id) > 0.
  bool Register(BlockId id, const BlockKey& key);
  // The cached block with exactly this key (hash, parent and tokens), if any. Pins nothing.
  std::optional<BlockId> Lookup(const BlockKey& key) const;
  bool is_cached(BlockId id) const { return keys_[Check(id)].has_value(); }
  // REQUIRES: is_cached(id).
  BlockHash hash(BlockId id) const;
  const BlockKey& key(BlockId id) const;
  // The block the next Allocate will evict (the least recently used evictable block), or
  // nullopt when it will take a free block or find none.
  std::optional<BlockId> NextEviction() const;

  // For tests: the free list in the order Allocate takes it, the evictable blocks least
  // recently used first, and the index as (hash, block) pairs sorted by block.
  std::vector<BlockId> FreeListForTesting() const { return {free_.begin(), free_.end()}; }
  std::vector<BlockId> EvictionOrderForTesting() const { return {lru_.begin(), lru_.end()}; }
  std::vector<std::pair<BlockHash, BlockId>> IndexForTesting() const;

 private:
  size_t Check(BlockId id) const;
  void Evict(BlockId id);

  std::vector<int32_t> ref_counts_;
  std::deque<BlockId> free_;
  std::list<BlockId> lru_;                             // evictable, oldest first
  std::vector<std::list<BlockId>::iterator> lru_pos_;  // valid while the block is evictable
  std::vector<std::optional<BlockKey>> keys_;          // set while the block is cached
  std::unordered_map<BlockHash, BlockId> index_;
};

}  // namespace spillway::kvcache
