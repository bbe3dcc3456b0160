// Scheduler: iteration-level continuous batching (vLLM v1's schedule() / update_from_output(),
// STYLE.md §3). Each step, PlanIteration decides which sequences run and how many tokens each
// gets, reserving their KV blocks, and returns a BatchPlan; after the forward pass,
// ApplyResults samples, applies stop rules and pushes TokenEvents into the requests' channels.
//
// PlanIteration runs three passes, each a function of its own:
//   1. ScheduleRunning  — budget fitting for running sequences, decodes first (so a long
//      prompt never stalls running streams for more than one chunk), then unfinished prompt
//      chunks; when KV blocks run out, preempts the lowest-priority / latest-arrived running
//      sequence: its blocks are released and it waits again, keeping its tokens. Its full
//      blocks are in the prefix index, so with lower tiers they are swapped out to host / SSD
//      as the pool reuses them and found again when it is readmitted; only its last partial
//      block (< kBlockTokens tokens) is recomputed. Without tiers: recompute.
//   2. AdmitWaiting     — only in a step without preemption: takes waiting sequences in
//      (priority, arrival) order, matches their prefix in the cache (every tier: host blocks
//      are loaded back by Grow; SSD blocks are prefetched to the host first and the sequence
//      waits for them, letting later ones pass) and reserves KV for their first chunk, within
//      the token budget and max_running_seqs. The head of the queue blocks the rest when it
//      does not fit (no starvation).
//   3. BuildPlan        — the slices as plain data plus the engine::Batch.
//
// Engine-loop thread only (owned by EngineLoop). The KvCache is passed to each call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/tokenizer.h"
#include "kvcache/kv_cache.h"
#include "scheduler/api/request.h"
#include "scheduler/batch_plan.h"
#include "scheduler/request_state.h"

namespace spillway::scheduler {

struct SchedulerOptions {
  int32_t max_batch_tokens = 512;  // tokens per step (decode tokens + prompt chunks)
  int32_t max_running_seqs = 64;   // sequences holding KV blocks at once
  int64_t context_tokens = 2048;   // the model's context: a sequence ends (kLength) there
  int64_t vocab_size = 0;          // logits row length
};

struct SchedulerCounters {
  int64_t preemptions = 0;
  int64_t prefix_cache_queries = 0;  // tokens looked up at admission
  int64_t prefix_cache_hits = 0;     // tokens found cached
  int64_t steps = 0;                 // PlanIteration calls that planned something
};

class Scheduler {
 public:
  // `tokenizer` must outlive the scheduler.
  Scheduler(const engine::Tokenizer& tokenizer, SchedulerOptions options);
  ~Scheduler();

  // Add queues `request`. REQUIRES: it is valid (EngineLoop::Submit checks): prompt of 1 to
  // context_tokens - 1 tokens in the vocabulary, n >= 1, max_tokens >= 1, sampling
  // parameters valid, channel set, id unused.
  void Add(Request request);

  // PlanIteration plans the next step (see the file comment). Reserves KV blocks in `kv`
  // for every slice; sequences that can never fit in `kv` end with kError
  // (RESOURCE_EXHAUSTED). An empty plan means nothing can run now.
  BatchPlan PlanIteration(kvcache::KvCache& kv);

  // ApplyResults takes the forward's `logits` ([slices that want logits, vocab_size], which
  // it modifies: sampling processes them in place): advances every slice's computed tokens,
  // registers newly full blocks in the prefix cache, samples, applies the stop rules and
  // pushes one event per sampled token. Finished requests release their blocks, get Usage on
  // their last event and have their channel closed.
  void ApplyResults(const BatchPlan& plan, std::span<float> logits, kvcache::KvCache& kv);

  // Sampling on the model's backend (docs/gpu.md): DescribeSampling fills `out` with one row
  // per slice that wants logits (Sampler::DescribeRow, with the stop mask), advancing each
  // sampler's generator as sampling would; false, with nothing drawn, when a row asks for
  // more than engine::kMaxDeviceTopLogprobs logprobs (the step then samples on the host).
  // ApplyResults then takes the backend's `samples` in place of logits.
  bool DescribeSampling(const BatchPlan& plan, engine::BatchSampling* out);
  void ApplyResults(const BatchPlan& plan, std::span<const engine::SampleResult> samples,
                    kvcache::KvCache& kv);

  // FailBatch ends every request with a slice in `plan` with kError and `error` (the
  // forward's status), freeing its blocks.
  void FailBatch(const BatchPlan& plan, const absl::Status& error, kvcache::KvCache& kv);

  // Cancel ends request `id` with kCancelled and `reason` (CANCELLED, DEADLINE_EXCEEDED or
  // UNAVAILABLE) and frees its blocks. Unknown (or finished) ids are ignored.
  void Cancel(RequestId id, const absl::Status& reason, kvcache::KvCache& kv);
  // Cancels (DEADLINE_EXCEEDED) every request whose deadline is at or before `now`.
  void CancelExpired(std::chrono::steady_clock::time_point now, kvcache::KvCache& kv);
  void CancelAll(const absl::Status& reason, kvcache::KvCache& kv);

  bool idle() const { return requests_.empty(); }
  int32_t num_running_seqs() const { return static_cast<int32_t>(running_.size()); }
  // Requests none of whose choices has run yet.
  int32_t num_waiting_requests() const { return num_waiting_requests_; }
  const SchedulerCounters& counters() const { return counters_; }

  // For tests: the sequences of `id` (choice order), the running and waiting sequences in
  // scheduling order, and a choice's state (nullptr when its request is gone).
  std::vector<kvcache::SeqId> SeqIdsForTesting(RequestId id) const;
  std::vector<kvcache::SeqId> RunningForTesting() const;
  std::vector<kvcache::SeqId> WaitingForTesting() const;
  const Choice* ChoiceForTesting(kvcache::SeqId seq) const;

 private:
  // Scheduling order: lower priority value first, then earlier arrival, then choice index.
  struct SeqKey {
    int32_t priority;
    int64_t arrival;
    int32_t index;
    kvcache::SeqId seq;
    auto operator<=>(const SeqKey&) const = default;
  };
  struct Scheduled {
    kvcache::SeqId seq;
    int32_t num_tokens;
  };
  struct StepState {
    int32_t budget = 0;
    std::vector<Scheduled> scheduled = {};
    std::vector<kvcache::SeqId> preempted = {};
  };

  void ScheduleRunning(kvcache::KvCache& kv, StepState& step);
  // Frees the KV of the running sequence with the largest key and puts it back in the
  // waiting queue; unschedules it if it was scheduled this step. Returns its id.
  kvcache::SeqId PreemptLast(kvcache::KvCache& kv, StepState& step);
  void AdmitWaiting(kvcache::KvCache& kv, StepState& step);
  // Settles the SSD part of `choice`'s prefix hit: starts (once) or checks its prefetch.
  // Returns false while reads are in flight (the sequence keeps waiting); otherwise cuts the
  // hit before its first block still on the SSD and returns true.
  bool TakeLowerHit(kvcache::KvCache& kv, Choice& choice, kvcache::PrefixHit& hit);
  BatchPlan BuildPlan(StepState step, const kvcache::KvCache& kv) const;

  // Samples the next token of `choice` from `logits` and pushes its event.
  void SampleAndEmit(RequestState& state, Choice& choice, std::span<float> logits,
                     kvcache::KvCache& kv);
  // Appends `sample` (taken by `choice`'s sampler) to `choice` and pushes its event.
  void Emit(RequestState& state, Choice& choice, const engine::SampleResult& sample,
            kvcache::KvCache& kv);
  // ApplyResults with `emit(row, state, choice)` called for the slice of each logits row.
  template <typename EmitRow>
  void ApplyResultsWith(const BatchPlan& plan, kvcache::KvCache& kv, EmitRow emit);
  // Ends every unfinished choice of `id` with `reason` / `error`, then closes the channel.
  void EndRequest(RequestId id, FinishReason reason, const absl::Status& error,
                  kvcache::KvCache& kv);
  // Releases `choice`'s KV and removes it from the queues; it becomes kFinished.
  void Retire(const RequestState& state, Choice& choice, kvcache::KvCache& kv);
  // Pushes `event` (adding Usage if it ends the request) and closes/forgets a request whose
  // every choice has finished.
  void Push(RequestId id, TokenEvent event);
  void Enqueue(const RequestState& state, Choice& choice);
  SeqKey KeyOf(const RequestState& state, const Choice& choice) const;
  std::pair<RequestState*, Choice*> Find(kvcache::SeqId seq);

  const engine::Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  std::vector<TokenId> end_of_generation_ids_;
  std::unordered_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::unordered_map<kvcache::SeqId, std::pair<RequestId, int32_t>> seqs_;  // -> (request, choice)
  std::set<SeqKey> waiting_;
  std::set<SeqKey> running_;
  int64_t next_arrival_ = 0;
  kvcache::SeqId next_seq_ = 1;
  int32_t num_waiting_requests_ = 0;
  SchedulerCounters counters_;
};

}  // namespace spillway::scheduler
