#include "kvcache/kv_cache.h"

#include "common/check.h"

namespace spillway::kvcache {

KvCache::KvCache(int32_t num_blocks) : pool_(num_blocks) {}

std::optional<std::span<const BlockId>> KvCache::Grow(SeqId seq, int32_t num_new_tokens) {
  SPW_CHECK(num_new_tokens >= 0) << num_new_tokens;
  Table& table = tables_[seq];
  const int32_t have = static_cast<int32_t>(table.blocks.size());
  const int32_t need = (table.num_tokens + num_new_tokens + kBlockTokens - 1) / kBlockTokens;
  if (need - have > pool_.num_free()) {
    if (table.blocks.empty() && table.num_tokens == 0) tables_.erase(seq);
    return std::nullopt;
  }
  for (int32_t i = have; i < need; ++i) table.blocks.push_back(*pool_.Allocate());
  table.num_tokens += num_new_tokens;
  return std::span<const BlockId>(table.blocks).subspan(have);
}

std::span<const BlockId> KvCache::block_table(SeqId seq) const {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return {};
  return it->second.blocks;
}

int32_t KvCache::num_tokens(SeqId seq) const {
  auto it = tables_.find(seq);
  return it == tables_.end() ? 0 : it->second.num_tokens;
}

void KvCache::Release(SeqId seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  for (BlockId id : it->second.blocks) pool_.Release(id);
  tables_.erase(it);
}

Occupancy KvCache::occupancy() const {
  return {.used_blocks = pool_.num_blocks() - pool_.num_free(), .total_blocks = pool_.num_blocks()};
}

}  // namespace spillway::kvcache
