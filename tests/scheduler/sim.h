// Sim: a Scheduler driven step by step over a real small KvCache and the FakeModel, for the
// table-driven scheduler tests (STYLE.md §9). Each Step plans, runs the fake forward and
// applies the results, and returns what ran as (seq, first_pos, num_tokens) rows; Events
// collects what each request's channel received.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/block_io.h"
#include "kvcache/kv_cache.h"
#include "scheduler/scheduler.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/fakes/fake_model.h"

namespace spillway::scheduler::testing {

using spillway::testing::FakeModel;

struct Row {
  kvcache::SeqId seq;
  int32_t first_pos;
  int32_t num_tokens;
  bool operator==(const Row&) const = default;
};
inline std::ostream& operator<<(std::ostream& os, const Row& r) {
  return os << "{seq " << r.seq << " @" << r.first_pos << " x" << r.num_tokens << "}";
}

// Everything one choice received.
struct ChoiceOutput {
  std::vector<TokenId> tokens;
  std::string text;
  int num_events = 0;
  FinishReason finish_reason = FinishReason::kNone;
  int num_final_events = 0;
  TokenEvent final_event;
};
struct RequestOutput {
  std::vector<ChoiceOutput> choices;
  std::optional<Usage> usage = {};
  bool closed = false;
  int events_after_usage = 0;
};

// The FakeModel's KV cache as a kvcache::BlockIo (a block is kBlockTokens token ids). Read
// poisons the block it copied out (-1: "unwritten"), as the pool reuses it right after a
// spill: a block that should have been loaded back but was not shows up as kv_errors().
class FakeKvBlockIo final : public kvcache::BlockIo {
 public:
  explicit FakeKvBlockIo(FakeModel& model) : model_(model) {}
  int64_t block_bytes() const override { return kvcache::kBlockTokens * sizeof(TokenId); }
  absl::Status Read(kvcache::BlockId block, std::span<std::byte> dst) override {
    const std::span<TokenId> slots = Block(block);
    std::memcpy(dst.data(), slots.data(), dst.size());
    std::fill(slots.begin(), slots.end(), -1);
    return absl::OkStatus();
  }
  absl::Status Write(kvcache::BlockId block, std::span<const std::byte> src) override {
    std::memcpy(Block(block).data(), src.data(), src.size());
    return absl::OkStatus();
  }

 private:
  std::span<TokenId> Block(kvcache::BlockId block) {
    return model_.kv_slots().subspan(static_cast<size_t>(block) * kvcache::kBlockTokens,
                                     kvcache::kBlockTokens);
  }
  FakeModel& model_;
};

struct SimOptions {
  int32_t num_blocks = 16;
  int32_t host_blocks = 0;  // > 0: a host tier of that many blocks behind the device pool
  std::string disk_dir = {};     // not empty: and an SSD tier of disk_blocks blocks there
  int32_t disk_blocks = 0;
  int32_t max_batch_tokens = 64;
  int32_t max_running_seqs = 8;
  int64_t context_tokens = 1024;
  FakeModel::NextTokenFn rule = &FakeModel::ContextHashRule;
};

class Sim {
 public:
  explicit Sim(SimOptions o)
      : tokenizer_(spillway::testing::MakeByteTokenizer()),
        model_({.vocab_size = tokenizer_->vocab_size(),
                .context_length = o.context_tokens,
                .num_blocks = o.num_blocks,
                .next_token = o.rule}),
        io_(model_),
        kv_(o.num_blocks, MakeTiers(io_, o)),
        scheduler_(*tokenizer_, {.max_batch_tokens = o.max_batch_tokens,
                                 .max_running_seqs = o.max_running_seqs,
                                 .context_tokens = o.context_tokens,
                                 .vocab_size = tokenizer_->vocab_size()}),
        rule_(o.rule),
        scheduler_options_max_batch_(o.max_batch_tokens) {}

  // Adds a request with greedy sampling unless `sampling` says otherwise.
  RequestId Add(std::vector<TokenId> prompt, StopRules stop, int32_t n = 1, int32_t priority = 0,
                std::optional<engine::SamplingParams> sampling = {}) {
    Request r;
    r.id = next_id_++;
    r.prompt = std::move(prompt);
    r.stop = std::move(stop);
    r.n = n;
    r.priority = priority;
    if (sampling.has_value()) {
      r.sampling = *sampling;
    } else {
      r.sampling.temperature = 0.0f;
    }
    r.channel = std::make_shared<TokenChannel>();
    channels_[r.id] = r.channel;
    outputs_[r.id].choices.resize(n);
    scheduler_.Add(std::move(r));
    return next_id_ - 1;
  }
  Request MakeRequest(std::vector<TokenId> prompt, StopRules stop) {
    Request r;
    r.id = next_id_++;
    r.prompt = std::move(prompt);
    r.stop = std::move(stop);
    r.sampling.temperature = 0.0f;
    r.channel = std::make_shared<TokenChannel>();
    channels_[r.id] = r.channel;
    outputs_[r.id].choices.resize(1);
    return r;
  }

  // One engine-loop step; returns the slices that ran.
  std::vector<Row> Step() {
    last_plan_ = scheduler_.PlanIteration(kv_);
    std::vector<Row> rows;
    for (const SeqSlice& s : last_plan_.slices) rows.push_back({s.seq, s.first_pos, s.num_tokens});
    if (last_plan_.empty()) {
      Collect();  // planning can end requests too
      return rows;
    }
    EXPECT_LE(last_plan_.num_tokens, max_batch_tokens());
    if (absl::Status st = model_.Forward(last_plan_.batch, &logits_); st.ok()) {
      scheduler_.ApplyResults(last_plan_, logits_, kv_);
    } else {
      scheduler_.FailBatch(last_plan_, st, kv_);
    }
    Collect();
    return rows;
  }
  // Steps until no request is left (at most `max_steps`); returns the number of steps.
  int RunToEnd(int max_steps = 1000) {
    int steps = 0;
    while (!scheduler_.idle() && steps < max_steps) {
      Step();
      ++steps;
    }
    EXPECT_TRUE(scheduler_.idle()) << "still busy after " << max_steps << " steps";
    return steps;
  }

  // Drains every channel into outputs().
  void Collect() {
    for (auto& [id, channel] : channels_) {
      bool closed = false;
      RequestOutput& out = outputs_[id];
      for (TokenEvent& e : channel->Drain(&closed)) {
        if (out.usage.has_value()) ++out.events_after_usage;
        ChoiceOutput& c = out.choices.at(e.index);
        ++c.num_events;
        c.tokens.insert(c.tokens.end(), e.token_ids.begin(), e.token_ids.end());
        c.text += e.text;
        if (e.finish_reason != FinishReason::kNone) {
          ++c.num_final_events;
          c.finish_reason = e.finish_reason;
          c.final_event = e;
        }
        if (e.usage.has_value()) out.usage = e.usage;
      }
      out.closed |= closed;
    }
  }

  // The greedy tokens the fake model's rule gives after `prompt`, as if run alone.
  std::vector<TokenId> Expected(const std::vector<TokenId>& prompt, int max_tokens) const {
    std::vector<TokenId> seq = prompt;
    for (int i = 0; i < max_tokens; ++i) seq.push_back(rule_(seq));
    return {seq.begin() + prompt.size(), seq.end()};
  }

  static std::unique_ptr<kvcache::TierManager> MakeTiers(FakeKvBlockIo& io, const SimOptions& o) {
    if (o.host_blocks == 0) return nullptr;
    std::unique_ptr<kvcache::DiskTier> disk;
    if (!o.disk_dir.empty()) {
      absl::StatusOr<std::unique_ptr<kvcache::DiskTier>> d =
          kvcache::DiskTier::Open({.path = o.disk_dir,
                                   .capacity_bytes = int64_t{o.disk_blocks} * 4096,
                                   .block_bytes = io.block_bytes() + kvcache::kDiskKeyBytes,
                                   .layout_fingerprint = 1,
                                   .min_free_bytes = 0});
      EXPECT_TRUE(d.ok()) << d.status();
      if (d.ok()) disk = *std::move(d);
    }
    return std::make_unique<kvcache::TierManager>(
        io, kvcache::TierManager::Options{.host_slots = o.host_blocks, .disk = std::move(disk)});
  }

  int32_t max_batch_tokens() const { return scheduler_options_max_batch_; }
  Scheduler& scheduler() { return scheduler_; }
  kvcache::KvCache& kv() { return kv_; }
  FakeModel& model() { return model_; }
  const BatchPlan& last_plan() const { return last_plan_; }
  const RequestOutput& output(RequestId id) { return outputs_.at(id); }
  kvcache::SeqId seq(RequestId id, int choice = 0) {
    return scheduler_.SeqIdsForTesting(id).at(choice);
  }

 private:
  std::unique_ptr<engine::Tokenizer> tokenizer_;
  FakeModel model_;
  FakeKvBlockIo io_;
  kvcache::KvCache kv_;
  Scheduler scheduler_;
  FakeModel::NextTokenFn rule_;
  int32_t scheduler_options_max_batch_;
  RequestId next_id_ = 1;
  std::map<RequestId, std::shared_ptr<TokenChannel>> channels_;
  std::map<RequestId, RequestOutput> outputs_;
  BatchPlan last_plan_;
  std::vector<float> logits_;
};

// A prompt of `n` tokens, letters from `seed` on.
inline std::vector<TokenId> Prompt(int n, int seed = 0) {
  std::vector<TokenId> p;
  for (int i = 0; i < n; ++i) p.push_back('A' + (seed * 7 + i * 3) % 26);
  return p;
}

}  // namespace spillway::scheduler::testing
