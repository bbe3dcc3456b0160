// KvCache under thousands of random grow / match / commit / release operations, checked after
// each one against a simple reference model (STYLE.md §9): ref counts equal table occurrences,
// every block is in exactly one of in-use / evictable / free, "no room" happens exactly when
// the reference says so, and every prefix hit holds exactly the tokens it is matched for.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "kvcache/kv_cache.h"

namespace spillway::kvcache {
namespace {

struct RefSeq {
  std::vector<TokenId> tokens;  // every token the sequence will hold
  int32_t num_tokens = 0;       // tokens it has room for (KvCache::num_tokens)
  int32_t num_computed = 0;     // tokens committed
};

class RandomKvTest {
 public:
  RandomKvTest(int32_t num_blocks, uint32_t seed)
      : kv_(num_blocks), truth_(num_blocks), rng_(seed) {
    // Three shared stems so that prefixes repeat.
    for (int s = 0; s < 3; ++s) stems_.push_back(RandomTokens(16 * (1 + s) + s));
  }

  void Step() {
    const int op = Uniform(0, 9);
    if (op < 3 || seqs_.empty()) {
      AddSeq();
    } else if (op < 6) {
      GrowSome();
    } else if (op < 8) {
      CommitSome();
    } else {
      ReleaseSome();
    }
    CheckInvariants();
  }

  int num_hits() const { return num_hits_; }
  int num_no_room() const { return num_no_room_; }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::vector<TokenId> RandomTokens(int n) {
    std::vector<TokenId> t(n);
    for (TokenId& x : t) x = Uniform(0, 3);  // tiny alphabet: accidental equal blocks happen
    return t;
  }
  SeqId PickSeq() {
    auto it = seqs_.begin();
    std::advance(it, Uniform(0, static_cast<int>(seqs_.size()) - 1));
    return it->first;
  }

  void AddSeq() {
    RefSeq s;
    s.tokens = stems_[Uniform(0, 2)];
    const std::vector<TokenId> tail = RandomTokens(Uniform(0, 60));
    s.tokens.insert(s.tokens.end(), tail.begin(), tail.end());
    if (s.tokens.empty()) s.tokens.push_back(1);
    const AdapterId adapter = Uniform(0, 5) == 0 ? 1 : kBaseModel;
    PrefixHit hit = kv_.MatchPrefix(s.tokens, adapter);
    CheckHit(hit, s.tokens, adapter);
    const int32_t n = Uniform(0, static_cast<int>(s.tokens.size()) - hit.num_cached_tokens);
    const SeqId id = next_id_++;
    if (TryGrow(id, 0, n, hit)) {
      s.num_tokens = hit.num_cached_tokens + n;
      s.num_computed = hit.num_cached_tokens;
      adapters_[id] = adapter;
      seqs_[id] = std::move(s);
      num_hits_ += hit.blocks.empty() ? 0 : 1;
    }
  }

  void GrowSome() {
    const SeqId id = PickSeq();
    RefSeq& s = seqs_[id];
    const int32_t n = Uniform(0, static_cast<int>(s.tokens.size()) - s.num_tokens);
    if (TryGrow(id, s.num_tokens, n, {})) s.num_tokens += n;
  }

  // Grows `id` and compares the outcome with what the reference expects.
  bool TryGrow(SeqId id, int32_t have_tokens, int32_t n, const PrefixHit& hit) {
    const int32_t have_blocks = static_cast<int32_t>(kv_.block_table(id).size());
    const int32_t total = have_tokens + hit.num_cached_tokens + n;
    const int32_t need = (total + kBlockTokens - 1) / kBlockTokens - have_blocks -
                         static_cast<int32_t>(hit.blocks.size());
    int32_t available = kv_.num_free_blocks();
    for (BlockId b : hit.blocks) available -= kv_.pool().ref_count(b) == 0 ? 1 : 0;
    auto grown = kv_.Grow(id, n, hit);
    EXPECT_EQ(grown.has_value(), need <= available) << "need " << need << " have " << available;
    if (!grown.has_value()) {
      ++num_no_room_;
      EXPECT_EQ(kv_.num_tokens(id), have_tokens);
      return false;
    }
    EXPECT_EQ(static_cast<int32_t>(grown->size()), std::max(need, 0));
    for (BlockId b : *grown) truth_[b].reset();  // fresh block: no KV yet
    EXPECT_EQ(kv_.num_tokens(id), total);
    return true;
  }

  void CommitSome() {
    const SeqId id = PickSeq();
    RefSeq& s = seqs_[id];
    s.num_computed = Uniform(s.num_computed, s.num_tokens);
    kv_.CommitComputed(id, std::span(s.tokens).first(s.num_computed), adapters_[id]);
    // The reference "computes" the KV: a block holds the whole prefix up to its end.
    std::span<const BlockId> table = kv_.block_table(id);
    for (int32_t b = 0; (b + 1) * kBlockTokens <= s.num_computed; ++b) {
      std::vector<TokenId> prefix(s.tokens.begin(), s.tokens.begin() + (b + 1) * kBlockTokens);
      prefix.insert(prefix.begin(), adapters_[id]);
      if (truth_[table[b]].has_value()) {
        ASSERT_EQ(*truth_[table[b]], prefix) << "block " << table[b];
      }
      truth_[table[b]] = prefix;
    }
  }

  void ReleaseSome() {
    const SeqId id = PickSeq();
    kv_.Release(id);
    seqs_.erase(id);
    EXPECT_TRUE(kv_.block_table(id).empty());
  }

  void CheckHit(const PrefixHit& hit, const std::vector<TokenId>& tokens, AdapterId adapter) {
    ASSERT_EQ(hit.num_cached_tokens, static_cast<int32_t>(hit.blocks.size()) * kBlockTokens);
    for (size_t i = 0; i < hit.blocks.size(); ++i) {
      std::vector<TokenId> prefix(tokens.begin(), tokens.begin() + (i + 1) * kBlockTokens);
      prefix.insert(prefix.begin(), adapter);
      ASSERT_TRUE(truth_[hit.blocks[i]].has_value()) << "hit on a block never computed";
      ASSERT_EQ(*truth_[hit.blocks[i]], prefix) << "hit block " << hit.blocks[i];
    }
  }

  void CheckInvariants() {
    const BlockPool& pool = kv_.pool();
    std::vector<int32_t> refs(pool.num_blocks(), 0);
    for (const auto& [id, s] : seqs_) {
      std::span<const BlockId> table = kv_.block_table(id);
      ASSERT_EQ(static_cast<int32_t>(table.size()),
                (s.num_tokens + kBlockTokens - 1) / kBlockTokens);
      ASSERT_EQ(kv_.num_tokens(id), s.num_tokens);
      for (BlockId b : table) ++refs[b];
    }
    std::set<BlockId> seen;
    for (BlockId b : pool.FreeListForTesting()) {
      ASSERT_TRUE(seen.insert(b).second) << "block " << b << " listed twice";
      ASSERT_FALSE(pool.is_cached(b));
    }
    for (BlockId b : pool.EvictionOrderForTesting()) {
      ASSERT_TRUE(seen.insert(b).second) << "block " << b << " listed twice";
      ASSERT_TRUE(pool.is_cached(b));
    }
    for (BlockId b = 0; b < pool.num_blocks(); ++b) {
      ASSERT_EQ(pool.ref_count(b), refs[b]) << "block " << b;
      ASSERT_EQ(refs[b] == 0, seen.contains(b)) << "block " << b;
    }
    int32_t cached = 0;
    for (BlockId b = 0; b < pool.num_blocks(); ++b) cached += pool.is_cached(b) ? 1 : 0;
    const auto index = pool.IndexForTesting();
    ASSERT_EQ(static_cast<int32_t>(index.size()), cached);
    for (const auto& [hash, b] : index) {
      ASSERT_EQ(pool.hash(b), hash);
      ASSERT_TRUE(truth_[b].has_value()) << "indexed block " << b << " was never computed";
    }
    const Occupancy occ = kv_.occupancy();
    ASSERT_EQ(occ.used_blocks + pool.num_free(), occ.total_blocks);
    ASSERT_EQ(occ.cached_blocks, cached);
  }

  KvCache kv_;
  std::vector<std::optional<std::vector<TokenId>>> truth_;  // adapter + prefix per block
  std::mt19937 rng_;
  std::vector<std::vector<TokenId>> stems_;
  std::map<SeqId, RefSeq> seqs_;
  std::map<SeqId, AdapterId> adapters_;
  SeqId next_id_ = 1;
  int num_hits_ = 0;
  int num_no_room_ = 0;
};

TEST(KvCacheRandom, ThousandsOfOperationsKeepEveryInvariant) {
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    RandomKvTest test(/*num_blocks=*/12, seed);
    for (int i = 0; i < 3000 && !::testing::Test::HasFatalFailure(); ++i) test.Step();
    // The run exercised the interesting paths.
    EXPECT_GT(test.num_hits(), 20) << "seed " << seed;
    EXPECT_GT(test.num_no_room(), 20) << "seed " << seed;
  }
}

}  // namespace
}  // namespace spillway::kvcache
