#include "kvcache/kv_cache.h"

#include <algorithm>

#include "common/check.h"
#include "kvcache/block_hash.h"

namespace spillway::kvcache {
namespace {

BlockKey KeyOf(BlockHash parent, std::span<const TokenId> tokens) {
  BlockKey key{.hash = HashBlock(parent, tokens), .parent = parent};
  std::copy(tokens.begin(), tokens.end(), key.tokens.begin());
  return key;
}

int32_t BlocksFor(int32_t num_tokens) { return (num_tokens + kBlockTokens - 1) / kBlockTokens; }

}  // namespace

KvCache::KvCache(int32_t num_blocks) : pool_(num_blocks) {}

PrefixHit KvCache::MatchPrefix(std::span<const TokenId> tokens, AdapterId adapter) const {
  PrefixHit hit;
  BlockHash parent = RootHash(adapter);
  for (size_t begin = 0; begin + kBlockTokens <= tokens.size(); begin += kBlockTokens) {
    const BlockKey key = KeyOf(parent, tokens.subspan(begin, kBlockTokens));
    const std::optional<BlockId> block = pool_.Lookup(key);
    if (!block.has_value()) break;
    hit.blocks.push_back(*block);
    parent = key.hash;
  }
  hit.num_cached_tokens = static_cast<int32_t>(hit.blocks.size()) * kBlockTokens;
  return hit;
}

std::optional<std::span<const BlockId>> KvCache::Grow(SeqId seq, int32_t num_new_tokens,
                                                      const PrefixHit& hit) {
  SPW_CHECK(num_new_tokens >= 0) << num_new_tokens;
  SPW_CHECK(hit.num_cached_tokens == static_cast<int32_t>(hit.blocks.size()) * kBlockTokens);
  auto [it, created] = tables_.try_emplace(seq);
  Table& table = it->second;
  SPW_CHECK(hit.blocks.empty() || table.num_tokens == 0) << "prefix hit for a grown seq " << seq;
  const int32_t have = static_cast<int32_t>(table.blocks.size() + hit.blocks.size());
  const int32_t need = BlocksFor(table.num_tokens + hit.num_cached_tokens + num_new_tokens);
  // Hit blocks that are evictable stop being allocatable once taken.
  int32_t available = pool_.num_free();
  for (BlockId b : hit.blocks) {
    SPW_CHECK(pool_.is_cached(b)) << "stale prefix hit: block " << b;
    if (pool_.ref_count(b) == 0) --available;
  }
  if (need - have > available) {
    if (created) tables_.erase(it);
    return std::nullopt;
  }
  for (BlockId b : hit.blocks) {
    pool_.AddRef(b);
    table.blocks.push_back(b);
  }
  if (!hit.blocks.empty()) {
    table.num_hashed_blocks = static_cast<int32_t>(hit.blocks.size());
    table.last_hash = pool_.hash(hit.blocks.back());
  }
  const size_t first_new = table.blocks.size();
  for (int32_t i = have; i < need; ++i) table.blocks.push_back(*pool_.Allocate());
  table.num_tokens += hit.num_cached_tokens + num_new_tokens;
  return std::span<const BlockId>(table.blocks).subspan(first_new);
}

void KvCache::CommitComputed(SeqId seq, std::span<const TokenId> computed_tokens,
                             AdapterId adapter) {
  auto it = tables_.find(seq);
  SPW_CHECK(it != tables_.end()) << "unknown seq " << seq;
  Table& table = it->second;
  SPW_CHECK(static_cast<int32_t>(computed_tokens.size()) <= table.num_tokens)
      << computed_tokens.size() << " computed tokens, room for " << table.num_tokens;
  const int32_t full = static_cast<int32_t>(computed_tokens.size()) / kBlockTokens;
  for (int32_t b = table.num_hashed_blocks; b < full; ++b) {
    const BlockHash parent = b == 0 ? RootHash(adapter) : table.last_hash;
    const BlockKey key = KeyOf(parent, computed_tokens.subspan(b * kBlockTokens, kBlockTokens));
    // A block whose prefix another block already caches stays unindexed (and is freed, not
    // kept, when released); the chain continues with the same keys either way.
    pool_.Register(table.blocks[b], key);
    table.last_hash = key.hash;
    table.num_hashed_blocks = b + 1;
  }
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
  const std::vector<BlockId>& blocks = it->second.blocks;
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) pool_.Release(*b);
  tables_.erase(it);
}

Occupancy KvCache::occupancy() const {
  return {.used_blocks = pool_.num_blocks() - pool_.num_free(),
          .cached_blocks = pool_.num_cached(),
          .total_blocks = pool_.num_blocks()};
}

}  // namespace spillway::kvcache
