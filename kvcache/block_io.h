// BlockIo: how the tier manager moves one device KV block's bytes (all layers, K and V) to and
// from host memory. The KV tensors belong to the backend (docs/design-notes.md), so kvcache/
// sees them only through this interface; scheduler/backend_block_io.h adapts engine::Backend
// (ReadKvBlock / WriteKvBlock) to it, and tests use a plain in-memory fake.
//
// Engine-loop thread only, like the KvCache that calls it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "kvcache/ids.h"

namespace spillway::kvcache {

class BlockIo {
 public:
  virtual ~BlockIo() = default;
  // Bytes of one block: what Read fills and Write takes.
  virtual int64_t block_bytes() const = 0;
  // Read copies device block `block` into `dst`. REQUIRES: dst.size() == block_bytes().
  [[nodiscard]] virtual absl::Status Read(BlockId block, std::span<std::byte> dst) = 0;
  // Write overwrites device block `block` with `src`. REQUIRES: src.size() == block_bytes().
  [[nodiscard]] virtual absl::Status Write(BlockId block, std::span<const std::byte> src) = 0;
};

}  // namespace spillway::kvcache
