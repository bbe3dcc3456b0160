#include "kvcache/block_pool.h"

#include <algorithm>

#include "common/check.h"

namespace spillway::kvcache {

BlockPool::BlockPool(int32_t num_blocks)
    : ref_counts_(num_blocks, 0), lru_pos_(num_blocks), keys_(num_blocks) {
  SPW_CHECK(num_blocks >= 0) << num_blocks;
  for (BlockId id = 0; id < num_blocks; ++id) free_.push_back(id);
}

size_t BlockPool::Check(BlockId id) const {
  SPW_CHECK(id >= 0 && id < num_blocks()) << "block " << id << " of " << num_blocks();
  return static_cast<size_t>(id);
}

std::optional<BlockId> BlockPool::Allocate() {
  BlockId id;
  if (!free_.empty()) {
    id = free_.front();
    free_.pop_front();
  } else if (!lru_.empty()) {
    id = lru_.front();
    lru_.pop_front();
    Evict(id);
  } else {
    return std::nullopt;
  }
  ref_counts_[id] = 1;
  return id;
}

void BlockPool::Evict(BlockId id) {
  auto it = index_.find(keys_[id]->hash);
  SPW_CHECK(it != index_.end() && it->second == id) << "block " << id;
  index_.erase(it);
  keys_[id].reset();
}

void BlockPool::AddRef(BlockId id) {
  const size_t i = Check(id);
  if (ref_counts_[i] == 0) {
    SPW_CHECK(keys_[i].has_value()) << "AddRef of free block " << id;
    lru_.erase(lru_pos_[i]);
  }
  ++ref_counts_[i];
}

void BlockPool::Release(BlockId id) {
  const size_t i = Check(id);
  SPW_CHECK(ref_counts_[i] > 0) << "block " << id;
  if (--ref_counts_[i] > 0) return;
  if (keys_[i].has_value()) {
    lru_pos_[i] = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

int32_t BlockPool::ref_count(BlockId id) const { return ref_counts_[Check(id)]; }

bool BlockPool::Register(BlockId id, const BlockKey& key) {
  const size_t i = Check(id);
  SPW_CHECK(ref_counts_[i] > 0) << "Register of unused block " << id;
  if (keys_[i].has_value() || index_.contains(key.hash)) return false;
  keys_[i] = key;
  index_.emplace(key.hash, id);
  return true;
}

std::optional<BlockId> BlockPool::Lookup(const BlockKey& key) const {
  auto it = index_.find(key.hash);
  if (it == index_.end()) return std::nullopt;
  const BlockKey& have = *keys_[it->second];
  if (have.parent != key.parent || have.tokens != key.tokens) return std::nullopt;
  return it->second;
}

BlockHash BlockPool::hash(BlockId id) const { return key(id).hash; }

const BlockKey& BlockPool::key(BlockId id) const {
  const size_t i = Check(id);
  SPW_CHECK(keys_[i].has_value()) << "block " << id << " is not cached";
  return *keys_[i];
}

std::optional<BlockId> BlockPool::NextEviction() const {
  if (!free_.empty() || lru_.empty()) return std::nullopt;
  return lru_.front();
}

std::vector<std::pair<BlockHash, BlockId>> BlockPool::IndexForTesting() const {
  std::vector<std::pair<BlockHash, BlockId>> out(index_.begin(), index_.end());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

}  // namespace spillway::kvcache
