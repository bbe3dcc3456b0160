// KvCache: what the engine loop may ask of the KV cache (STYLE.md §3) — prefix lookups, room
// for a sequence's next tokens (taking cached prefix blocks), registering computed blocks in
// the prefix index, block tables, and release. "No room" is a value (nullopt), not an error.
// Lookups do not pin; Grow commits. Engine-loop thread only (no locking).
//
// Tiers (docs/kv-tiers.md): with a TierManager, a cached device block that has to make room is
// copied to the host tier (and from there, later, to the SSD) instead of being forgotten, and
// MatchPrefix keeps following a prefix into those tiers. Grow brings host blocks back into new
// device blocks; SSD blocks come up to the host first (Prefetch, asynchronous). Block tables
// only ever hold device blocks: what moves is cold (no sequence references it).
//
// Prefix caching (vLLM v1 style): once a block of a sequence is full and its KV computed, the
// engine loop calls CommitComputed and the block is indexed under the chained hash of its
// tokens (kvcache/block_hash.h). A later sequence whose tokens start the same way finds those
// blocks with MatchPrefix and takes them with Grow instead of computing them. A released
// block stays indexed (evictable) until a free block is needed and none is left
// (kvcache/block_pool.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvcache/block_pool.h"
#include "kvcache/ids.h"
#include "kvcache/tier_manager.h"

namespace spillway::kvcache {

struct Occupancy {
  int32_t used_blocks = 0;      // referenced by at least one sequence
  int32_t cached_blocks = 0;    // indexed for prefix reuse (in use or evictable)
  int32_t reserved_blocks = 0;  // held out of serving by Reserve
  int32_t total_blocks = 0;     // all device blocks, reserved ones included
};

// A cached block of a prefix that lives below the device tier.
struct LowerBlock {
  BlockKey key;
  Tier tier = Tier::kHost;  // kHost or kDisk
};

struct PrefixHit {
  std::vector<BlockId> blocks;    // full cached device blocks, in order; not yet owned by anyone
  std::vector<LowerBlock> lower = {};  // the blocks that follow them on host / SSD, in order
  int32_t num_cached_tokens = 0;  // (blocks.size() + lower.size()) * kBlockTokens

  int32_t num_disk_blocks() const;
  // The keys of the lower blocks.
  std::vector<BlockKey> LowerKeys() const;
  // Cuts the hit before its first SSD block (what Grow accepts).
  void DropFromFirstDiskBlock();
};

class KvCache {
 public:
  // `tiers` may be null: a device tier only.
  explicit KvCache(int32_t num_blocks, std::unique_ptr<TierManager> tiers = nullptr);
  ~KvCache();

  // MatchPrefix returns the longest run of full cached blocks that starts `tokens` (computed
  // with `adapter`). Read-only: pins nothing, so a caller that gives up needs no clean-up; the
  // hit is valid until the next call that allocates. Never fails; may be empty.
  // NOTE(sched): to get logits for the last prompt token, callers pass all tokens but the last
  // (vLLM does the same), so a hit never covers a whole prompt.
  // With tiers the run continues through blocks on host / SSD while loading them is estimated
  // to be cheaper than recomputing them (TierManager::WorthLoading).
  PrefixHit MatchPrefix(std::span<const TokenId> tokens, AdapterId adapter) const;

  // Grow gives `seq` the blocks of `hit` (ref count +1 each; only for a sequence with no
  // tokens yet) and room for `num_new_tokens` more tokens, creating the table on first use.
  // Returns the blocks newly allocated for it (valid until the next call that changes `seq`),
  // or nullopt when the pool cannot hold them right now; on nullopt nothing has changed.
  // Host blocks of the hit are copied into newly allocated device blocks (not among the
  // returned new blocks) and indexed there; the capacity check counts them.
  // REQUIRES: hit.blocks and hit.lower are empty or num_tokens(seq) == 0; hit.lower holds no
  // SSD block; `hit` comes from MatchPrefix with no allocation since.
  std::optional<std::span<const BlockId>> Grow(SeqId seq, int32_t num_new_tokens,
                                               const PrefixHit& hit = {});

  // CommitComputed records that the KV of `computed_tokens` (the first tokens of `seq`) has
  // been written: every full block among them that is not yet indexed is registered under its
  // key, so later MatchPrefix calls can find it. Call after the forward pass that computed
  // them, never before. REQUIRES: computed_tokens.size() <= num_tokens(seq); the same adapter
  // on every call for `seq`.
  void CommitComputed(SeqId seq, std::span<const TokenId> computed_tokens, AdapterId adapter);

  // The block table of `seq` (empty if unknown) and the tokens it has room for.
  std::span<const BlockId> block_table(SeqId seq) const;
  int32_t num_tokens(SeqId seq) const;
  // Drops `seq`'s references to its blocks and forgets the sequence. Blocks that drop to zero
  // references stay cached if indexed; the table's last blocks are released first, so that
  // they are evicted before the blocks they extend.
  void Release(SeqId seq);

  Occupancy occupancy() const;

  // Prefetch starts SSD reads of the hit's SSD blocks into the host tier and returns how many
  // of them are still being read (0 without an SSD tier). PollTransfers collects finished
  // reads (a later MatchPrefix then finds those blocks on the host) and device <-> host copies
  // (spilled blocks become free), and spills ahead (TierManager::Options::spill_ahead_blocks).
  int32_t Prefetch(const PrefixHit& hit);
  int32_t NumLoading(const PrefixHit& hit) const;
  void PollTransfers();
  // A forward pass computed `num_tokens` tokens in `seconds` (the recompute cost estimate).
  void ObserveForward(int32_t num_tokens, double seconds);
  // Prompt tokens taken from each tier by Grow (prefix hits), by Tier.
  const std::array<int64_t, kNumTiers>& hit_tokens() const { return hit_tokens_; }
  // Null without lower tiers.
  const TierManager* tiers() const { return tiers_.get(); }
  // Blocks that Grow can still allocate (free plus evictable, plus blocks whose spill to the
  // host tier is in flight: they come back when their copies complete).
  int32_t num_free_blocks() const {
    return pool_.num_free() + (tiers_ != nullptr ? tiers_->num_spills_in_flight() : 0);
  }

  // Reserve takes `n` device blocks out of serving for other use of their memory (a
  // fine-tuning job's, issue #7): free blocks first, then evictable cached blocks, least
  // recently used first (spilled to the lower tiers as Grow's evictions are); never a block a
  // sequence uses. Returns the blocks taken, or nullopt (changing nothing) when fewer than `n`
  // are free or evictable. Until Unreserve they belong to no sequence and no prefix, and
  // Grow cannot have them: the pool serving sees is that much smaller.
  std::optional<std::vector<BlockId>> Reserve(int32_t n);
  // Gives reserved blocks back to the free list (their contents are gone).
  // REQUIRES: each was returned by Reserve and not given back yet.
  void Unreserve(std::span<const BlockId> blocks);
  int32_t num_reserved_blocks() const { return num_reserved_; }
  // The blocks sequences can have: all but the reserved ones.
  int32_t num_serving_blocks() const { return pool_.num_blocks() - num_reserved_; }
  const BlockPool& pool() const { return pool_; }

 private:
  struct Table {
    std::vector<BlockId> blocks;
    int32_t num_tokens = 0;
    int32_t num_hashed_blocks = 0;  // blocks [0, num_hashed_blocks) have known keys
    BlockHash last_hash = 0;        // key of block num_hashed_blocks - 1 (when > 0)
  };
  // A block for Grow: spills the block that Allocate is about to evict to the lower tiers.
  // REQUIRES: num_free_blocks() > 0.
  BlockId AllocateBlock();
  // Starts the spills of up to `n` LRU evictable blocks (a block that cannot be spilled is
  // freed). REQUIRES: tiers; no free block (else Allocate would not evict).
  void SpillLru(int32_t n);
  // With no free block left, starts spills until spill_ahead_blocks are in flight.
  void SpillAhead();
  // Frees the device blocks whose spills completed.
  void ReleaseSpilled();
  // Takes the host blocks of `hit` into new device blocks appended to `table`, indexed.
  void LoadLower(const PrefixHit& hit, Table& table);

  BlockPool pool_;
  std::unique_ptr<TierManager> tiers_;
  std::unordered_map<SeqId, Table> tables_;
  std::array<int64_t, kNumTiers> hit_tokens_{};
  std::vector<bool> reserved_;  // by block
  int32_t num_reserved_ = 0;
};

}  // namespace spillway::kvcache
