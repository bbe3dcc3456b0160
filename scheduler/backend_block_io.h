// BackendBlockIo: the kvcache::BlockIo of an engine::Backend — what lets the tier manager
// (kvcache/tier_manager.h) move a device KV block's bytes without kvcache/ depending on
// engine/. Built by the server next to the KvCache; engine-loop thread only, like both.
#pragma once

#include "engine/backend.h"
#include "kvcache/block_io.h"

namespace spillway::scheduler {

class BackendBlockIo final : public kvcache::BlockIo {
 public:
  // `backend` must outlive this and have allocated its KV cache.
  explicit BackendBlockIo(engine::Backend& backend) : backend_(backend) {}

  int64_t block_bytes() const override { return backend_.kv_block_bytes(); }
  [[nodiscard]] absl::Status Read(kvcache::BlockId block, std::span<std::byte> dst) override {
    return backend_.ReadKvBlock(block, dst);
  }
  [[nodiscard]] absl::Status Write(kvcache::BlockId block,
                                   std::span<const std::byte> src) override {
    return backend_.WriteKvBlock(block, src);
  }

 private:
  engine::Backend& backend_;
};

}  // namespace spillway::scheduler
