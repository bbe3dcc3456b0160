// FakeModel: an engine::Model for scheduler tests (STYLE.md §9 "what to fake"). It keeps a fake
// KV cache — the token written at each (block, slot) — so every forward writes its chunks'
// tokens through their block tables and reads each wanted position's whole context back the
// same way; a wrong block table or a shared block overwritten shows up as a different token
// or as a read of a slot never written (kv_errors()). The logits favour one token, chosen by a
// rule from that context: by default from (last token, position), so outputs are predictable.
// It records every batch it saw, and can be told to fail the next forward.
// Header-only (spw_test_support does not link the engine). Single-threaded, like a Model.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/model.h"
#include "kvcache/ids.h"

namespace spillway::testing {

class FakeModel final : public engine::Model {
 public:
  // The token to favour after `context`: every token of the sequence at positions [0, p], p
  // being the position whose logits are asked, as read back from the fake KV cache.
  using NextTokenFn = std::function<engine::TokenId(std::span<const engine::TokenId> context)>;

  struct Options {
    int64_t vocab_size = 258;
    int64_t context_length = 1024;
    int32_t num_blocks = 16;  // must match the KvCache's
    NextTokenFn next_token = {};
  };

  struct SeenChunk {
    int32_t num_tokens = 0;
    int32_t first_position = 0;
    std::vector<kvcache::BlockId> block_table = {};
    bool want_logits = false;
  };
  struct SeenBatch {
    std::vector<engine::TokenId> tokens;
    std::vector<SeenChunk> chunks;
  };

  // Logit of the favoured token; the next token after it gets kRunnerUpLogit, the rest 0.
  static constexpr float kTopLogit = 10.0f;
  static constexpr float kRunnerUpLogit = 5.0f;

  // The default rule: a lowercase letter from the last token and its position.
  static engine::TokenId LastTokenRule(std::span<const engine::TokenId> context) {
    const int64_t pos = static_cast<int64_t>(context.size()) - 1;
    return static_cast<engine::TokenId>('a' + (context.back() + pos) % 26);
  }
  // A lowercase letter from a hash of the whole context: any KV mix-up changes the output.
  static engine::TokenId ContextHashRule(std::span<const engine::TokenId> context) {
    uint64_t h = 1469598103934665603ull;
    for (engine::TokenId t : context) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
    return static_cast<engine::TokenId>('a' + (h >> 33) % 26);
  }

  explicit FakeModel(Options options)
      : options_(std::move(options)),
        kv_(static_cast<size_t>(options_.num_blocks) * kvcache::kBlockTokens, -1) {
    config_.name = "fake";
    config_.vocab_size = options_.vocab_size;
    config_.context_length = options_.context_length;
    if (!options_.next_token) options_.next_token = &LastTokenRule;
  }

  const engine::ModelConfig& config() const override { return config_; }

  [[nodiscard]] absl::Status Forward(const engine::Batch& batch,
                                     std::vector<float>* logits) override {
    SeenBatch seen{.tokens = batch.tokens, .chunks = {}};
    for (const engine::BatchChunk& c : batch.chunks) {
      seen.chunks.push_back({.num_tokens = c.num_tokens,
                             .first_position = c.first_position,
                             .block_table = {c.block_table.begin(), c.block_table.end()},
                             .want_logits = c.want_logits});
    }
    batches_.push_back(std::move(seen));
    if (fail_next_.has_value()) {
      absl::Status st = *fail_next_;
      fail_next_.reset();
      return st;
    }
    size_t offset = 0;
    for (const engine::BatchChunk& c : batch.chunks) {
      for (int32_t i = 0; i < c.num_tokens; ++i) {
        const std::optional<size_t> slot = Slot(c, c.first_position + i);
        if (!slot.has_value()) return absl::InvalidArgumentError("block table too short");
        kv_[*slot] = batch.tokens[offset + i];
      }
      offset += c.num_tokens;
    }
    if (offset != batch.tokens.size()) return absl::InvalidArgumentError("token count mismatch");
    logits->clear();
    for (const engine::BatchChunk& c : batch.chunks) {
      if (!c.want_logits) continue;
      std::vector<engine::TokenId> context;
      for (int32_t pos = 0; pos < c.first_position + c.num_tokens; ++pos) {
        const engine::TokenId t = kv_[*Slot(c, pos)];
        if (t < 0) ++kv_errors_;
        context.push_back(t);
      }
      const engine::TokenId next = options_.next_token(context);
      const size_t row = logits->size();
      logits->resize(row + options_.vocab_size, 0.0f);
      (*logits)[row + next] = kTopLogit;
      (*logits)[row + (next + 1) % options_.vocab_size] = kRunnerUpLogit;
    }
    return absl::OkStatus();
  }

  // The next Forward records its batch, then fails with `status` without touching the KV.
  void FailNext(absl::Status status) { fail_next_ = std::move(status); }
  const std::vector<SeenBatch>& batches() const { return batches_; }
  // Reads of KV slots that no forward wrote (a broken block table).
  int64_t kv_errors() const { return kv_errors_; }
  // The fake KV cache itself ([num_blocks * kBlockTokens] tokens, -1 unwritten), so that a
  // test can move blocks in and out of it as a backend's ReadKvBlock / WriteKvBlock would.
  std::span<engine::TokenId> kv_slots() { return kv_; }

 private:
  std::optional<size_t> Slot(const engine::BatchChunk& c, int32_t pos) const {
    const size_t b = static_cast<size_t>(pos / kvcache::kBlockTokens);
    if (b >= c.block_table.size()) return std::nullopt;
    return static_cast<size_t>(c.block_table[b]) * kvcache::kBlockTokens +
           pos % kvcache::kBlockTokens;
  }

  Options options_;
  engine::ModelConfig config_;
  std::vector<engine::TokenId> kv_;  // [num_blocks * kBlockTokens] token per slot, -1 unwritten
  std::vector<SeenBatch> batches_;
  std::optional<absl::Status> fail_next_;
  int64_t kv_errors_ = 0;
};

}  // namespace spillway::testing
