// BackendBlockIo over the CPU backend: a block read back after a write holds the same bytes,
// and a write touches only its own block (every layer's K and V slice of it).
#include "scheduler/backend_block_io.h"

#include <gtest/gtest.h>

#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace spillway::scheduler {
namespace {

constexpr engine::KvLayout kLayout{
    .num_blocks = 3, .num_layers = 2, .num_kv_heads = 2, .head_dim = 4};

// n bytes: byte i is i * mul + add.
std::vector<std::byte> Pattern(size_t n, size_t mul, size_t add) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(i * mul + add);
  return out;
}

TEST(BackendBlockIo, CpuBlocksRoundTripAndStayApart) {
  engine::cpu::CpuBackend backend(1);
  ASSERT_TRUE(backend.AllocateKv(kLayout).ok());
  BackendBlockIo io(backend);
  // 2 layers x (K, V) x 16 tokens x 2 heads x 4 dims x 2 bytes.
  ASSERT_EQ(io.block_bytes(), 2 * 2 * 16 * 2 * 4 * 2);
  const auto n = static_cast<size_t>(io.block_bytes());
  const std::vector<std::byte> a = Pattern(n, 7, 1), b = Pattern(n, 13, 5);
  std::vector<std::byte> got(n);
  ASSERT_TRUE(io.Write(1, a).ok());
  ASSERT_TRUE(io.Write(2, b).ok());
  ASSERT_TRUE(io.Read(1, got).ok());
  EXPECT_EQ(got, a);
  ASSERT_TRUE(io.Read(2, got).ok());
  EXPECT_EQ(got, b);
  ASSERT_TRUE(io.Read(0, got).ok());
  EXPECT_EQ(got, std::vector<std::byte>(n));  // untouched
}

// The CPU backend's asynchronous copies (its copy thread): a read and a write started together
// complete with the right bytes, each reported once, and a forward pass begun after a write
// (BeginForward) finds the block written — without anyone polling or waiting first.
TEST(BackendBlockIo, CpuAsyncCopiesCompleteBeforeTheNextForwardPass) {
  engine::cpu::CpuBackend backend(1);
  ASSERT_TRUE(backend.AllocateKv(kLayout).ok());
  BackendBlockIo io(backend);
  ASSERT_TRUE(backend.kv_copies_async());
  const auto n = static_cast<size_t>(io.block_bytes());
  const std::vector<std::byte> a = Pattern(n, 7, 1), b = Pattern(n, 13, 5);
  std::vector<std::byte> got(n);
  ASSERT_TRUE(io.Write(1, a).ok());
  const kvcache::CopyTicket read = io.StartRead(1, got);
  const kvcache::CopyTicket write = io.StartWrite(2, b);
  EXPECT_LT(read, write);
  backend.BeginForward({});  // waits for the write to block 2
  std::vector<std::byte> now(n);
  ASSERT_TRUE(io.Read(2, now).ok());
  EXPECT_EQ(now, b);

  const kvcache::CopyDone r = io.WaitCopy(read);
  EXPECT_EQ(r.ticket, read);
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(got, a);
  std::vector<kvcache::CopyDone> done;
  io.PollCopies(done);  // the write only: the read was taken by WaitCopy
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].ticket, write);
  EXPECT_TRUE(done[0].status.ok());
  done.clear();
  io.PollCopies(done);
  EXPECT_TRUE(done.empty());

  // Host-tier memory: plain on the CPU, and as large as asked.
  const std::unique_ptr<kvcache::HostBuffer> host = io.AllocateHostBuffer(3 * n);
  EXPECT_EQ(host->bytes().size(), 3 * n);
  EXPECT_FALSE(host->pinned());
}

}  // namespace
}  // namespace spillway::scheduler
