#include "kvcache/host_tier.h"

#include <algorithm>
#include <utility>

#include "common/check.h"

namespace spillway::kvcache {

HostTier::HostTier(int32_t num_slots, int64_t block_bytes, std::unique_ptr<HostBuffer> storage)
    : block_bytes_(block_bytes),
      storage_(storage != nullptr ? std::move(storage)
                                  : AllocatePlainHostBuffer(int64_t{std::max(num_slots, 0)} *
                                                            std::max<int64_t>(block_bytes, 0))),
      states_(num_slots, State::kFree),
      pins_(num_slots, 0),
      keys_(num_slots),
      lru_pos_(num_slots) {
  SPW_CHECK(num_slots >= 0 && block_bytes > 0) << num_slots << " slots of " << block_bytes;
  SPW_CHECK(static_cast<int64_t>(storage_->bytes().size()) >= int64_t{num_slots} * block_bytes)
      << "host buffer of " << storage_->bytes().size() << " bytes for " << num_slots << " slots";
  for (int32_t s = 0; s < num_slots; ++s) free_.push_back(s);
}

size_t HostTier::Check(int32_t slot) const {
  SPW_CHECK(slot >= 0 && slot < num_slots()) << "slot " << slot << " of " << num_slots();
  return static_cast<size_t>(slot);
}

std::optional<int32_t> HostTier::TakeFree() {
  if (free_.empty()) return std::nullopt;
  const int32_t slot = free_.front();
  free_.pop_front();
  states_[slot] = State::kReserved;
  return slot;
}

std::optional<int32_t> HostTier::NextVictim() const {
  if (lru_.empty()) return std::nullopt;
  return lru_.front();
}

bool HostTier::Insert(int32_t slot, const BlockKey& key) {
  const size_t i = Check(slot);
  SPW_CHECK(states_[i] == State::kReserved) << "Insert into slot " << slot << " not reserved";
  if (index_.contains(key.hash)) {
    Free(slot);
    return false;
  }
  states_[i] = State::kCached;
  keys_[i] = key;
  index_.emplace(key.hash, slot);
  lru_pos_[i] = lru_.insert(lru_.end(), slot);
  return true;
}

std::optional<int32_t> HostTier::Lookup(const BlockKey& key) const {
  const std::optional<int32_t> slot = Find(key.hash);
  if (!slot.has_value()) return std::nullopt;
  const BlockKey& have = keys_[*slot];
  if (have.parent != key.parent || have.tokens != key.tokens) return std::nullopt;
  return slot;
}

std::optional<int32_t> HostTier::Find(BlockHash hash) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

const BlockKey& HostTier::key(int32_t slot) const {
  const size_t i = Check(slot);
  SPW_CHECK(states_[i] == State::kCached) << "slot " << slot << " is not cached";
  return keys_[i];
}

void HostTier::Pin(int32_t slot) {
  const size_t i = Check(slot);
  SPW_CHECK(states_[i] == State::kCached) << "Pin of slot " << slot << " not cached";
  if (pins_[i]++ == 0) lru_.erase(lru_pos_[i]);
}

void HostTier::Unpin(int32_t slot) {
  const size_t i = Check(slot);
  SPW_CHECK(pins_[i] > 0) << "Unpin of unpinned slot " << slot;
  if (--pins_[i] == 0) lru_pos_[i] = lru_.insert(lru_.end(), slot);
}

void HostTier::Detach(int32_t slot) {
  const size_t i = Check(slot);
  SPW_CHECK(states_[i] == State::kCached) << "Detach of slot " << slot << " not cached";
  if (pins_[i] == 0) lru_.erase(lru_pos_[i]);
  pins_[i] = 0;
  index_.erase(keys_[i].hash);
  states_[i] = State::kReserved;
}

void HostTier::Free(int32_t slot) {
  const size_t i = Check(slot);
  SPW_CHECK(pins_[i] == 0) << "Free of pinned slot " << slot;
  SPW_CHECK(states_[i] != State::kFree) << "slot " << slot << " freed twice";
  if (states_[i] == State::kCached) {
    lru_.erase(lru_pos_[i]);
    index_.erase(keys_[i].hash);
  }
  states_[i] = State::kFree;
  free_.push_back(slot);
}

std::span<std::byte> HostTier::bytes(int32_t slot) {
  return {storage_->bytes().data() + Check(slot) * static_cast<size_t>(block_bytes_),
          static_cast<size_t>(block_bytes_)};
}

std::vector<std::pair<BlockHash, int32_t>> HostTier::IndexForTesting() const {
  std::vector<std::pair<BlockHash, int32_t>> out(index_.begin(), index_.end());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  return out;
}

}  // namespace spillway::kvcache
