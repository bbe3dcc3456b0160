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

int32_t PrefixHit::num_disk_blocks() const {
  return static_cast<int32_t>(std::count_if(
      lower.begin(), lower.end(), [](const LowerBlock& b) { return b.tier == Tier::kDisk; }));
}

std::vector<BlockKey> PrefixHit::LowerKeys() const {
  std::vector<BlockKey> keys;
  keys.reserve(lower.size());
  for (const LowerBlock& b : lower) keys.push_back(b.key);
  return keys;
}

void PrefixHit::DropFromFirstDiskBlock() {
  auto it = std::find_if(lower.begin(), lower.end(),
                         [](const LowerBlock& b) { return b.tier == Tier::kDisk; });
  lower.erase(it, lower.end());
  num_cached_tokens = static_cast<int32_t>(blocks.size() + lower.size()) * kBlockTokens;
}

KvCache::KvCache(int32_t num_blocks, std::unique_ptr<TierManager> tiers)
    : pool_(num_blocks), tiers_(std::move(tiers)), reserved_(num_blocks, false) {}

KvCache::~KvCache() = default;

PrefixHit KvCache::MatchPrefix(std::span<const TokenId> tokens, AdapterId adapter) const {
  PrefixHit hit;
  BlockHash parent = RootHash(adapter);
  for (size_t begin = 0; begin + kBlockTokens <= tokens.size(); begin += kBlockTokens) {
    const BlockKey key = KeyOf(parent, tokens.subspan(begin, kBlockTokens));
    const std::optional<BlockId> block = pool_.Lookup(key);
    if (hit.lower.empty() && block.has_value()) {
      hit.blocks.push_back(*block);
    } else {
      // NOTE(tiers): a device block after a lower one ends the hit (it is rare: a parent is
      // released after its children, so it is evicted after them); Grow takes the device
      // blocks first and loads the lower ones after them.
      if (block.has_value() || tiers_ == nullptr) break;
      const std::optional<Tier> tier = tiers_->Locate(key);
      if (!tier.has_value() || !tiers_->WorthLoading(*tier)) break;
      hit.lower.push_back({.key = key, .tier = *tier});
    }
    parent = key.hash;
  }
  hit.num_cached_tokens = static_cast<int32_t>(hit.blocks.size() + hit.lower.size()) * kBlockTokens;
  return hit;
}

BlockId KvCache::AllocateBlock() {
  if (tiers_ != nullptr) {
    ReleaseSpilled();
    // NOTE(tiers): no free block left: the next allocation would evict. A block whose spill
    // is in flight is not handed out before its copy has read it, so wait for the oldest one
    // (spilling ahead makes this rare); with none in flight, spill the LRU block and wait.
    if (pool_.num_free() == pool_.num_evictable()) {
      if (tiers_->num_spills_in_flight() == 0) SpillLru(1);
      if (tiers_->num_spills_in_flight() > 0) {
        tiers_->WaitForSpill();
        ReleaseSpilled();
      }
    }
  }
  const std::optional<BlockId> id = pool_.Allocate();
  SPW_CHECK(id.has_value()) << "AllocateBlock with no free block";
  SpillAhead();
  return *id;
}

void KvCache::SpillLru(int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    const std::optional<BlockId> victim = pool_.NextEviction();
    if (!victim.has_value()) return;
    const BlockKey key = pool_.key(*victim);
    const std::optional<BlockId> id = pool_.Allocate();  // evicts `victim`: ref count 1
    SPW_CHECK(id == victim);
    if (!tiers_->StartSpill(*id, key)) pool_.Release(*id);  // dropped: free at once
  }
}

void KvCache::SpillAhead() {
  if (tiers_ == nullptr || pool_.num_free() != pool_.num_evictable()) return;
  SpillLru(tiers_->spill_ahead_blocks() - tiers_->num_spills_in_flight());
}

void KvCache::ReleaseSpilled() {
  for (BlockId id : tiers_->TakeSpilledBlocks()) pool_.Release(id);
}

void KvCache::LoadLower(const PrefixHit& hit, Table& table) {
  // Pinned first, so that the spills of the allocations below cannot push them out.
  for (const LowerBlock& b : hit.lower) tiers_->PinHost(b.key);
  for (const LowerBlock& b : hit.lower) {
    const BlockId id = AllocateBlock();
    const absl::StatusOr<Tier> origin = tiers_->LoadToDevice(b.key, id);
    // NOTE(tiers): the server enables tiers only for a backend whose block copies work
    // (a memcpy on the CPU), so a failure here is a broken backend, not a runtime condition.
    SPW_CHECK(origin.ok()) << "loading a KV block into device block " << id << ": "
                           << origin.status();
    SPW_CHECK(pool_.Register(id, b.key)) << "block " << id << " loaded twice";
    table.blocks.push_back(id);
    hit_tokens_[static_cast<int>(*origin)] += kBlockTokens;
  }
  table.num_hashed_blocks = static_cast<int32_t>(table.blocks.size());
  table.last_hash = hit.lower.back().key.hash;
}

std::optional<std::span<const BlockId>> KvCache::Grow(SeqId seq, int32_t num_new_tokens,
                                                      const PrefixHit& hit) {
  SPW_CHECK(num_new_tokens >= 0) << num_new_tokens;
  SPW_CHECK(hit.num_cached_tokens ==
            static_cast<int32_t>(hit.blocks.size() + hit.lower.size()) * kBlockTokens);
  SPW_CHECK(hit.num_disk_blocks() == 0) << "Grow with SSD blocks in the hit";
  SPW_CHECK(hit.lower.empty() || tiers_ != nullptr);
  auto [it, created] = tables_.try_emplace(seq);
  Table& table = it->second;
  SPW_CHECK((hit.blocks.empty() && hit.lower.empty()) || table.num_tokens == 0)
      << "prefix hit for a grown seq " << seq;
  // Device blocks the table will have without allocating; the lower blocks need new ones.
  const int32_t have = static_cast<int32_t>(table.blocks.size() + hit.blocks.size());
  const int32_t need = BlocksFor(table.num_tokens + hit.num_cached_tokens + num_new_tokens);
  // Hit blocks that are evictable stop being allocatable once taken.
  if (tiers_ != nullptr) ReleaseSpilled();
  int32_t available = num_free_blocks();
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
    hit_tokens_[static_cast<int>(Tier::kDevice)] +=
        static_cast<int64_t>(hit.blocks.size()) * kBlockTokens;
  }
  if (!hit.lower.empty()) LoadLower(hit, table);
  const size_t first_new = table.blocks.size();
  for (auto i = static_cast<int32_t>(first_new); i < need; ++i) {
    table.blocks.push_back(AllocateBlock());
  }
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
    if (pool_.Register(table.blocks[b], key) && tiers_ != nullptr) {
      tiers_->OnDeviceRegistered(key.hash);
    }
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
  return {.used_blocks = pool_.num_blocks() - pool_.num_free() - num_reserved_,
          .cached_blocks = pool_.num_cached(),
          .reserved_blocks = num_reserved_,
          .total_blocks = pool_.num_blocks()};
}

std::optional<std::vector<BlockId>> KvCache::Reserve(int32_t n) {
  SPW_CHECK(n >= 0) << n;
  if (n > num_free_blocks()) return std::nullopt;
  // NOTE(ftmem): a reserved block is simply allocated (ref count 1) to no sequence, so the
  // pool's invariants hold unchanged, and AllocateBlock's order (free blocks, then the LRU
  // cached block, spilled to the lower tiers first) is the order a reservation wants.
  std::vector<BlockId> blocks;
  blocks.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    const BlockId id = AllocateBlock();
    reserved_[id] = true;
    blocks.push_back(id);
  }
  num_reserved_ += n;
  return blocks;
}

void KvCache::Unreserve(std::span<const BlockId> blocks) {
  for (BlockId id : blocks) {
    SPW_CHECK(id >= 0 && id < pool_.num_blocks() && reserved_[id])
        << "block " << id << " is not reserved";
    reserved_[id] = false;
    pool_.Release(id);
  }
  num_reserved_ -= static_cast<int32_t>(blocks.size());
}

}  // namespace spillway::kvcache

namespace spillway::kvcache {

int32_t KvCache::Prefetch(const PrefixHit& hit) {
  if (tiers_ == nullptr || hit.num_disk_blocks() == 0) return 0;
  return tiers_->Prefetch(hit.LowerKeys());
}

int32_t KvCache::NumLoading(const PrefixHit& hit) const {
  if (tiers_ == nullptr || hit.lower.empty()) return 0;
  return tiers_->NumLoading(hit.LowerKeys());
}

void KvCache::PollTransfers() {
  if (tiers_ == nullptr) return;
  tiers_->Poll();
  ReleaseSpilled();
  SpillAhead();
}

void KvCache::ObserveForward(int32_t num_tokens, double seconds) {
  if (tiers_ != nullptr) tiers_->ObserveRecompute(num_tokens, seconds);
}

}  // namespace spillway::kvcache
