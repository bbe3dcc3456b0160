// TierManager's cost choice on a one-slot host tier, exact state (STYLE.md §9): a tier whose
// measured load cost rose above recompute's is not used, is opened for one exploratory load
// after every `explore_every` forward passes while it loses, and is used again for good once
// such a load measures it faster than recompute.
#include "kvcache/tier_manager.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

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
  ASSERT_TRUE(tiers.StartSpill(0, Key(hash)));
  tiers.Poll();
  EXPECT_EQ(tiers.TakeSpilledBlocks(), std::vector<BlockId>{0});
  ASSERT_EQ(tiers.Locate(Key(hash)), Tier::kHost);
  tiers.PinHost(Key(hash));
  const absl::StatusOr<Tier> origin = tiers.LoadToDevice(Key(hash), 1);
  ASSERT_TRUE(origin.ok()) << origin.status();
  EXPECT_EQ(*origin, Tier::kHost);
  tiers.Poll();  // the load's completion: its time updates the host tier's estimate
  EXPECT_EQ(tiers.num_loads_in_flight(), 0);
  EXPECT_TRUE(io.fake().Holds(1, hash));
}

// One load that takes 120 ms: 50 + 0.2 * (120,000 - 50) >= 24,040 us, above recompute's
// 20,000 us, so the host tier loses. Loads stay slow until the test changes io.write_delay.
void LoseOnce(TierManager& tiers, SlowBlockIo& io) {
  io.write_delay = std::chrono::milliseconds(120);
  RoundTrip(tiers, io, 7);
  EXPECT_GE(tiers.stats().costs.host_us_per_block, 24'040);
  EXPECT_FALSE(tiers.WorthLoading(Tier::kHost));
}

// `n` forward passes of one block each, at recompute's 20 ms per block.
void Passes(TierManager& tiers, int n) {
  for (int pass = 0; pass < n; ++pass) tiers.ObserveRecompute(kBlockTokens, kRecomputeSeconds);
}

// The host tier's exploration state, whether it would be loaded from, and explorations so far.
void ExpectHost(const TierManager& tiers, bool exploring, bool worth_loading,
                int64_t explorations) {
  EXPECT_EQ(tiers.exploring(Tier::kHost), exploring);
  EXPECT_EQ(tiers.WorthLoading(Tier::kHost), worth_loading);
  EXPECT_EQ(tiers.stats().explorations, explorations);
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

  LoseOnce(tiers, io);

  // The host copy is fast again, but nothing measures it until the tier is explored.
  io.write_delay = std::chrono::milliseconds(0);
  for (int pass = 1; pass <= 3; ++pass) {
    SCOPED_TRACE(pass);
    Passes(tiers, 1);
    ExpectHost(tiers, /*exploring=*/false, /*worth_loading=*/false, /*explorations=*/0);
  }
  Passes(tiers, 1);  // the 4th pass it lost
  ExpectHost(tiers, true, true, 1);
  // Further passes while it is open change nothing: one exploration at a time.
  Passes(tiers, 1);
  ExpectHost(tiers, true, true, 1);
  // No SSD tier: it is never explored.
  EXPECT_FALSE(tiers.exploring(Tier::kDisk));

  // The exploratory load measures a fast copy: 0.8 * 24,040+ + 0.2 * t < 20,000 us for any
  // copy under ~3.8 ms (this one is a 256-byte memcpy), so the host tier wins on its own again.
  RoundTrip(tiers, io, 8);
  EXPECT_LT(tiers.stats().costs.host_us_per_block, kRecomputeSeconds * 1e6);
  ExpectHost(tiers, /*exploring=*/false, /*worth_loading=*/true, /*explorations=*/1);
  // While it wins, passes do not count towards another exploration.
  Passes(tiers, 10);
  ExpectHost(tiers, false, true, 1);
}

TEST(TierManagerCosts, StillSlowTierIsExploredAgainAfterAnotherRound) {
  SlowBlockIo io;
  TierManager tiers(io, HostOnly(/*explore_every=*/2));
  LoseOnce(tiers, io);
  Passes(tiers, 2);
  ASSERT_TRUE(tiers.exploring(Tier::kHost));
  // The exploratory load is slow again: the tier stays out, and the count starts over.
  RoundTrip(tiers, io, 8);
  ExpectHost(tiers, /*exploring=*/false, /*worth_loading=*/false, /*explorations=*/1);
  Passes(tiers, 1);
  ExpectHost(tiers, false, false, 1);
  Passes(tiers, 1);
  ExpectHost(tiers, true, true, 2);
}

TEST(TierManagerCosts, WithoutExplorationALosingTierNeverComesBack) {
  SlowBlockIo io;
  TierManager tiers(io, HostOnly(/*explore_every=*/0));
  LoseOnce(tiers, io);
  Passes(tiers, 100);
  ExpectHost(tiers, /*exploring=*/false, /*worth_loading=*/false, /*explorations=*/0);
}

}  // namespace
}  // namespace spillway::kvcache
