// FakeBlockIo: a kvcache::BlockIo over plain host memory, standing in for the backend's KV
// tensors in the tier tests. Fill() writes a pattern derived from a block key, Holds() checks
// it, so a test can tell whether a block that went down the tiers came back with its bytes.
#pragma once

#include <cstring>
#include <vector>

#include "kvcache/block_io.h"
#include "kvcache/block_pool.h"

namespace spillway::kvcache::testing {

class FakeBlockIo final : public BlockIo {
 public:
  FakeBlockIo(int32_t num_blocks, int64_t block_bytes)
      : block_bytes_(block_bytes), data_(num_blocks, std::vector<std::byte>(block_bytes)) {}

  int64_t block_bytes() const override { return block_bytes_; }
  absl::Status Read(BlockId block, std::span<std::byte> dst) override {
    ++num_reads;
    std::memcpy(dst.data(), data_.at(block).data(), dst.size());
    return absl::OkStatus();
  }
  absl::Status Write(BlockId block, std::span<const std::byte> src) override {
    ++num_writes;
    std::memcpy(data_.at(block).data(), src.data(), src.size());
    return absl::OkStatus();
  }

  // The bytes a block computed under `hash` holds.
  std::vector<std::byte> Pattern(BlockHash hash) const {
    std::vector<std::byte> out(block_bytes_);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<std::byte>((hash >> ((i % 8) * 8)) + i);
    }
    return out;
  }
  void Fill(BlockId block, BlockHash hash) { data_.at(block) = Pattern(hash); }
  bool Holds(BlockId block, BlockHash hash) const { return data_.at(block) == Pattern(hash); }

  int64_t num_reads = 0;
  int64_t num_writes = 0;

 private:
  int64_t block_bytes_;
  std::vector<std::vector<std::byte>> data_;
};

}  // namespace spillway::kvcache::testing
