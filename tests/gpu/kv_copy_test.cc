// The CUDA backend's asynchronous KV block copies (engine/cuda/kv_copy_engine.h) against the
// copy rules of kvcache/block_io.h, on a real GPU (skips without one):
//   - a spill (device -> host, into pinned memory) started right after the kernels that wrote
//     the block, themselves queued behind ~30 ms of other compute, holds what they wrote;
//   - a load (host -> device) queued behind 32 other copies, and the forward pass begun right
//     after it, reads the loaded bytes, not the block's overwritten contents: its attention
//     output equals the CPU backend's over the same bytes.
// KvRestoreBenchmark (SPW_GPU_KV_BENCH=1, tests/gpu/run.sh sets it) times restoring a 4,096-token
// history of the Llama-3-8B shape (256 blocks of 2 MiB) from pinned host memory against one
// plain 512 MiB copy measured in the same run (the PCIe floor); it asserts only the bytes.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

using cuda::CudaBackend;

// Device `block`'s bytes as the tiers pack them (layer by layer, K then V), read through
// KvToHost (which waits for the compute stream).
std::vector<std::byte> PackedBlock(const CudaBackend& g, const KvLayout& kv,
                                   kvcache::BlockId block) {
  const size_t slice = static_cast<size_t>(kvcache::kBlockTokens * kv.num_kv_heads * kv.head_dim);
  std::vector<std::byte> out;
  for (int64_t l = 0; l < kv.num_layers; ++l) {
    for (bool values : {false, true}) {
      const std::vector<uint16_t> cache = g.KvToHost(l, values);
      const auto* p = reinterpret_cast<const std::byte*>(cache.data() + block * slice);
      out.insert(out.end(), p, p + slice * sizeof(uint16_t));
    }
  }
  return out;
}

// ~30 ms of compute on the stream (SwiGlu over 256 MiB activations), so that what is queued
// after it runs late. SPW_GPU_TEST_SMALL (the emu tier sets it: its streams run nothing until
// the host waits, so everything queued runs late there anyway) makes it a token amount.
void BusyCompute(CudaBackend& g) {
  const bool small = std::getenv("SPW_GPU_TEST_SMALL") != nullptr;
  const int64_t rows = small ? 4 : 4096;
  const Activation a = g.Scratch(rows, 16384), b = g.Scratch(rows, 16384),
                   c = g.Scratch(rows, 16384);
  for (int i = 0; i < (small ? 2 : 100); ++i) g.SwiGlu(a, b, c);
}

// Writes k, v of `layout`'s tokens into every layer (seeded values), attention output ignored.
void WriteKv(CudaBackend& g, const KvLayout& kv, const Layout& layout, uint32_t seed) {
  const int64_t n = layout.size(), width = kv.num_kv_heads * kv.head_dim;
  for (int64_t l = 0; l < kv.num_layers; ++l) {
    const Activation q = g.Scratch(n, width), k = g.Scratch(n, width), v = g.Scratch(n, width),
                     out = g.Scratch(n, width);
    const std::vector<float> qs = RandomFloats(n * width, seed + 3 * l),
                             ks = RandomFloats(n * width, seed + 3 * l + 1),
                             vs = RandomFloats(n * width, seed + 3 * l + 2);
    g.CopyFromHost(qs.data(), q.data, n * width);
    g.CopyFromHost(ks.data(), k.data, n * width);
    g.CopyFromHost(vs.data(), v.data, n * width);
    g.Attention(l, q, k, v, kv.num_kv_heads, out);
  }
}

TEST(KvCopy, SpillSeesTheKernelsAndTheNextPassSeesTheLoad) {
  SPW_SKIP_WITHOUT_GPU();
  absl::StatusOr<std::unique_ptr<CudaBackend>> created = CudaBackend::Create();
  ASSERT_TRUE(created.ok()) << created.status();
  CudaBackend& g = **created;
  const KvLayout kv{.num_blocks = 48, .num_layers = 4, .num_kv_heads = 2, .head_dim = 64};
  ASSERT_TRUE(g.AllocateKv(kv).ok());
  ASSERT_TRUE(g.kv_copies_async());
  const auto bytes = static_cast<size_t>(g.kv_block_bytes());
  std::unique_ptr<kvcache::HostBuffer> host = g.AllocateKvHostBuffer(40 * bytes);
  ASSERT_NE(host, nullptr);
  EXPECT_TRUE(host->pinned());
  const std::span<std::byte> spilled = host->bytes().first(bytes);

  // 1. A pass writes block 5 behind ~30 ms of compute; the spill is started at once.
  Layout write;
  write.AddChunk(0, 16, {5});
  g.BeginForward(write.View());
  BusyCompute(g);
  WriteKv(g, kv, write, 100);
  const kvcache::CopyTicket spill = g.StartKvBlockRead(5, spilled);
  const kvcache::CopyDone done = g.WaitKvCopy(spill);
  ASSERT_TRUE(done.status.ok()) << done.status;
  const std::vector<std::byte> written = PackedBlock(g, kv, 5);
  ASSERT_NE(written, std::vector<std::byte>(bytes));  // the pass wrote something
  EXPECT_TRUE(std::equal(spilled.begin(), spilled.end(), written.begin()));

  // 2. Block 5 is overwritten by another pass; then 32 spills of other blocks, the load of the
  //    spilled bytes back into block 5, and at once a pass whose attention reads block 5.
  g.BeginForward(write.View());
  WriteKv(g, kv, write, 200);
  ASSERT_NE(PackedBlock(g, kv, 5), written);
  std::vector<kvcache::CopyTicket> others;
  for (int b = 0; b < 32; ++b) {
    others.push_back(g.StartKvBlockRead(8 + b, host->bytes().subspan((1 + b) * bytes, bytes)));
  }
  const kvcache::CopyTicket load = g.StartKvBlockWrite(5, spilled);
  Layout read;
  read.AddChunk(16, 1, {5, 44});
  g.BeginForward(read.View());
  const int64_t width = kv.num_kv_heads * kv.head_dim;
  const std::vector<float> qs = RandomFloats(width, 7), ks = RandomFloats(width, 8),
                           vs = RandomFloats(width, 9);
  const Activation q = g.Scratch(1, width), k = g.Scratch(1, width), v = g.Scratch(1, width),
                   out = g.Scratch(1, width);
  g.CopyFromHost(qs.data(), q.data, width);
  g.CopyFromHost(ks.data(), k.data, width);
  g.CopyFromHost(vs.data(), v.data, width);
  g.Attention(0, q, k, v, kv.num_kv_heads, out);
  const std::vector<float> got = ToHost(g, out);

  // The CPU backend over the spilled bytes.
  cpu::CpuBackend c(1);
  ASSERT_TRUE(c.AllocateKv(kv).ok());
  ASSERT_TRUE(c.WriteKvBlock(5, spilled).ok());
  c.BeginForward(read.View());
  const Activation cq = c.Scratch(1, width), ck = c.Scratch(1, width), cv = c.Scratch(1, width),
                   cout = c.Scratch(1, width);
  std::copy(qs.begin(), qs.end(), cq.data);
  std::copy(ks.begin(), ks.end(), ck.data);
  std::copy(vs.begin(), vs.end(), cv.data);
  c.Attention(0, cq, ck, cv, kv.num_kv_heads, cout);
  const std::vector<float> want = ToHost(c, cout);
  EXPECT_LT(Compare(want, got).max_abs, 1e-4);

  // Every copy completes, each reported once; block 5 holds the spilled bytes.
  EXPECT_TRUE(g.WaitKvCopy(load).status.ok());
  for (kvcache::CopyTicket t : others) EXPECT_TRUE(g.WaitKvCopy(t).status.ok());
  std::vector<kvcache::CopyDone> rest;
  g.PollKvCopies(rest);
  EXPECT_TRUE(rest.empty());
  EXPECT_TRUE(std::equal(spilled.begin(), spilled.end(), PackedBlock(g, kv, 5).begin()));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(KvCopy, KvRestoreBenchmark) {
  SPW_SKIP_WITHOUT_GPU();
  if (std::getenv("SPW_GPU_KV_BENCH") == nullptr) GTEST_SKIP() << "set SPW_GPU_KV_BENCH=1";
  absl::StatusOr<std::unique_ptr<CudaBackend>> created = CudaBackend::Create();
  ASSERT_TRUE(created.ok()) << created.status();
  CudaBackend& g = **created;
  // Llama-3-8B: 32 layers, 8 KV heads of 128: 2 MiB per 16-token block.
  constexpr int kBlocks = 256;
  const KvLayout kv{
      .num_blocks = kBlocks + 16, .num_layers = 32, .num_kv_heads = 8, .head_dim = 128};
  ASSERT_TRUE(g.AllocateKv(kv).ok());
  const auto bytes = static_cast<size_t>(g.kv_block_bytes());
  ASSERT_EQ(bytes, 2u << 20);
  std::unique_ptr<kvcache::HostBuffer> host = g.AllocateKvHostBuffer(kBlocks * bytes);
  ASSERT_TRUE(host->pinned());
  std::span<std::byte> h = host->bytes();
  for (size_t i = 0; i < h.size(); i += 4096) h[i] = static_cast<std::byte>(i / 4096 * 31 + 7);

  // The PCIe floor: one 512 MiB pinned host -> device copy.
  void* flat = nullptr;
  ASSERT_EQ(cudaMalloc(&flat, kBlocks * bytes), cudaSuccess);
  std::vector<double> floor_ms, restore_ms, spill_ms;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(cudaMemcpy(flat, h.data(), kBlocks * bytes, cudaMemcpyHostToDevice), cudaSuccess);
    floor_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());

    // Restore: 256 block loads started back to back, then waited for.
    std::vector<kvcache::CopyTicket> tickets;
    t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < kBlocks; ++b)
      tickets.push_back(g.StartKvBlockWrite(b, h.subspan(b * bytes, bytes)));
    for (kvcache::CopyTicket t : tickets) ASSERT_TRUE(g.WaitKvCopy(t).status.ok());
    restore_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  // Spill: 256 block reads back into another pinned buffer; the bytes must be the same.
  std::unique_ptr<kvcache::HostBuffer> back = g.AllocateKvHostBuffer(kBlocks * bytes);
  for (int rep = 0; rep < 7; ++rep) {
    std::vector<kvcache::CopyTicket> tickets;
    const auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < kBlocks; ++b) {
      tickets.push_back(g.StartKvBlockRead(b, back->bytes().subspan(b * bytes, bytes)));
    }
    for (kvcache::CopyTicket t : tickets) ASSERT_TRUE(g.WaitKvCopy(t).status.ok());
    spill_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  EXPECT_TRUE(std::equal(h.begin(), h.end(), back->bytes().begin()));
  cudaFree(flat);
  const double gb = kBlocks * bytes / 1e9;
  printf("KV_RESTORE_BENCH 256 blocks x 2 MiB (4,096 tokens, Llama-3-8B shape), median of 7:\n");
  printf("KV_RESTORE_BENCH   one 512 MiB H2D cudaMemcpy (floor): %.2f ms, %.1f GB/s\n",
         Median(floor_ms), gb / Median(floor_ms) * 1e3);
  printf(
      "KV_RESTORE_BENCH   restore 256 blocks host->device:    %.2f ms, %.1f GB/s (%.2fx floor)\n",
      Median(restore_ms), gb / Median(restore_ms) * 1e3, Median(restore_ms) / Median(floor_ms));
  printf("KV_RESTORE_BENCH   spill 256 blocks device->host:      %.2f ms, %.1f GB/s\n",
         Median(spill_ms), gb / Median(spill_ms) * 1e3);
}

}  // namespace
}  // namespace spillway::engine::testing
