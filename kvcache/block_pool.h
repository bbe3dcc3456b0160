// BlockPool: the fixed set of KV blocks of one tier, with a reference count per block and a
// free list. Only bookkeeping lives here; the KV tensors themselves belong to the backend,
// indexed by BlockId. Engine-loop thread only (no locking).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "kvcache/ids.h"

namespace spillway::kvcache {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }

  // Takes the oldest free block (ref count becomes 1), or nullopt when none is free.
  std::optional<BlockId> Allocate();
  // Adds a reference to an allocated block. REQUIRES: ref_count(id) > 0.
  void AddRef(BlockId id);
  // Drops a reference; the block returns to the back of the free list at zero.
  // REQUIRES: ref_count(id) > 0.
  void Release(BlockId id);
  int32_t ref_count(BlockId id) const;

 private:
  std::vector<int32_t> ref_counts_;
  std::deque<BlockId> free_;
};

}  // namespace spillway::kvcache
