// Ids of the KV cache: a block of the pool, a sequence that owns a block table, the token and
// adapter ids that prefix-cache keys are made of, and the size of a block.
#pragma once

#include <cstdint>

namespace spillway::kvcache {

using BlockId = int32_t;
using SeqId = int64_t;
// The same alias as engine::TokenId (a redeclaration of the same type is legal); repeated so
// that kvcache/ does not depend on engine/.
using TokenId = int32_t;
// Which weights computed a block's KV: 0 is the base model; the LoRA issue gives adapters
// their own ids so that blocks computed under different adapters never match.
using AdapterId = int32_t;
inline constexpr AdapterId kBaseModel = 0;
// Chained hash of a full block and every token before it (kvcache/block_hash.h).
using BlockHash = uint64_t;

// Tokens per KV block (DESIGN.md: 16 is the usual size). The CPU and CUDA attention kernels
// are written for this value only.
inline constexpr int32_t kBlockTokens = 16;

}  // namespace spillway::kvcache
