// Prefix-cache keys: the hash of one full KV block chained with the hashes of every block
// before it (vLLM's `hash_block_tokens`, TensorRT-LLM's BlockKey), so equal hashes mean equal
// prefixes. xxHash3 (64 bits); the chain starts from a root that depends on the adapter, so
// blocks computed under different weights never match. Pure functions; any thread.
#pragma once

#include <span>

#include "kvcache/ids.h"

namespace spillway::kvcache {

// The `parent` of the first block of a sequence computed with `adapter`.
BlockHash RootHash(AdapterId adapter);

// The key of a full block holding `tokens` whose preceding block has key `parent`.
// REQUIRES: tokens.size() == kBlockTokens.
BlockHash HashBlock(BlockHash parent, std::span<const TokenId> tokens);

}  // namespace spillway::kvcache
