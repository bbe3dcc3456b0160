// KvCache: what the engine loop may ask of the KV cache — room for a sequence's next tokens,
// its block table, and release. One tier for now (the tiering issue adds host and SSD tiers,
// the serving issue prefix reuse). "No room" is a value (nullopt), not an error.
// Engine-loop thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kvcache/block_pool.h"
#include "kvcache/ids.h"

namespace spillway::kvcache {

struct Occupancy {
  int32_t used_blocks = 0;
  int32_t total_blocks = 0;
};

class KvCache {
 public:
  explicit KvCache(int32_t num_blocks);

  // Makes room in `seq`'s block table for `num_new_tokens` more tokens (creating the table on
  // first use). Returns the blocks newly added to the table, or nullopt when the pool cannot
  // hold them right now; on nullopt nothing has changed.
  std::optional<std::span<const BlockId>> Grow(SeqId seq, int32_t num_new_tokens);
  // The block table of `seq` (empty if unknown) and the tokens it has room for.
  std::span<const BlockId> block_table(SeqId seq) const;
  int32_t num_tokens(SeqId seq) const;
  // Drops `seq`'s references to its blocks and forgets the sequence.
  void Release(SeqId seq);

  Occupancy occupancy() const;
  int32_t num_free_blocks() const { return pool_.num_free(); }

 private:
  struct Table {
    std::vector<BlockId> blocks;
    int32_t num_tokens = 0;
  };
  BlockPool pool_;
  std::unordered_map<SeqId, Table> tables_;
};

}  // namespace spillway::kvcache
