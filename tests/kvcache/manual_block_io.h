// ManualBlockIo: a kvcache::BlockIo whose asynchronous copies complete when the test says so
// (Complete, CompleteAll, CompleteRandom) — the copy's bytes move at that moment, not when it
// was started, so a block overwritten or a host slot reused while a copy was in flight shows up
// as wrong bytes. Over FakeBlockIo's device memory (Fill / Holds, patterns of block keys).
//
// It also plays the backend's side of the copy rules (kvcache/block_io.h): BeginForward
// completes the writes started before it (what CpuBackend::BeginForward does), and Fill — a
// forward pass writing a block — fails the test when a read of that block is in flight.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "kvcache/block_io.h"
#include "tests/kvcache/fake_block_io.h"

namespace spillway::kvcache::testing {

class ManualBlockIo final : public BlockIo {
 public:
  ManualBlockIo(int32_t num_blocks, int64_t block_bytes) : fake_(num_blocks, block_bytes) {}

  int64_t block_bytes() const override { return fake_.block_bytes(); }
  absl::Status Read(BlockId block, std::span<std::byte> dst) override {
    return fake_.Read(block, dst);
  }
  absl::Status Write(BlockId block, std::span<const std::byte> src) override {
    return fake_.Write(block, src);
  }
  CopyTicket StartRead(BlockId block, std::span<std::byte> dst) override {
    pending_.push_back({.ticket = next_, .block = block, .host = dst.data(), .to_host = true});
    return next_++;
  }
  CopyTicket StartWrite(BlockId block, std::span<const std::byte> src) override {
    pending_.push_back({.ticket = next_,
                        .block = block,
                        .host = const_cast<std::byte*>(src.data()),
                        .to_host = false});
    return next_++;
  }
  void PollCopies(std::vector<CopyDone>& done) override {
    for (CopyTicket t : done_) done.push_back({.ticket = t});
    done_.clear();
  }
  CopyDone WaitCopy(CopyTicket ticket) override {
    ++num_waits;
    if (Find(ticket) != pending_.end()) Complete(ticket);
    auto it = std::find(done_.begin(), done_.end(), ticket);
    EXPECT_NE(it, done_.end()) << "WaitCopy of unknown copy " << ticket;
    if (it != done_.end()) done_.erase(it);
    return {.ticket = ticket};
  }

  // Runs copy `ticket` now; PollCopies reports it next.
  void Complete(CopyTicket ticket) {
    auto it = Find(ticket);
    ASSERT_NE(it, pending_.end()) << "copy " << ticket << " is not pending";
    const Copy c = *it;
    pending_.erase(it);
    const std::span<std::byte> host(c.host, static_cast<size_t>(block_bytes()));
    if (c.to_host) {
      ASSERT_TRUE(fake_.Read(c.block, host).ok());
    } else {
      ASSERT_TRUE(fake_.Write(c.block, host).ok());
    }
    done_.push_back(c.ticket);
  }
  void CompleteAll() {
    while (!pending_.empty()) Complete(pending_.front().ticket);
  }
  // Completes each pending copy with probability `p`, in a random order.
  void CompleteRandom(std::mt19937& rng, double p) {
    std::vector<CopyTicket> pick;
    for (const Copy& c : pending_) {
      if (std::uniform_real_distribution<double>(0, 1)(rng) < p) pick.push_back(c.ticket);
    }
    std::shuffle(pick.begin(), pick.end(), rng);
    for (CopyTicket t : pick) Complete(t);
  }
  // A forward pass starts: the writes started before it complete first.
  void BeginForward() {
    std::vector<CopyTicket> writes;
    for (const Copy& c : pending_) {
      if (!c.to_host) writes.push_back(c.ticket);
    }
    for (CopyTicket t : writes) Complete(t);
  }

  // Pending copies: device -> host (a spill reading `block`), host -> device (a load).
  bool reading(BlockId block) const { return Has(block, true); }
  bool writing(BlockId block) const { return Has(block, false); }
  int32_t num_pending() const { return static_cast<int32_t>(pending_.size()); }
  std::vector<CopyTicket> pending() const {
    std::vector<CopyTicket> out;
    for (const Copy& c : pending_) out.push_back(c.ticket);
    return out;
  }

  // A forward pass computes block `block` under `hash`.
  void Fill(BlockId block, BlockHash hash) {
    EXPECT_FALSE(reading(block)) << "block " << block << " written while a spill reads it";
    EXPECT_FALSE(writing(block)) << "block " << block << " computed while a load writes it";
    fake_.Fill(block, hash);
  }
  bool Holds(BlockId block, BlockHash hash) const { return fake_.Holds(block, hash); }

  int64_t num_waits = 0;

 private:
  struct Copy {
    CopyTicket ticket = 0;
    BlockId block = 0;
    std::byte* host = nullptr;
    bool to_host = false;
  };
  std::vector<Copy>::iterator Find(CopyTicket t) {
    return std::find_if(pending_.begin(), pending_.end(),
                        [&](const Copy& c) { return c.ticket == t; });
  }
  bool Has(BlockId block, bool to_host) const {
    return std::any_of(pending_.begin(), pending_.end(),
                       [&](const Copy& c) { return c.block == block && c.to_host == to_host; });
  }

  FakeBlockIo fake_;
  CopyTicket next_ = 1;
  std::vector<Copy> pending_;     // started, bytes not moved yet
  std::vector<CopyTicket> done_;  // moved, not yet reported
};

}  // namespace spillway::kvcache::testing
