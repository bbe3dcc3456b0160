// The SSD tier's block store (kvcache/disk/disk_tier.h) on this machine's disk: write and read
// throughput for 1 block and for 256 blocks of 2 MiB (Llama-3-8B's KV for 16 tokens: 32 layers
// x K,V x 8 heads x 128 x fp16; 256 of them are a 4,096-token history, 512 MiB), beside the raw
// sequential read bandwidth of the same disk measured in the same run. Reads start from a cold
// page cache (fdatasync + POSIX_FADV_DONTNEED on every file), like the raw read.
//   build/bin/kv_disk_benchmark            (files go to $SPW_KV_DISK_BENCH_DIR or /tmp/...)
// Counters: bytes_per_second; for reads the median MBps and, when cold, the median raw_MBps
// (a cold sequential read of a 512 MiB file in 2 MiB preads, alternating with the tier's
// reads) and the median of their ratio vs_raw.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/check.h"
#include "kvcache/disk/disk_tier.h"

namespace spillway::kvcache {
namespace {

constexpr int64_t kBlockBytes = int64_t{2} << 20;
constexpr int64_t kManyBlocks = 256;
constexpr int64_t kRawFileBytes = kManyBlocks * kBlockBytes;

std::string BenchDir() {
  const char* env = std::getenv("SPW_KV_DISK_BENCH_DIR");
  return env != nullptr ? env : "/tmp/spw_kv_disk_bench";
}

// Writes back and drops every file of `dir` from the page cache, so the next read hits the disk.
void DropPageCache(const std::string& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    SPW_CHECK(fd >= 0) << entry.path();
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// A 512 MiB file on the same disk, written once; RawReadMBps reads it sequentially from a cold
// page cache in 2 MiB preads: the disk's bandwidth as a plain program sees it.
class RawFile {
 public:
  RawFile() : dir_(BenchDir() + "/raw"), buf_(kBlockBytes, 'x') {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    const std::string path = dir_ + "/raw.bin";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SPW_CHECK(fd_ >= 0) << path;
    for (int64_t off = 0; off < kRawFileBytes; off += kBlockBytes) {
      for (size_t i = 0; i < buf_.size(); i += 4096) buf_[i] = static_cast<char>(off >> 12);
      SPW_CHECK(::pwrite(fd_, buf_.data(), buf_.size(), off) == std::ssize(buf_));
    }
  }
  ~RawFile() {
    ::close(fd_);
    std::filesystem::remove_all(dir_);
  }

  double RawReadMBps() {
    DropPageCache(dir_);
    auto start = std::chrono::steady_clock::now();
    for (int64_t off = 0; off < kRawFileBytes; off += kBlockBytes) {
      SPW_CHECK(::pread(fd_, buf_.data(), buf_.size(), off) == std::ssize(buf_));
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return kRawFileBytes / s / 1e6;
  }

 private:
  std::string dir_;
  std::vector<char> buf_;
  int fd_ = -1;
};

RawFile& Raw() {
  static RawFile* raw = new RawFile();
  return *raw;
}

std::unique_ptr<DiskTier> OpenTier(const std::string& name) {
  const std::string dir = BenchDir() + "/" + name;
  std::filesystem::remove_all(dir);
  auto tier = DiskTier::Open({.path = dir,
                              .capacity_bytes = 2 * kManyBlocks * (kBlockBytes + 8192),
                              .block_bytes = kBlockBytes,
                              .layout_fingerprint = 1,
                              .persist = true,
                              .persist_interval_ms = 0});
  SPW_CHECK(tier.ok()) << tier.status();
  return std::move(*tier);
}

std::vector<std::byte> Payload(int64_t i) {
  std::vector<std::byte> bytes(kBlockBytes);
  for (int64_t j = 0; j < kBlockBytes; j += 64) bytes[j] = static_cast<std::byte>(i + j / 64);
  return bytes;
}

void ExpectAllOk(DiskTier& tier) {
  for (const DiskCompletion& c : tier.PollCompletions()) {
    SPW_CHECK(c.ok() || c.op == DiskOp::kEvicted) << DiskResultName(c.result);
  }
}

// A tier holding keys [0, kManyBlocks), written and made durable once for all read benchmarks.
DiskTier& ReadTier() {
  static DiskTier* tier = [] {
    DiskTier* t = OpenTier("tier-read").release();
    for (int64_t i = 0; i < kManyBlocks; ++i) SPW_CHECK(t->SubmitWrite(i, Payload(i)));
    SPW_CHECK(t->SaveIndex().ok());
    ExpectAllOk(*t);
    return t;
  }();
  return *tier;
}

// Writes state.range(0) blocks and waits for them. Arg 1 ("durable") makes them durable
// (SaveIndex: fdatasync of the slab file and the index), as a persisted tier needs.
void BM_DiskTierWrite(benchmark::State& state) {
  const int64_t num_blocks = state.range(0);
  const bool durable = state.range(1) != 0;
  auto tier = OpenTier("tier-write");
  std::vector<std::vector<std::byte>> payloads;
  for (int64_t i = 0; i < num_blocks; ++i) payloads.push_back(Payload(i));
  uint64_t key = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::vector<std::byte>> copies = payloads;  // SubmitWrite takes its buffer
    state.ResumeTiming();
    for (auto& bytes : copies) SPW_CHECK(tier->SubmitWrite(++key, std::move(bytes)));
    tier->Flush();
    if (durable) SPW_CHECK(tier->SaveIndex().ok());
    ExpectAllOk(*tier);
  }
  state.SetBytesProcessed(state.iterations() * num_blocks * kBlockBytes);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Reads state.range(0) blocks, all submitted at once (as a prefetch of a whole history is),
// from a cold page cache (arg 1 = 0) or a warm one (arg 1 = 1: the CPU cost of the tier alone).
// Cold iterations alternate with a cold raw pass over the 512 MiB file, so that both see the
// same machine (the disk's own cache and the load of a shared host drift within a run);
// MBps, raw_MBps and vs_raw are medians over the iterations.
void BM_DiskTierRead(benchmark::State& state) {
  const int64_t num_blocks = state.range(0);
  const bool cold = state.range(1) == 0;
  DiskTier* tier = &ReadTier();
  std::vector<std::vector<std::byte>> dst(num_blocks, std::vector<std::byte>(kBlockBytes));
  std::vector<double> mbps, raw_mbps, ratio;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      raw_mbps.push_back(Raw().RawReadMBps());
      DropPageCache(BenchDir() + "/tier-read");
      state.ResumeTiming();
    }
    auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < num_blocks; ++i) SPW_CHECK(tier->SubmitRead(i, dst[i], i));
    tier->Flush();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    mbps.push_back(num_blocks * kBlockBytes / s / 1e6);
    if (cold) ratio.push_back(mbps.back() / raw_mbps.back());
    ExpectAllOk(*tier);
  }
  state.SetBytesProcessed(state.iterations() * num_blocks * kBlockBytes);
  state.counters["MBps"] = Median(mbps);
  if (cold) {
    state.counters["raw_MBps"] = Median(raw_mbps);
    state.counters["vs_raw"] = Median(ratio);
  }
}

void BM_RawSequentialRead(benchmark::State& state) {
  double mbps = 0;
  for (auto _ : state) mbps += Raw().RawReadMBps();
  state.counters["MBps"] = mbps / state.iterations();
  state.SetBytesProcessed(state.iterations() * kRawFileBytes);
}

BENCHMARK(BM_RawSequentialRead)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
// Reads first: the writes leave the disk busy writing back for a while.
BENCHMARK(BM_DiskTierRead)
    ->ArgsProduct({{1, kManyBlocks}, {0, 1}})
    ->ArgNames({"blocks", "warm"})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(9)
    ->UseRealTime();

BENCHMARK(BM_DiskTierWrite)
    ->ArgsProduct({{1, kManyBlocks}, {0, 1}})
    ->ArgNames({"blocks", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
}  // namespace
}  // namespace spillway::kvcache

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // Write the 1 GiB of input before any timing, and give the disk a moment to absorb it.
  spillway::kvcache::Raw();
  spillway::kvcache::ReadTier();
  ::sync();
  ::sleep(2);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
