// TierManager's cost choice on a one-slot host tier, exact state (STYLE.md §9): a tier whose
// measured load cost rose above recompute's is not used, is opened for one exploratory load
// after every `explore_every` forward passes while it loses, and is used again for good once
// such a load measures it faster than recompute.
#include "kvcache/tier_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/kvcache/fake_block_io.h"

namespace spillway::kvcache {
namespace {

using testing::FakeBlockIo;

constexpr int64_t kBlockBytes = 256;
// Recompute measured at 20 ms per block: 16 tokens in 20 ms.
constexpr double kRecomputeSeconds = 0.020;

// A FakeBlockIo whose device writes (host -> device loads) take `write_delay`.
class SlowBlockIo final : public BlockIo {
 public:
  SlowBlockIo() : fake_(2, kBlockBytes) {}
  int64_t block_bytes() const override { return kBlockBytes; }
  absl::Status Read(BlockId block, std::span<std::byte> dst) override {
    return fake_.Read(block, dst);
  }
  absl::Status Write(BlockId block, std::span<const std::byte> src) override {
    std::this_thread::sleep_for(write_delay);
    return fake_.Write(block, src);
  }
  FakeBlockIo& fake() { return fake_; }
  std::chrono::milliseconds write_delay{0};

 private:
  FakeBlockIo fake_;
};

BlockKey Key(BlockHash hash) { return BlockKey{.hash = hash, .parent = 1, .tokens = {}}; }

// Spills device block 0 (filled for `hash`) to the host and loads it back into block 1.
void RoundTrip(TierManager& tiers, SlowBlockIo& io, BlockHash hash) {
  io.fake().Fill(0, hash);
  tiers.SpillFromDevice(0, Key(hash));
  ASSERT_EQ(tiers.Locate(Key(hash)), Tier::kHost);
  tiers.PinHost(Key(hash));
  const absl::StatusOr<Tier> origin = tiers.LoadToDevice(Key(hash), 1);
  ASSERT_TRUE(origin.ok()) << origin.status();
  EXPECT_EQ(*origin, Tier::kHost);
  EXPECT_TRUE(io.fake().Holds(1, hash));
}

TierManager::Options HostOnly(int32_t explore_every) {
  return {.host_slots = 1,
          .disk = nullptr,
          .costs = {.host_us_per_block = 50,
                    .disk_us_per_block = 1'000,
                    .recompute_us_per_block = kRecomputeSeconds * 1e6},
          .explore_every = explore_every};
}

TEST(TierManagerCosts, SlowTierComesBackAfterItsRealCostFalls) {
  SlowBlockIo io;
  TierManager tiers(io, HostOnly(/*explore_every=*/4));
  ASSERT_TRUE(tiers.WorthLoading(Tier::kHost));

  // One load that takes 120 ms: 50 + 0.2 * (120,000 - 50) >= 24,040 us > 20,000 us.
  io.write_delay = std::chrono::milliseconds(120);
  RoundTrip(tiers, io, 7);
  EXPECT_GE(tiers.stats().costs.host_us_per_block, 24'040);
  EXPECT_FALSE(tiers.WorthLoading(Tier::kHost));

  // The host copy is fast again, but nothing measures it until the tier is explored.
  io.write_delay = std::chrono::milliseconds(0);
  for (int pass = 1; pass <= 3; ++pass) {
    tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
    EXPECT_FALSE(tiers.exploring(Tier::kHost)) << pass;
    EXPECT_FALSE(tiers.WorthLoading(Tier::kHost)) << pass;
  }
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);  // the 4th pass it lost
  EXPECT_TRUE(tiers.exploring(Tier::kHost));
  EXPECT_TRUE(tiers.WorthLoading(Tier::kHost));
  EXPECT_EQ(tiers.stats().explorations, 1);
  // Further passes while it is open change nothing: one exploration at a time.
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  EXPECT_EQ(tiers.stats().explorations, 1);
  // No SSD tier: it is never explored.
  EXPECT_FALSE(tiers.exploring(Tier::kDisk));

  // The exploratory load measures a fast copy: 0.8 * 24,040+ + 0.2 * t < 20,000 us for any
  // copy under ~3.8 ms (this one is a 256-byte memcpy), so the host tier wins on its own again.
  RoundTrip(tiers, io, 8);
  EXPECT_FALSE(tiers.exploring(Tier::kHost));
  EXPECT_LT(tiers.stats().costs.host_us_per_block, kRecomputeSeconds * 1e6);
  EXPECT_TRUE(tiers.WorthLoading(Tier::kHost));
  // While it wins, passes do not count towards another exploration.
  for (int pass = 0; pass < 10; ++pass) tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  EXPECT_FALSE(tiers.exploring(Tier::kHost));
  EXPECT_EQ(tiers.stats().explorations, 1);
}

TEST(TierManagerCosts, StillSlowTierIsExploredAgainAfterAnotherRound) {
  SlowBlockIo io;
  TierManager tiers(io, HostOnly(/*explore_every=*/2));
  io.write_delay = std::chrono::milliseconds(120);
  RoundTrip(tiers, io, 7);
  ASSERT_FALSE(tiers.WorthLoading(Tier::kHost));
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  ASSERT_TRUE(tiers.exploring(Tier::kHost));
  // The exploratory load is slow again: the tier stays out, and the count starts over.
  RoundTrip(tiers, io, 8);
  EXPECT_FALSE(tiers.exploring(Tier::kHost));
  EXPECT_FALSE(tiers.WorthLoading(Tier::kHost));
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  EXPECT_FALSE(tiers.exploring(Tier::kHost));
  tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  EXPECT_TRUE(tiers.exploring(Tier::kHost));
  EXPECT_EQ(tiers.stats().explorations, 2);
}

TEST(TierManagerCosts, WithoutExplorationALosingTierNeverComesBack) {
  SlowBlockIo io;
  TierManager tiers(io, HostOnly(/*explore_every=*/0));
  io.write_delay = std::chrono::milliseconds(120);
  RoundTrip(tiers, io, 7);
  for (int pass = 0; pass < 100; ++pass) tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
  EXPECT_FALSE(tiers.WorthLoading(Tier::kHost));
  EXPECT_EQ(tiers.stats().explorations, 0);
}

}  // namespace
}  // namespace spillway::kvcache
