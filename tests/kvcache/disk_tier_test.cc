// Exact-state tests of the SSD tier's block store (kvcache/disk/disk_tier.h) on real files in
// the build tree, with faults injected through tests/fakes/fault_file_layer.h.
#include "kvcache/disk/disk_tier.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "kvcache/disk/internal/disk_format.h"
#include "tests/fakes/fault_file_layer.h"
#include "tests/test_paths.h"

namespace spillway::kvcache {
namespace {

using ::spillway::testing::FaultFileLayer;

constexpr int64_t kBlockBytes = 1000;
constexpr int64_t kSlotBytes = 8192;  // 4 KiB header page + the payload rounded to 4 KiB
constexpr uint64_t kFingerprint = 0xfeed;

// Block contents that differ for every (key, version).
std::vector<std::byte> Block(uint64_t key, uint32_t version = 0) {
  std::vector<std::byte> bytes(kBlockBytes);
  uint64_t x = key * 0x9e3779b97f4a7c15ULL + version + 1;
  for (auto& b : bytes) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return bytes;
}

// "write 1 ok", "evicted 2", "read 3 checksum": completions in a form tests compare exactly.
std::string Describe(const std::vector<DiskCompletion>& completions) {
  std::vector<std::string> parts;
  for (const DiskCompletion& c : completions) {
    switch (c.op) {
      case DiskOp::kWrite:
        parts.push_back(absl::StrCat("write ", c.key, " ", std::string(DiskResultName(c.result))));
        break;
      case DiskOp::kRead:
        parts.push_back(absl::StrCat("read ", c.key, " ", std::string(DiskResultName(c.result))));
        break;
      case DiskOp::kEvicted:
        parts.push_back(absl::StrCat("evicted ", c.key));
        break;
    }
  }
  return absl::StrJoin(parts, ", ");
}

class DiskTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = spillway::testing::BinaryPath(absl::StrCat(
        "tmp/disk_tier_test/", ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  DiskTierOptions Options(int64_t num_blocks, bool persist = false) {
    return {.path = dir_,
            .capacity_bytes = num_blocks * kSlotBytes,
            .block_bytes = kBlockBytes,
            .layout_fingerprint = kFingerprint,
            .persist = persist,
            .files = &faults_,
            .min_free_bytes = 0};
  }

  std::unique_ptr<DiskTier> OpenTier(const DiskTierOptions& options) {
    absl::StatusOr<std::unique_ptr<DiskTier>> tier = DiskTier::Open(options);
    EXPECT_TRUE(tier.ok()) << tier.status();
    return tier.ok() ? std::move(*tier) : nullptr;
  }

  // A tier holding `keys` (written, on disk, completions taken).
  std::unique_ptr<DiskTier> OpenWithBlocks(int64_t num_blocks, std::vector<uint64_t> keys,
                                           bool persist = false) {
    auto tier = OpenTier(Options(num_blocks, persist));
    for (uint64_t key : keys) EXPECT_TRUE(tier->SubmitWrite(key, Block(key)));
    tier->Flush();
    for (const DiskCompletion& c : tier->PollCompletions()) EXPECT_TRUE(c.ok());
    return tier;
  }

  // Reads `key` and waits; the result, and the bytes when it is OK.
  std::pair<DiskResult, std::vector<std::byte>> Read(DiskTier& tier, uint64_t key) {
    std::vector<std::byte> dst(kBlockBytes);
    if (!tier.SubmitRead(key, dst, /*tag=*/1000 + key)) return {DiskResult::kNotFound, {}};
    std::optional<DiskCompletion> done = tier.WaitForRead(1000 + key);
    EXPECT_TRUE(done.has_value());
    if (!done) return {DiskResult::kIoError, {}};
    EXPECT_EQ(done->key, key);
    if (!done->ok()) return {done->result, {}};
    return {DiskResult::kOk, dst};
  }

  std::string SlabPath(int file = 0) const {
    return absl::StrCat(dir_, "/slab-", std::string(4, '0'), file, ".spw");
  }

  std::string dir_;
  FaultFileLayer faults_;
};

TEST_F(DiskTierTest, WrittenBlocksReadBackExactly) {
  auto tier = OpenTier(Options(4));
  ASSERT_TRUE(tier);
  for (uint64_t key : {7, 8, 9}) EXPECT_TRUE(tier->SubmitWrite(key, Block(key)));
  // A read queued right behind its write sees that write.
  EXPECT_EQ(Read(*tier, 9), std::pair(DiskResult::kOk, Block(9)));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 7 ok, write 8 ok, write 9 ok");
  EXPECT_EQ(Read(*tier, 7), std::pair(DiskResult::kOk, Block(7)));
  EXPECT_EQ(Read(*tier, 8), std::pair(DiskResult::kOk, Block(8)));
  EXPECT_TRUE(tier->PollCompletions().empty());  // WaitForRead took the read completions

  DiskTierStats s = tier->stats();
  EXPECT_EQ(s.num_blocks, 3);
  EXPECT_EQ(s.capacity_blocks, 4);
  EXPECT_EQ(s.slot_bytes, kSlotBytes);
  EXPECT_EQ(s.used_bytes, 3 * kSlotBytes);
  EXPECT_EQ(s.capacity_bytes, 4 * kSlotBytes);
  EXPECT_EQ(s.num_writes, 3);
  EXPECT_EQ(s.num_reads, 3);
  EXPECT_EQ(s.bytes_written, 3 * kBlockBytes);
  EXPECT_EQ(s.num_queued_ops, 0);
  EXPECT_FALSE(s.degraded);
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{7, 8, 9}));
  // One slab file; slots are taken lowest first, so key 9 sits in slot 2.
  EXPECT_EQ(std::filesystem::file_size(SlabPath()), 2 * kSlotBytes + 4096 + kBlockBytes);
}

TEST_F(DiskTierTest, TheCallerNeverWaitsForTheDisk) {
  auto tier = OpenTier(Options(2));
  faults_.HoldWrites();
  tier->SubmitWrite(1, Block(1));
  faults_.AwaitHeldWrite();  // the I/O thread is stuck inside the disk from here on
  // Every call but WaitForRead / Flush / SaveIndex returns while the disk is stuck.
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2)));
  EXPECT_TRUE(tier->SubmitWrite(3, Block(3)));  // evicts 1, whose write is still in progress
  std::vector<std::byte> dst(kBlockBytes);
  EXPECT_TRUE(tier->SubmitRead(2, dst, 9));
  EXPECT_TRUE(tier->Contains(3));
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(Describe(tier->PollCompletions()), "evicted 1");
  tier->Erase(3);
  EXPECT_EQ(tier->stats().num_queued_ops, 4);
  faults_.ReleaseWrites();
  EXPECT_EQ(tier->WaitForRead(9)->result, DiskResult::kOk);
  EXPECT_EQ(dst, Block(2));
}

TEST_F(DiskTierTest, ReadsOfUnknownKeysAreRefusedAtOnce) {
  auto tier = OpenTier(Options(2));
  std::vector<std::byte> dst(kBlockBytes);
  EXPECT_FALSE(tier->SubmitRead(5, dst, 1));
  EXPECT_FALSE(tier->WaitForRead(1).has_value());
  EXPECT_FALSE(tier->Contains(5));
}

TEST_F(DiskTierTest, EvictsTheLeastRecentlyWrittenBlockAtCapacity) {
  auto tier = OpenTier(Options(3));
  for (uint64_t key : {1, 2, 3}) tier->SubmitWrite(key, Block(key));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 ok, write 2 ok, write 3 ok");
  EXPECT_TRUE(tier->SubmitWrite(4, Block(4)));  // full: 1 goes, reported at once
  EXPECT_FALSE(tier->Contains(1));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "evicted 1, write 4 ok");
  faults_.HoldWrites();                            // so that the order of completions is fixed
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2, 1)));  // rewriting 2 makes it the newest
  EXPECT_TRUE(tier->SubmitWrite(5, Block(5)));     // so 3 goes, not 2
  faults_.ReleaseWrites();
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "evicted 3, write 2 ok, write 5 ok");
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{4, 2, 5}));
  EXPECT_FALSE(tier->Contains(1));
  EXPECT_FALSE(tier->Contains(3));
  EXPECT_EQ(Read(*tier, 2), std::pair(DiskResult::kOk, Block(2, 1)));
  EXPECT_EQ(Read(*tier, 4), std::pair(DiskResult::kOk, Block(4)));
  EXPECT_EQ(Read(*tier, 5), std::pair(DiskResult::kOk, Block(5)));
  EXPECT_EQ(tier->stats().num_evictions, 2);
  EXPECT_EQ(tier->stats().num_blocks, 3);
}

TEST_F(DiskTierTest, PinnedBlocksAreNeverEvicted) {
  auto tier = OpenTier(Options(2));
  EXPECT_TRUE(tier->SubmitWrite(1, Block(1), /*pinned=*/true));
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2), /*pinned=*/true));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 ok, write 2 ok");
  EXPECT_FALSE(tier->SubmitWrite(3, Block(3)));  // full of pinned blocks: nothing changes
  EXPECT_EQ(tier->stats().num_pinned_blocks, 2);
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{1, 2}));
  tier->Unpin(2);
  EXPECT_TRUE(tier->SubmitWrite(3, Block(3)));  // 2 is the only candidate
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "evicted 2, write 3 ok");
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(tier->stats().num_pinned_blocks, 1);
  tier->Erase(1);  // Erase releases a pinned block too
  EXPECT_TRUE(tier->SubmitWrite(4, Block(4)));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 4 ok");
  EXPECT_EQ(Read(*tier, 4), std::pair(DiskResult::kOk, Block(4)));
}

TEST_F(DiskTierTest, EraseFreesTheSlotAndAnEarlierQueuedReadStillRuns) {
  auto tier = OpenTier(Options(1));
  faults_.HoldWrites();  // so that the order of completions is fixed
  tier->SubmitWrite(1, Block(1));
  std::vector<std::byte> dst(kBlockBytes);
  ASSERT_TRUE(tier->SubmitRead(1, dst, 42));
  tier->Erase(1);
  EXPECT_FALSE(tier->Contains(1));
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2)));  // reuses slot 0 without an eviction
  faults_.ReleaseWrites();
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 ok, read 1 ok, write 2 ok");
  EXPECT_EQ(dst, Block(1));
  EXPECT_EQ(Read(*tier, 2), std::pair(DiskResult::kOk, Block(2)));
}

TEST_F(DiskTierTest, FlippedPayloadByteIsAChecksumMiss) {
  auto tier = OpenWithBlocks(2, {1, 2});
  faults_.FlipByteOnRead(SlabPath(), kSlotBytes + 4096 + 500);  // inside key 2's payload
  EXPECT_EQ(Read(*tier, 2).first, DiskResult::kChecksumMismatch);
  EXPECT_FALSE(tier->Contains(2));  // never trusted again
  EXPECT_EQ(Read(*tier, 1), std::pair(DiskResult::kOk, Block(1)));
  DiskTierStats s = tier->stats();
  EXPECT_EQ(s.errors[static_cast<int>(DiskResult::kChecksumMismatch)], 1);
  EXPECT_EQ(s.num_blocks, 1);
  EXPECT_FALSE(s.degraded);  // a bad block is a miss, not a broken tier
}

TEST_F(DiskTierTest, FlippedByteOnTheRealFileIsAMissOfTheRightKind) {
  auto tier = OpenWithBlocks(3, {1, 2, 3});
  auto flip = [&](int64_t offset) {
    std::fstream f(SlabPath(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(offset);
    char c = static_cast<char>(f.get());
    f.seekp(offset);
    f.put(static_cast<char>(c ^ 0x01));
  };
  flip(0 * kSlotBytes + 4096 + kBlockBytes - 1);  // key 1: last payload byte
  flip(1 * kSlotBytes + 17);                      // key 2: inside the key field of the header
  flip(2 * kSlotBytes + 4000);                    // key 3: header padding, never read
  EXPECT_EQ(Read(*tier, 1).first, DiskResult::kChecksumMismatch);
  EXPECT_EQ(Read(*tier, 2).first, DiskResult::kHeaderMismatch);
  EXPECT_EQ(Read(*tier, 3), std::pair(DiskResult::kOk, Block(3)));
}

TEST_F(DiskTierTest, DeletedSlabFileIsAMissForEveryBlockInIt) {
  auto tier = OpenWithBlocks(2, {1});
  ASSERT_TRUE(faults_.DeleteFile(SlabPath()).ok());
  EXPECT_EQ(Read(*tier, 1).first, DiskResult::kNotFound);
  EXPECT_FALSE(tier->Contains(1));
  EXPECT_EQ(tier->stats().errors[static_cast<int>(DiskResult::kNotFound)], 1);
}

TEST_F(DiskTierTest, TruncatedSlabFileIsAShortRead) {
  auto tier = OpenWithBlocks(2, {1, 2});
  std::filesystem::resize_file(SlabPath(), kSlotBytes + 4096 + 10);
  EXPECT_EQ(Read(*tier, 2).first, DiskResult::kShortRead);
  EXPECT_EQ(Read(*tier, 1), std::pair(DiskResult::kOk, Block(1)));
}

TEST_F(DiskTierTest, FailedWriteDegradesTheTierAndGoodBlocksStayReadable) {
  auto tier = OpenTier(Options(4));
  tier->SubmitWrite(1, Block(1));
  tier->Flush();
  faults_.FailWrites(true);
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2)));  // accepted; fails on the I/O thread
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 ok, write 2 io_error");
  EXPECT_TRUE(tier->degraded());
  EXPECT_FALSE(tier->Contains(2));
  faults_.FailWrites(false);
  EXPECT_FALSE(tier->SubmitWrite(3, Block(3)));  // refused while degraded
  EXPECT_EQ(Read(*tier, 1), std::pair(DiskResult::kOk, Block(1)));
  DiskTierStats s = tier->stats();
  EXPECT_TRUE(s.degraded);
  EXPECT_EQ(s.errors[static_cast<int>(DiskResult::kIoError)], 1);
  EXPECT_EQ(s.num_blocks, 1);
}

TEST_F(DiskTierTest, EnospcDegradesTheTier) {
  auto tier = OpenTier(Options(4));
  faults_.NoSpace(true);
  tier->SubmitWrite(1, Block(1));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 no_space");
  EXPECT_TRUE(tier->degraded());
  EXPECT_EQ(tier->stats().errors[static_cast<int>(DiskResult::kNoSpace)], 1);
  EXPECT_EQ(tier->stats().num_blocks, 0);
}

TEST_F(DiskTierTest, WritesResumeAfterTheNoSpaceRetryDelay) {
  DiskTierOptions options = Options(4);
  options.no_space_retry_ms = 0;  // retry at the next write
  auto tier = OpenTier(options);
  faults_.NoSpace(true);
  tier->SubmitWrite(1, Block(1));
  tier->Flush();
  EXPECT_TRUE(tier->degraded());
  EXPECT_TRUE(tier->SubmitWrite(2, Block(2)));  // retried, and the disk is still full
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 no_space, write 2 no_space");
  faults_.NoSpace(false);  // room again
  EXPECT_TRUE(tier->SubmitWrite(3, Block(3)));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 3 ok");
  EXPECT_FALSE(tier->degraded());
  EXPECT_EQ(Read(*tier, 3), std::pair(DiskResult::kOk, Block(3)));
  EXPECT_EQ(tier->stats().errors[static_cast<int>(DiskResult::kNoSpace)], 2);
}

TEST_F(DiskTierTest, AnIoErrorIsNeverRetried) {
  DiskTierOptions options = Options(4);
  options.no_space_retry_ms = 0;
  auto tier = OpenTier(options);
  faults_.FailWrites(true);
  tier->SubmitWrite(1, Block(1));
  tier->Flush();
  faults_.FailWrites(false);
  EXPECT_FALSE(tier->SubmitWrite(2, Block(2)));
  EXPECT_TRUE(tier->degraded());
}

TEST_F(DiskTierTest, TheIndexIsSavedPeriodically) {
  DiskTierOptions options = Options(4, /*persist=*/true);
  options.persist_interval_ms = 1;
  auto tier = OpenTier(options);
  tier->SubmitWrite(5, Block(5));
  tier->Flush();
  // No SaveIndex: the I/O thread saves on its own. Wait (bounded) for the index to name key 5.
  const std::string index = dir_ + "/index.spw";
  auto names_key_5 = [&] {
    std::error_code ec;
    return std::filesystem::file_size(index, ec) == 64 + 24 + 8;  // header, 1 entry, checksum
  };
  for (int i = 0; i < 5000 && !names_key_5(); ++i) usleep(1000);
  ASSERT_TRUE(names_key_5());
  const std::string crashed = dir_ + "-crashed";
  std::filesystem::remove_all(crashed);
  std::filesystem::copy(dir_, crashed);
  options.path = crashed;
  auto restarted = OpenTier(options);
  EXPECT_EQ(restarted->Keys(), (std::vector<uint64_t>{5}));
  EXPECT_EQ(Read(*restarted, 5), std::pair(DiskResult::kOk, Block(5)));
}

TEST_F(DiskTierTest, LowFreeSpaceDegradesBeforeWriting) {
  DiskTierOptions options = Options(4);
  options.min_free_bytes = 1 << 20;
  auto tier = OpenTier(options);
  faults_.SetFreeBytes((1 << 20) + kSlotBytes);  // exactly enough for one more block
  tier->SubmitWrite(1, Block(1));
  tier->Flush();
  faults_.SetFreeBytes((1 << 20) + kSlotBytes - 1);
  tier->SubmitWrite(1, Block(1, 1));  // in place: the file does not grow, no check
  tier->SubmitWrite(2, Block(2));     // grows the file past the reserve
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 1 ok, write 1 ok, write 2 no_space");
  EXPECT_EQ(faults_.num_write_calls(), 4);  // payload + header, twice; nothing for key 2
  EXPECT_TRUE(tier->degraded());
  EXPECT_EQ(Read(*tier, 1), std::pair(DiskResult::kOk, Block(1, 1)));
}

TEST_F(DiskTierTest, QueuedWritesAreDroppedWhenTheTierDegrades) {
  auto tier = OpenTier(Options(8));
  faults_.HoldWrites();
  tier->SubmitWrite(1, Block(1));
  faults_.AwaitHeldWrite();  // the I/O thread is inside key 1's write
  tier->SubmitWrite(2, Block(2));
  std::vector<std::byte> dst(kBlockBytes);
  ASSERT_TRUE(tier->SubmitRead(2, dst, 7));  // queued behind a write that will be dropped
  tier->SubmitWrite(3, Block(3));
  faults_.FailWrites(true);
  faults_.ReleaseWrites();
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()),
            "write 2 dropped, write 3 dropped, write 1 io_error, read 2 short_read");
  EXPECT_EQ(tier->stats().num_blocks, 0);
  EXPECT_EQ(tier->stats().errors[static_cast<int>(DiskResult::kDropped)], 2);
}

TEST_F(DiskTierTest, PersistedIndexIsReusedAfterARestart) {
  {
    auto tier = OpenTier(Options(4, /*persist=*/true));
    for (uint64_t key : {5, 6, 7}) tier->SubmitWrite(key, Block(key));
    tier->SubmitWrite(8, Block(8), /*pinned=*/true);  // a sequence's block: not persisted
    tier->Erase(6);
  }
  auto tier = OpenTier(Options(4, /*persist=*/true));
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{5, 7}));
  EXPECT_EQ(Read(*tier, 5), std::pair(DiskResult::kOk, Block(5)));
  EXPECT_EQ(Read(*tier, 7), std::pair(DiskResult::kOk, Block(7)));
  // The free slots are the erased one and the pinned one's: two writes fit without eviction.
  tier->SubmitWrite(9, Block(9));
  tier->SubmitWrite(10, Block(10));
  tier->Flush();
  EXPECT_EQ(Describe(tier->PollCompletions()), "write 9 ok, write 10 ok");
  EXPECT_EQ(tier->Keys(), (std::vector<uint64_t>{5, 7, 9, 10}));
}

TEST_F(DiskTierTest, AnotherLayoutFingerprintDiscardsTheOldIndexAndFiles) {
  OpenWithBlocks(4, {5}, /*persist=*/true);  // and closed again
  DiskTierOptions other = Options(4, /*persist=*/true);
  other.layout_fingerprint = kFingerprint + 1;
  auto tier = OpenTier(other);
  EXPECT_TRUE(tier->Keys().empty());
  EXPECT_FALSE(tier->Contains(5));
  EXPECT_EQ(std::filesystem::file_size(SlabPath()), 0u);  // the old slab was removed
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/index.spw"));
}

TEST_F(DiskTierTest, CorruptIndexIsDiscarded) {
  OpenWithBlocks(4, {5}, /*persist=*/true);  // and closed again
  {
    std::fstream f(dir_ + "/index.spw", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(70);
    f.put('x');
  }
  auto tier = OpenTier(Options(4, /*persist=*/true));
  EXPECT_TRUE(tier->Keys().empty());
}

TEST_F(DiskTierTest, MissingSlabFileDropsItsPersistedBlocks) {
  OpenWithBlocks(4, {5}, /*persist=*/true);  // and closed again
  std::filesystem::remove(SlabPath());
  auto tier = OpenTier(Options(4, /*persist=*/true));
  EXPECT_TRUE(tier->Keys().empty());
}

TEST_F(DiskTierTest, SavedIndexSurvivesACrashAndAStaleEntryIsAMiss) {
  auto tier = OpenTier(Options(1, /*persist=*/true));
  tier->SubmitWrite(5, Block(5));
  ASSERT_TRUE(tier->SaveIndex().ok());
  const std::string crashed = dir_ + "-crashed";
  std::filesystem::remove_all(crashed);
  std::filesystem::copy(dir_, crashed);  // the files as a crash right now would leave them
  // Slot 0 now gets another key, but the saved index still says key 5 lives there.
  tier->Erase(5);
  tier->SubmitWrite(6, Block(6));
  tier->Flush();
  std::filesystem::copy_file(SlabPath(), crashed + "/slab-00000.spw",
                             std::filesystem::copy_options::overwrite_existing);

  DiskTierOptions options = Options(1, /*persist=*/true);
  options.path = crashed;
  auto restarted = OpenTier(options);
  EXPECT_EQ(restarted->Keys(), (std::vector<uint64_t>{5}));
  EXPECT_EQ(Read(*restarted, 5).first, DiskResult::kHeaderMismatch);
  EXPECT_FALSE(restarted->Contains(5));
}

TEST_F(DiskTierTest, OpenWithoutPersistRemovesOnlyItsOwnFiles) {
  OpenWithBlocks(4, {5}, /*persist=*/true);  // and closed again
  std::ofstream(dir_ + "/notes.txt") << "not the tier's";
  auto tier = OpenTier(Options(4));
  EXPECT_TRUE(tier->Keys().empty());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/notes.txt"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/index.spw"));
  EXPECT_EQ(std::filesystem::file_size(SlabPath()), 0u);
}

TEST_F(DiskTierTest, ADirectoryServesOneTierAtATime) {
  auto tier = OpenTier(Options(2));
  EXPECT_EQ(DiskTier::Open(Options(2)).status().code(), absl::StatusCode::kFailedPrecondition);
  tier.reset();
  EXPECT_TRUE(DiskTier::Open(Options(2)).ok());
}

TEST_F(DiskTierTest, SaveIndexNeedsPersistMode) {
  auto tier = OpenTier(Options(4));
  EXPECT_EQ(tier->SaveIndex().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DiskTierTest, BadOptionsAreRefused) {
  DiskTierOptions options = Options(4);
  options.capacity_bytes = kSlotBytes - 1;
  EXPECT_EQ(DiskTier::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options(4);
  options.block_bytes = 0;
  EXPECT_EQ(DiskTier::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
}

// A real full filesystem: a 64 KiB tmpfs mounted in a private user and mount namespace (no root
// needed where unprivileged user namespaces are allowed; the test skips elsewhere). It runs in a
// forked child, since unshare(CLONE_NEWUSER) needs a single-threaded process.
TEST_F(DiskTierTest, RealFullFilesystemDegradesTheTier) {
  std::filesystem::create_directories(dir_);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) _exit(77);
    std::ofstream("/proc/self/setgroups") << "deny";
    std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
    std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") != 0) _exit(77);
    DiskTierOptions options = Options(64);  // 512 KiB of slots on a 64 KiB filesystem
    options.files = nullptr;                // the real POSIX layer
    options.min_free_bytes = -1;            // learn of the full disk from ENOSPC itself
    auto tier = DiskTier::Open(options);
    if (!tier.ok()) _exit(10);
    int written = 0;
    for (uint64_t key = 1; key <= 64 && (*tier)->SubmitWrite(key, Block(key)); ++key) {
      (*tier)->Flush();
      for (const DiskCompletion& c : (*tier)->PollCompletions()) written += c.ok();
    }
    if (!(*tier)->degraded()) _exit(11);
    if ((*tier)->stats().errors[static_cast<int>(DiskResult::kNoSpace)] != 1) _exit(12);
    if (written < 1 || (*tier)->stats().num_blocks != written) _exit(13);
    for (uint64_t key = 1; key <= static_cast<uint64_t>(written); ++key) {
      if (Read(**tier, key) != std::pair(DiskResult::kOk, Block(key))) _exit(14);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot mount a tmpfs in a user namespace here";
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10: Open failed, 11: not degraded, 12: no_space not counted once, 13: block count, "
         "14: a good block did not read back";
}

}  // namespace
}  // namespace spillway::kvcache
