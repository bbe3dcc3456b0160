// BackendBlockIo: the kvcache::BlockIo of an engine::Backend — what lets the tier manager
// (kvcache/tier_manager.h) move a device KV block's bytes without kvcache/ depending on
// engine/. Copies are the backend's asynchronous ones where it has them (kv_copies_async():
// the CPU backend's copy thread, the CUDA backend's copy stream), else BlockIo's synchronous
// defaults; host-tier memory is the backend's (pinned on CUDA) where it has some. Built by the
// server next to the KvCache; engine-loop thread only, like both.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"
#include "kvcache/block_io.h"

namespace spillway::scheduler {

class BackendBlockIo final : public kvcache::BlockIo {
 public:
  // `backend` must outlive this and have allocated its KV cache.
  explicit BackendBlockIo(engine::Backend& backend)
      : backend_(backend), async_(backend.kv_copies_async()) {}

  int64_t block_bytes() const override { return backend_.kv_block_bytes(); }
  [[nodiscard]] absl::Status Read(kvcache::BlockId block, std::span<std::byte> dst) override {
    return backend_.ReadKvBlock(block, dst);
  }
  [[nodiscard]] absl::Status Write(kvcache::BlockId block,
                                   std::span<const std::byte> src) override {
    return backend_.WriteKvBlock(block, src);
  }

  kvcache::CopyTicket StartRead(kvcache::BlockId block, std::span<std::byte> dst) override {
    return async_ ? backend_.StartKvBlockRead(block, dst) : BlockIo::StartRead(block, dst);
  }
  kvcache::CopyTicket StartWrite(kvcache::BlockId block, std::span<const std::byte> src) override {
    return async_ ? backend_.StartKvBlockWrite(block, src) : BlockIo::StartWrite(block, src);
  }
  void PollCopies(std::vector<kvcache::CopyDone>& done) override {
    if (async_) {
      backend_.PollKvCopies(done);
    } else {
      BlockIo::PollCopies(done);
    }
  }
  kvcache::CopyDone WaitCopy(kvcache::CopyTicket ticket) override {
    return async_ ? backend_.WaitKvCopy(ticket) : BlockIo::WaitCopy(ticket);
  }
  std::unique_ptr<kvcache::HostBuffer> AllocateHostBuffer(int64_t bytes) override {
    std::unique_ptr<kvcache::HostBuffer> buffer = backend_.AllocateKvHostBuffer(bytes);
    return buffer != nullptr ? std::move(buffer) : BlockIo::AllocateHostBuffer(bytes);
  }

 private:
  engine::Backend& backend_;
  const bool async_;
};

}  // namespace spillway::scheduler
