#include "kvcache/tier_manager.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/check.h"

namespace spillway::kvcache {
namespace {

// Weight of a new measurement in the cost estimates.
constexpr double kCostSmoothing = 0.2;

void Smooth(double& estimate, double measured_us) {
  estimate += kCostSmoothing * (measured_us - estimate);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The key as stored in front of an SSD payload: hash, parent, tokens.
void PutKey(const BlockKey& key, std::span<std::byte> dst) {
  std::memcpy(dst.data(), &key.hash, 8);
  std::memcpy(dst.data() + 8, &key.parent, 8);
  std::memcpy(dst.data() + 16, key.tokens.data(), sizeof(key.tokens));
}

bool KeyMatches(const BlockKey& key, std::span<const std::byte> src) {
  BlockKey stored;
  std::memcpy(&stored.hash, src.data(), 8);
  std::memcpy(&stored.parent, src.data() + 8, 8);
  std::memcpy(stored.tokens.data(), src.data() + 16, sizeof(stored.tokens));
  return stored.hash == key.hash && stored.parent == key.parent && stored.tokens == key.tokens;
}

}  // namespace

std::string_view TierName(Tier tier) {
  switch (tier) {
    case Tier::kDevice:
      return "device";
    case Tier::kHost:
      return "host";
    case Tier::kDisk:
      return "disk";
  }
  return "unknown";
}

TierManager::TierManager(BlockIo& io, Options options)
    : io_(io),
      host_(options.host_slots, io.block_bytes(),
            io.AllocateHostBuffer(int64_t{std::max(options.host_slots, 0)} * io.block_bytes())),
      disk_(std::move(options.disk)),
      costs_(options.costs),
      explore_every_(options.explore_every),
      spill_ahead_blocks_(options.spill_ahead_blocks) {
  SPW_CHECK(io.block_bytes() > 0);
  SPW_CHECK(explore_every_ >= 0);
  SPW_CHECK(spill_ahead_blocks_ >= 0);
}

TierManager::TierManager(std::unique_ptr<BlockIo> io, Options options)
    : TierManager(*io, std::move(options)) {
  owned_io_ = std::move(io);
}

TierManager::~TierManager() {
  // Copies in flight use host slots, SSD reads in flight buffers owned by reads_: let them
  // finish first.
  while (!spills_.empty()) WaitFor(spills_.begin()->first);
  while (!loads_.empty()) WaitFor(loads_.begin()->first);
  if (disk_ != nullptr) disk_->Flush();
}

bool TierManager::WorthLoading(Tier tier) const {
  switch (tier) {
    case Tier::kDevice:
      return true;
    case Tier::kHost:
      return costs_.host_us_per_block < costs_.recompute_us_per_block || exploring(tier);
    case Tier::kDisk:
      return costs_.disk_us_per_block < costs_.recompute_us_per_block || exploring(tier);
  }
  return false;
}

void TierManager::EndExploration(Tier tier) {
  explore_[static_cast<int>(tier)] = false;
  lost_passes_[static_cast<int>(tier)] = 0;
}

std::optional<int32_t> TierManager::AcquireHostSlot() {
  if (std::optional<int32_t> slot = host_.TakeFree()) return slot;
  // Loads that finished free their slots: better than evicting (and it never waits).
  if (!loads_.empty()) {
    CollectCopies();
    if (std::optional<int32_t> slot = host_.TakeFree()) return slot;
  }
  const std::optional<int32_t> victim = host_.NextVictim();
  if (!victim.has_value()) return std::nullopt;  // every cached slot is pinned
  EvictHostSlot(*victim);
  return host_.TakeFree();
}

void TierManager::EvictHostSlot(int32_t slot) {
  const BlockKey key = host_.key(slot);
  from_disk_.erase(key.hash);
  if (disk_ != nullptr && !disk_->Contains(key.hash) && !disk_->degraded()) {
    std::vector<std::byte> payload(static_cast<size_t>(kDiskKeyBytes + block_bytes()));
    PutKey(key, payload);
    const std::span<std::byte> src = host_.bytes(slot);
    std::memcpy(payload.data() + kDiskKeyBytes, src.data(), src.size());
    // Counted when the write completes (Poll); a refused write just drops the block.
    disk_->SubmitWrite(key.hash, std::move(payload));
  }
  host_.Free(slot);
}

bool TierManager::StartSpill(BlockId id, const BlockKey& key) {
  if (host_.num_slots() == 0 || host_.Find(key.hash).has_value()) return false;
  // NOTE(tiers): a block whose load is still in flight is rare here (loaded, released and
  // evicted within one step), and reading it now could read the bytes before the load.
  if (auto it = load_of_block_.find(id); it != load_of_block_.end()) WaitFor(it->second);
  const std::optional<int32_t> slot = AcquireHostSlot();
  if (!slot.has_value()) return false;
  const CopyTicket ticket = io_.StartRead(id, host_.bytes(*slot));
  SPW_CHECK(host_.Insert(*slot, key));
  host_.Pin(*slot);  // not evictable, so not read by an SSD write, until the copy is in
  spills_.emplace(ticket, Spill{.block = id, .slot = *slot});
  spill_of_slot_.emplace(*slot, ticket);
  return true;
}

std::vector<BlockId> TierManager::SpillingBlocksForTesting() const {
  std::vector<BlockId> out = spilled_;
  for (const auto& [ticket, spill] : spills_) out.push_back(spill.block);
  return out;
}

void TierManager::WaitForSpill() {
  SPW_CHECK(!spills_.empty()) << "WaitForSpill with no spill in flight";
  WaitFor(spills_.begin()->first);
}

void TierManager::WaitFor(CopyTicket ticket) {
  ++counters_.copy_waits;
  FinishCopy(io_.WaitCopy(ticket));
}

void TierManager::FinishCopy(const CopyDone& done) {
  if (auto it = spills_.find(done.ticket); it != spills_.end()) {
    const Spill spill = it->second;
    spills_.erase(it);
    spill_of_slot_.erase(spill.slot);
    spilled_.push_back(spill.block);
    if (!done.status.ok()) ++counters_.host_errors;
    if (!spill.detached && !done.status.ok()) host_.Detach(spill.slot);  // drops every pin
    if (spill.detached || !done.status.ok()) {
      host_.Free(spill.slot);
      return;
    }
    host_.Unpin(spill.slot);
    ++counters_.spills_device_host;
    counters_.bytes_device_host += block_bytes();
    return;
  }
  auto it = loads_.find(done.ticket);
  SPW_CHECK(it != loads_.end()) << "completion of unknown copy " << done.ticket;
  const Load load = it->second;
  loads_.erase(it);
  load_of_block_.erase(load.block);
  host_.Free(load.slot);
  // NOTE(tiers): the device block is already registered under its key and may be in a block
  // table; a failed load would give wrong tokens. The server enables tiers only for a backend
  // whose copies work (a memcpy on the CPU; on CUDA a failed copy is a sticky device error
  // anyway), so this is a broken backend, not a runtime condition.
  SPW_CHECK(done.status.ok()) << "loading a KV block into device block " << load.block << ": "
                              << done.status;
  Smooth(costs_.host_us_per_block, done.seconds * 1e6);
  ObserveLoad(done.seconds);
  ++counters_.loads_host_device;
  counters_.bytes_host_device += block_bytes();
}

std::optional<Tier> TierManager::Locate(const BlockKey& key) const {
  if (host_.Lookup(key).has_value()) return Tier::kHost;
  if (host_.Find(key.hash).has_value()) return std::nullopt;  // a collision: another block
  if (disk_ != nullptr && disk_->Contains(key.hash)) return Tier::kDisk;
  return std::nullopt;
}

void TierManager::PinHost(const BlockKey& key) {
  const std::optional<int32_t> slot = host_.Lookup(key);
  SPW_CHECK(slot.has_value()) << "PinHost of a block not on the host tier";
  host_.Pin(*slot);
}

void TierManager::UnpinHost(const BlockKey& key) {
  const std::optional<int32_t> slot = host_.Lookup(key);
  SPW_CHECK(slot.has_value()) << "UnpinHost of a block not on the host tier";
  host_.Unpin(*slot);
}

absl::StatusOr<Tier> TierManager::LoadToDevice(const BlockKey& key, BlockId id) {
  std::optional<int32_t> slot = host_.Lookup(key);
  SPW_CHECK(slot.has_value()) << "LoadToDevice of a block not on the host tier";
  if (auto it = spill_of_slot_.find(*slot); it != spill_of_slot_.end()) {
    WaitFor(it->second);  // the slot's bytes are in only when its spill completed
    if (!host_.Lookup(key).has_value()) {
      return absl::DataLossError("the spill of this block to the host tier failed");
    }
  }
  const Tier origin = from_disk_.erase(key.hash) > 0 ? Tier::kDisk : Tier::kHost;
  host_.Detach(*slot);  // drops the caller's pin; the bytes stay until the copy completes
  const CopyTicket ticket = io_.StartWrite(id, host_.bytes(*slot));
  loads_.emplace(ticket, Load{.block = id, .slot = *slot});
  load_of_block_.emplace(id, ticket);
  EndExploration(Tier::kHost);
  return origin;
}

void TierManager::OnDeviceRegistered(BlockHash hash) {
  const std::optional<int32_t> slot = host_.Find(hash);
  if (!slot.has_value()) return;
  if (auto it = spill_of_slot_.find(*slot); it != spill_of_slot_.end()) {
    // Its spill is still writing the slot: it leaves the index now, is freed when done.
    from_disk_.erase(hash);
    host_.Detach(*slot);
    spills_.at(it->second).detached = true;
    return;
  }
  if (host_.pins(*slot) > 0) return;
  from_disk_.erase(hash);
  host_.Free(*slot);
}

int32_t TierManager::Prefetch(std::span<const BlockKey> keys) {
  if (disk_ == nullptr) return 0;
  for (const BlockKey& key : keys) {
    // Never more reads than the host tier could take, or they would evict each other.
    if (num_loading() >= host_.num_slots()) break;
    if (reading_.contains(key.hash) || Locate(key) != Tier::kDisk) continue;
    const uint64_t tag = next_tag_++;
    Read read{.key = key,
              .buffer = std::vector<std::byte>(static_cast<size_t>(kDiskKeyBytes + block_bytes())),
              .start = std::chrono::steady_clock::now()};
    if (!disk_->SubmitRead(key.hash, read.buffer, tag)) continue;
    reading_.insert(key.hash);
    reads_.emplace(tag, std::move(read));
  }
  return NumLoading(keys);
}

int32_t TierManager::NumLoading(std::span<const BlockKey> keys) const {
  return static_cast<int32_t>(std::count_if(
      keys.begin(), keys.end(), [&](const BlockKey& k) { return reading_.contains(k.hash); }));
}

void TierManager::CollectCopies() {
  if (spills_.empty() && loads_.empty()) return;
  copies_done_.clear();
  io_.PollCopies(copies_done_);
  for (const CopyDone& done : copies_done_) FinishCopy(done);
}

void TierManager::Poll() {
  CollectCopies();
  if (disk_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  previous_poll_ = std::exchange(last_poll_, now);
  for (const DiskCompletion& c : disk_->PollCompletions()) {
    if (c.op == DiskOp::kRead) {
      FinishRead(c);
    } else if (c.op == DiskOp::kWrite) {
      if (c.ok()) {
        ++counters_.spills_host_disk;
        counters_.bytes_host_disk += block_bytes();
      } else {
        ++counters_.disk_errors[static_cast<int>(c.result)];
      }
    }
  }
}

void TierManager::FinishRead(const DiskCompletion& c) {
  auto it = reads_.find(c.tag);
  SPW_CHECK(it != reads_.end()) << "completion of unknown read " << c.tag;
  Read read = std::move(it->second);
  reads_.erase(it);
  reading_.erase(read.key.hash);
  // NOTE(tiers): a failed read ends an exploration too, or a broken SSD would be retried on
  // every lookup; it gets its next chance after another explore_every passes.
  EndExploration(Tier::kDisk);
  if (!c.ok()) {
    ++counters_.disk_errors[static_cast<int>(c.result)];
    return;  // a miss: the prefix is recomputed from here
  }
  if (!KeyMatches(read.key, read.buffer)) {
    ++counters_.disk_key_mismatches;
    disk_->Erase(read.key.hash);
    return;
  }
  if (host_.Find(read.key.hash).has_value()) return;  // came back another way meanwhile
  const std::optional<int32_t> slot = AcquireHostSlot();
  if (!slot.has_value()) return;
  const std::span<std::byte> dst = host_.bytes(*slot);
  std::memcpy(dst.data(), read.buffer.data() + kDiskKeyBytes, dst.size());
  host_.Insert(*slot, read.key);
  from_disk_.insert(read.key.hash);
  const double seconds = SecondsSince(read.start);
  // NOTE(tiers): completions are collected once per engine step, so `seconds` includes the
  // wait for the step that was running (seconds on a long prefill) while the read itself was
  // long done. The cost model takes what the read certainly took instead: it was still in
  // flight at the previous poll. Never below a host copy of the same block.
  const double in_flight_us =
      std::max(0.0, std::chrono::duration<double, std::micro>(previous_poll_ - read.start).count());
  Smooth(costs_.disk_us_per_block, std::max(in_flight_us, costs_.host_us_per_block));
  ObserveLoad(seconds);
  ++counters_.loads_disk_host;
  counters_.bytes_disk_host += block_bytes();
}

void TierManager::ObserveLoad(double seconds) {
  const auto bucket =
      std::lower_bound(kLoadSecondsBuckets.begin(), kLoadSecondsBuckets.end(), seconds) -
      kLoadSecondsBuckets.begin();
  ++counters_.load_buckets[bucket];
  counters_.load_seconds_sum += seconds;
}

void TierManager::ObserveRecompute(int32_t num_tokens, double seconds) {
  if (num_tokens <= 0) return;
  Smooth(costs_.recompute_us_per_block, seconds * 1e6 / num_tokens * kBlockTokens);
  // NOTE(tiers): exploration. A tier that lost to recompute is never loaded from, so its
  // estimate would never change again, even after what slowed it (a busy disk, a cold page
  // cache) is gone. Every explore_every-th forward pass while it loses opens it for one load,
  // whose measurement moves the estimate by kCostSmoothing; a tier that really got faster
  // wins again after a few such loads. Counting forward passes (what recompute costs) rather
  // than lookups keeps WorthLoading const and the price bounded: at most one request's prefix
  // per explore_every passes is loaded from a slower tier instead of recomputed.
  if (explore_every_ == 0) return;
  for (const Tier tier : {Tier::kHost, Tier::kDisk}) {
    const int t = static_cast<int>(tier);
    const double cost = tier == Tier::kHost ? costs_.host_us_per_block : costs_.disk_us_per_block;
    if (cost < costs_.recompute_us_per_block || explore_[t]) {
      if (!explore_[t]) lost_passes_[t] = 0;
      continue;
    }
    if (tier == Tier::kDisk && disk_ == nullptr) continue;
    if (tier == Tier::kHost && host_.num_slots() == 0) continue;
    if (++lost_passes_[t] >= explore_every_) {
      explore_[t] = true;
      ++counters_.explorations;
    }
  }
}

TierStats TierManager::stats() const {
  TierStats s = counters_;
  s.host_slots = host_.num_slots();
  s.host_used = host_.num_used();
  s.costs = costs_;
  s.spills_in_flight = static_cast<int32_t>(spills_.size());
  s.loads_in_flight = num_loads_in_flight();
  if (disk_ != nullptr) {
    const DiskTierStats d = disk_->stats();
    s.disk_enabled = true;
    s.disk_degraded = d.degraded;
    s.disk_capacity_blocks = d.capacity_blocks;
    s.disk_blocks = d.num_blocks;
  }
  return s;
}

}  // namespace spillway::kvcache
