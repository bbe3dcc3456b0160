// BlockIo: how the tier manager moves one device KV block's bytes (all layers, K and V) to and
// from host memory. The KV tensors belong to the backend (docs/design-notes.md), so kvcache/
// sees them only through this interface; scheduler/backend_block_io.h adapts engine::Backend
// to it, and tests use plain in-memory fakes.
//
// Copies are asynchronous (docs/kv-tiers.md, "Asynchronous copies"): StartRead / StartWrite
// queue a copy and return a ticket at once; PollCopies reports finished copies without
// blocking, WaitCopy blocks for one. What an implementation must guarantee:
//   - a read (device -> host) sees everything written to the block before it was started
//     (on a GPU: the copy stream waits on an event recorded on the compute stream);
//   - a write (host -> device) is complete before any later forward pass reads the block
//     (on a GPU: the compute stream waits on the copy's event; on the CPU: the forward pass
//     waits for it before it starts);
//   - the host buffer of a copy stays untouched by the backend after its completion.
// What the caller guarantees (TierManager): a block is not written (by a forward pass or a
// load) while a read of it is in flight, and a host buffer is neither reused nor read by the
// CPU while a copy into or out of it is in flight. So completions may come in any order.
//
// Read / Write are the synchronous primitives; the default asynchronous calls run them at once
// and report the completion at the next PollCopies, so a backend without a copy engine (and a
// simple test fake) still works, just without overlap.
//
// Engine-loop thread only, like the KvCache that calls it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kvcache/ids.h"

namespace spillway::kvcache {

// Names one started copy; never 0.
using CopyTicket = uint64_t;

struct CopyDone {
  CopyTicket ticket = 0;
  absl::Status status = {};
  double seconds = 0;  // from Start* to completion, as well as the implementation knows it
};

// Host memory for the host tier's slots: pinned (page-locked) where the backend copies from
// pinned memory faster and asynchronously (CUDA), plain otherwise.
class HostBuffer {
 public:
  virtual ~HostBuffer() = default;
  virtual std::span<std::byte> bytes() = 0;
  virtual bool pinned() const { return false; }
};

// Plain, page-aligned, uninitialised memory (untouched pages cost no resident memory).
std::unique_ptr<HostBuffer> AllocatePlainHostBuffer(int64_t bytes);

class BlockIo {
 public:
  virtual ~BlockIo() = default;
  // Bytes of one block: what a copy moves.
  virtual int64_t block_bytes() const = 0;
  // Read copies device block `block` into `dst` now. REQUIRES: dst.size() == block_bytes().
  [[nodiscard]] virtual absl::Status Read(BlockId block, std::span<std::byte> dst) = 0;
  // Write overwrites device block `block` with `src` now. REQUIRES: src.size() == block_bytes().
  [[nodiscard]] virtual absl::Status Write(BlockId block, std::span<const std::byte> src) = 0;

  // StartRead starts copying device block `block` into `dst`, which must stay valid until the
  // copy is reported done. REQUIRES: dst.size() == block_bytes().
  virtual CopyTicket StartRead(BlockId block, std::span<std::byte> dst);
  // StartWrite starts copying `src` into device block `block` (the same rules).
  virtual CopyTicket StartWrite(BlockId block, std::span<const std::byte> src);
  // PollCopies appends the copies that finished since the last call (and were not taken by
  // WaitCopy) to `done`. Never blocks.
  virtual void PollCopies(std::vector<CopyDone>& done);
  // WaitCopy blocks until copy `ticket` is done and returns its result; PollCopies will not
  // report it again. REQUIRES: `ticket` was started and not yet reported.
  virtual CopyDone WaitCopy(CopyTicket ticket);
  // Memory for `bytes` of host-tier slots.
  virtual std::unique_ptr<HostBuffer> AllocateHostBuffer(int64_t bytes) {
    return AllocatePlainHostBuffer(bytes);
  }

 private:
  // The default asynchronous calls: copies done, not yet reported.
  CopyTicket next_ticket_ = 1;
  std::vector<CopyDone> done_;
};

}  // namespace spillway::kvcache
