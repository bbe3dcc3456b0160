#include "kvcache/block_pool.h"

#include "common/check.h"

namespace spillway::kvcache {

BlockPool::BlockPool(int32_t num_blocks) : ref_counts_(num_blocks, 0) {
  SPW_CHECK(num_blocks >= 0) << num_blocks;
  for (BlockId id = 0; id < num_blocks; ++id) free_.push_back(id);
}

std::optional<BlockId> BlockPool::Allocate() {
  if (free_.empty()) return std::nullopt;
  const BlockId id = free_.front();
  free_.pop_front();
  ref_counts_[id] = 1;
  return id;
}

void BlockPool::AddRef(BlockId id) {
  SPW_CHECK(ref_count(id) > 0) << "block " << id;
  ++ref_counts_[id];
}

void BlockPool::Release(BlockId id) {
  SPW_CHECK(ref_count(id) > 0) << "block " << id;
  if (--ref_counts_[id] == 0) free_.push_back(id);
}

int32_t BlockPool::ref_count(BlockId id) const {
  SPW_CHECK(id >= 0 && id < num_blocks()) << "block " << id << " of " << num_blocks();
  return ref_counts_[id];
}

}  // namespace spillway::kvcache
