#include "kvcache/block_hash.h"

// NOTE(sched): xxHash is used header-only (XXH_INLINE_ALL), so spw_kvcache needs no link flag.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/check.h"

namespace spillway::kvcache {

BlockHash RootHash(AdapterId adapter) {
  static constexpr char kDomain[] = "spillway-kv-prefix-v1";
  return XXH3_64bits_withSeed(kDomain, sizeof(kDomain) - 1, static_cast<uint64_t>(adapter));
}

BlockHash HashBlock(BlockHash parent, std::span<const TokenId> tokens) {
  SPW_CHECK(tokens.size() == static_cast<size_t>(kBlockTokens)) << tokens.size();
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), parent);
}

}  // namespace spillway::kvcache
