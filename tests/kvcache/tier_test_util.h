// Helpers of the tier tests (tiered_kv_cache_test, async_tier_test): token runs, the chained
// block hashes of a token sequence, and the shapes their exact-state expectations compare.
#pragma once

#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include "kvcache/block_hash.h"
#include "kvcache/ids.h"

namespace spillway::kvcache::testing {

using Ids = std::vector<BlockId>;
using Slots = std::vector<int32_t>;
using HostIndex = std::vector<std::pair<BlockHash, int32_t>>;

// n tokens first, first + 1, ...
inline std::vector<TokenId> Iota(int32_t n, TokenId first) {
  std::vector<TokenId> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// The prefix-cache key hash of each full block of `tokens` (base model).
inline std::vector<BlockHash> ChainOf(std::span<const TokenId> tokens) {
  std::vector<BlockHash> out;
  BlockHash parent = RootHash(kBaseModel);
  for (size_t i = 0; i + kBlockTokens <= tokens.size(); i += kBlockTokens) {
    parent = HashBlock(parent, tokens.subspan(i, kBlockTokens));
    out.push_back(parent);
  }
  return out;
}

}  // namespace spillway::kvcache::testing
