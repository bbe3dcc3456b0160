// Strong-ish ids of the KV cache: a block of the pool, a sequence that owns a block table.
#pragma once

#include <cstdint>

namespace spillway::kvcache {

using BlockId = int32_t;
using SeqId = int64_t;

// Tokens per KV block (DESIGN.md: 16 is the usual size). The CPU and CUDA attention kernels
// are written for this value only.
inline constexpr int32_t kBlockTokens = 16;

}  // namespace spillway::kvcache
