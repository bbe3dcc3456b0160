// CpuBackend::DiscardKvBlocks (issue #7: a fine-tuning job's memory comes out of the KV pool):
// the whole pages of the discarded blocks go back to the OS (madvise MADV_DONTNEED), so they read
// as zeros afterwards, and blocks that were not discarded keep their contents.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace spillway::engine::cpu {
namespace {

TEST(CpuBackendDiscardKv, DiscardedRunsReadAsZerosOthersAreKept) {
  CpuBackend backend(1);
  ASSERT_TRUE(
      backend.AllocateKv({.num_blocks = 40, .num_layers = 2, .num_kv_heads = 3, .head_dim = 64})
          .ok());
  const auto bytes = static_cast<size_t>(backend.kv_block_bytes());
  auto pattern = [&](kvcache::BlockId b) {
    std::vector<std::byte> v(bytes);
    for (size_t i = 0; i < bytes; ++i) v[i] = static_cast<std::byte>((b * 7 + i) % 251 + 1);
    return v;
  };
  for (kvcache::BlockId b = 0; b < 40; ++b) ASSERT_TRUE(backend.WriteKvBlock(b, pattern(b)).ok());

  // Blocks 10..29 as one run (given out of order), and 35 alone.
  std::vector<kvcache::BlockId> discard;
  for (kvcache::BlockId b = 29; b >= 10; --b) discard.push_back(b);
  discard.push_back(35);
  backend.DiscardKvBlocks(discard);

  std::vector<std::byte> got(bytes);
  const std::vector<std::byte> zeros(bytes);
  // A block inside the run lies in whole pages of every layer's K and V: all zeros now.
  for (kvcache::BlockId b = 12; b <= 27; ++b) {
    ASSERT_TRUE(backend.ReadKvBlock(b, got).ok());
    EXPECT_EQ(got, zeros) << "block " << b;
  }
  // Blocks outside the discarded ones are unchanged (pages at a run's edges are kept whole).
  for (kvcache::BlockId b : {0, 9, 30, 34, 36, 39}) {
    ASSERT_TRUE(backend.ReadKvBlock(b, got).ok());
    EXPECT_EQ(got, pattern(b)) << "block " << b;
  }
  // A discarded block can be written and read again.
  ASSERT_TRUE(backend.WriteKvBlock(20, pattern(20)).ok());
  ASSERT_TRUE(backend.ReadKvBlock(20, got).ok());
  EXPECT_EQ(got, pattern(20));
}

}  // namespace
}  // namespace spillway::engine::cpu
