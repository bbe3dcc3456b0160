// Randomized tests of the SSD tier's block store (kvcache/disk/disk_tier.h): thousands of
// random writes, reads, erases, unpins, flushes and restarts checked against a simple in-memory
// reference model after every operation, and a run with random corruption and write failures
// where the only promise is the one that matters: a read that succeeds returns exactly the
// bytes last written under its key.
#include <algorithm>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvcache/disk/disk_tier.h"
#include "tests/fakes/fault_file_layer.h"
#include "tests/test_paths.h"

namespace spillway::kvcache {
namespace {

constexpr int64_t kBlockBytes = 512;
constexpr int64_t kSlotBytes = 8192;
constexpr int64_t kNumSlots = 8;
constexpr uint64_t kNumKeys = 20;

std::vector<std::byte> Block(uint64_t key, uint32_t version) {
  std::vector<std::byte> bytes(kBlockBytes);
  uint64_t x = key * 0x9e3779b97f4a7c15ULL + version * 0xbf58476d1ce4e5b9ULL + 1;
  for (auto& b : bytes) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return bytes;
}

std::string TempDir() {
  std::string dir = spillway::testing::BinaryPath(
      absl::StrCat("tmp/disk_tier_random_test/",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name()));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return dir;
}

// What the tier should hold: the LRU (least recently written unpinned key first) and, per key,
// the version of its contents, whether it is pinned and its write order.
class ReferenceModel {
 public:
  struct Block {
    uint32_t version = 0;
    bool pinned = false;
    uint64_t seq = 0;
  };

  // Returns whether the write is accepted; `evicted` gets the key it pushed out, if any.
  bool Write(uint64_t key, uint32_t version, bool pinned, std::optional<uint64_t>& evicted) {
    evicted.reset();
    if (!blocks_.contains(key) && std::ssize(blocks_) == kNumSlots) {
      if (lru_.empty()) return false;
      evicted = lru_.front();
      Erase(*evicted);
    }
    Erase(key);
    blocks_[key] = {.version = version, .pinned = pinned, .seq = next_seq_++};
    if (!pinned) lru_.push_back(key);
    return true;
  }
  void Erase(uint64_t key) {
    blocks_.erase(key);
    lru_.remove(key);
  }
  void Unpin(uint64_t key) {
    auto it = blocks_.find(key);
    if (it == blocks_.end() || !it->second.pinned) return;
    it->second.pinned = false;
    lru_.push_back(key);
  }
  // A restart in persist mode: pinned blocks are gone, and the LRU is the write order.
  void Restart() {
    std::erase_if(blocks_, [](const auto& kv) { return kv.second.pinned; });
    std::vector<uint64_t> keys = Keys();
    lru_.assign(keys.begin(), keys.end());
  }
  std::vector<uint64_t> Keys() const {
    std::vector<std::pair<uint64_t, uint64_t>> by_seq;
    for (const auto& [key, b] : blocks_) by_seq.emplace_back(b.seq, key);
    std::sort(by_seq.begin(), by_seq.end());
    std::vector<uint64_t> keys;
    for (const auto& [seq, key] : by_seq) keys.push_back(key);
    return keys;
  }
  const Block* Find(uint64_t key) const {
    auto it = blocks_.find(key);
    return it == blocks_.end() ? nullptr : &it->second;
  }
  int64_t size() const { return std::ssize(blocks_); }
  int64_t num_pinned() const { return size() - std::ssize(lru_); }

 private:
  std::map<uint64_t, Block> blocks_;
  std::list<uint64_t> lru_;
  uint64_t next_seq_ = 0;
};

struct PendingRead {
  std::vector<std::byte> dst;
  std::vector<std::byte> expected{};  // empty when the read must miss
};

TEST(DiskTierRandomTest, MatchesAReferenceModelOverThousandsOfOperations) {
  const DiskTierOptions options{.path = TempDir(),
                                .capacity_bytes = kNumSlots * kSlotBytes,
                                .block_bytes = kBlockBytes,
                                .layout_fingerprint = 7,
                                .persist = true,
                                .persist_interval_ms = 0,
                                .min_free_bytes = 0};
  auto opened = DiskTier::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<DiskTier> tier = std::move(*opened);
  ReferenceModel model;
  std::mt19937_64 rng(12345);
  std::map<uint64_t, PendingRead> reads;  // by tag
  std::vector<uint64_t> expected_evictions;
  std::vector<uint64_t> evictions;
  uint32_t next_version = 1;
  uint64_t next_tag = 1;
  int64_t num_reads_checked = 0;

  auto drain = [&] {
    for (const DiskCompletion& c : tier->PollCompletions()) {
      if (c.op == DiskOp::kEvicted) {
        evictions.push_back(c.key);
        continue;
      }
      ASSERT_TRUE(c.ok()) << "key " << c.key << ": " << DiskResultName(c.result);
      if (c.op == DiskOp::kRead) {
        auto it = reads.find(c.tag);
        ASSERT_NE(it, reads.end());
        ASSERT_EQ(it->second.dst, it->second.expected) << "read of key " << c.key;
        reads.erase(it);
        ++num_reads_checked;
      }
    }
  };

  for (int step = 0; step < 6000; ++step) {
    uint64_t key = rng() % kNumKeys;
    int op = static_cast<int>(rng() % 1000);  // per mille
    if (op < 400) {
      bool pinned = rng() % 8 == 0;
      uint32_t version = next_version++;
      std::optional<uint64_t> evicted;
      bool accepted = model.Write(key, version, pinned, evicted);
      ASSERT_EQ(tier->SubmitWrite(key, Block(key, version), pinned), accepted) << "step " << step;
      if (evicted) expected_evictions.push_back(*evicted);
    } else if (op < 750) {
      const ReferenceModel::Block* b = model.Find(key);
      PendingRead read{.dst = std::vector<std::byte>(kBlockBytes)};
      if (b != nullptr) read.expected = Block(key, b->version);
      uint64_t tag = next_tag++;
      auto [it, inserted] = reads.emplace(tag, std::move(read));
      ASSERT_EQ(tier->SubmitRead(key, it->second.dst, tag), b != nullptr) << "step " << step;
      if (b == nullptr) reads.erase(it);
    } else if (op < 850) {
      model.Erase(key);
      tier->Erase(key);
    } else if (op < 920) {
      model.Unpin(key);
      tier->Unpin(key);
    } else if (op < 997) {
      if (rng() % 2) tier->Flush();
      drain();
    } else {  // restart: everything queued finishes first
      tier->Flush();
      drain();
      ASSERT_TRUE(reads.empty());
      tier.reset();
      opened = DiskTier::Open(options);
      ASSERT_TRUE(opened.ok()) << opened.status();
      tier = std::move(*opened);
      model.Restart();
    }
    if (HasFatalFailure()) return;
    ASSERT_EQ(tier->Keys(), model.Keys()) << "step " << step;
    DiskTierStats s = tier->stats();
    ASSERT_EQ(s.num_blocks, model.size());
    ASSERT_EQ(s.num_pinned_blocks, model.num_pinned());
    ASSERT_FALSE(s.degraded);
  }
  tier->Flush();
  drain();
  EXPECT_TRUE(reads.empty());
  EXPECT_EQ(evictions, expected_evictions);
  EXPECT_GT(num_reads_checked, 500);
  EXPECT_GT(evictions.size(), 100u);
}

TEST(DiskTierRandomTest, CorruptionAndFailedWritesNeverGiveWrongBytes) {
  spillway::testing::FaultFileLayer faults;
  const DiskTierOptions options{.path = TempDir(),
                                .capacity_bytes = kNumSlots * kSlotBytes,
                                .block_bytes = kBlockBytes,
                                .layout_fingerprint = 7,
                                .files = &faults,
                                .min_free_bytes = 0};
  auto opened = DiskTier::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<DiskTier> tier = std::move(*opened);
  const std::string slab = options.path + "/slab-00000.spw";
  std::mt19937_64 rng(777);
  std::map<uint64_t, uint32_t> versions;  // the last version written under each key
  std::map<uint64_t, PendingRead> reads;
  uint32_t next_version = 1;
  uint64_t next_tag = 1;
  int64_t num_ok = 0, num_misses = 0;
  for (int step = 0; step < 4000; ++step) {
    uint64_t key = rng() % kNumKeys;
    int op = static_cast<int>(rng() % 100);
    if (step == 3000) {  // from here on the tier is degraded
      tier->Flush();
      faults.FailWrites(true);
    }
    if (op < 40) {
      uint32_t version = next_version++;
      if (tier->SubmitWrite(key, Block(key, version))) {
        versions[key] = version;
      } else {
        ASSERT_TRUE(tier->degraded()) << "only a degraded tier refuses unpinned writes";
      }
    } else if (op < 80) {
      uint64_t tag = next_tag++;
      auto [it, inserted] =
          reads.emplace(tag, PendingRead{.dst = std::vector<std::byte>(kBlockBytes)});
      if (tier->Contains(key)) it->second.expected = Block(key, versions[key]);
      if (!tier->SubmitRead(key, it->second.dst, tag)) reads.erase(it);
    } else if (op < 85) {
      faults.FlipByteOnRead(slab, static_cast<int64_t>(rng() % (kNumSlots * kSlotBytes)));
    } else {
      if (rng() % 2) tier->Flush();
      for (const DiskCompletion& c : tier->PollCompletions()) {
        if (c.op != DiskOp::kRead) continue;
        auto it = reads.find(c.tag);
        ASSERT_NE(it, reads.end());
        if (c.ok()) {
          ASSERT_EQ(it->second.dst, it->second.expected) << "step " << step << " key " << c.key;
          ++num_ok;
        } else {
          ++num_misses;
        }
        reads.erase(it);
      }
    }
  }
  tier->Flush();
  for (const DiskCompletion& c : tier->PollCompletions()) {
    if (c.op != DiskOp::kRead) continue;
    const PendingRead& read = reads.at(c.tag);
    if (c.ok()) {
      EXPECT_EQ(read.dst, read.expected) << "key " << c.key;
    }
    reads.erase(c.tag);
  }
  EXPECT_TRUE(reads.empty());
  EXPECT_TRUE(tier->degraded());
  EXPECT_GT(num_ok, 100);
  EXPECT_GT(num_misses, 10);
  DiskTierStats s = tier->stats();
  EXPECT_EQ(s.errors[static_cast<int>(DiskResult::kIoError)], 1);
  EXPECT_GT(s.errors[static_cast<int>(DiskResult::kChecksumMismatch)] +
                s.errors[static_cast<int>(DiskResult::kHeaderMismatch)],
            0);
}

}  // namespace
}  // namespace spillway::kvcache
