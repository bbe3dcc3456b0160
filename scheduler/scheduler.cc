#include "scheduler/scheduler.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/check.h"

namespace spillway::scheduler {

using kvcache::KvCache;
using kvcache::SeqId;

Scheduler::Scheduler(const engine::Tokenizer& tokenizer, SchedulerOptions options)
    : tokenizer_(tokenizer), options_(options) {
  SPW_CHECK(options_.max_batch_tokens > 0 && options_.max_running_seqs > 0);
  SPW_CHECK(options_.vocab_size > 0 && options_.context_tokens > 1);
  for (TokenId id = 0; id < tokenizer_.vocab_size(); ++id) {
    if (tokenizer_.IsEndOfGeneration(id)) end_of_generation_ids_.push_back(id);
  }
}

Scheduler::~Scheduler() = default;

Scheduler::SeqKey Scheduler::KeyOf(const RequestState& state, const Choice& choice) const {
  return {.priority = state.request.priority,
          .arrival = state.arrival,
          .index = static_cast<int32_t>(&choice - state.choices.data()),
          .seq = choice.seq};
}

std::pair<RequestState*, Choice*> Scheduler::Find(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return {nullptr, nullptr};
  auto req = requests_.find(it->second.first);
  SPW_CHECK(req != requests_.end()) << "seq " << seq << " of a forgotten request";
  RequestState& state = *req->second;
  return {&state, &state.choices[it->second.second]};
}

void Scheduler::Add(Request request) {
  const RequestId id = request.id;
  SPW_CHECK(!requests_.contains(id)) << "request " << id << " added twice";
  SPW_CHECK(request.n >= 1 && !request.prompt.empty() && request.channel != nullptr);
  auto state = std::make_unique<RequestState>();
  state->request = std::move(request);
  state->arrival = next_arrival_++;
  const Request& r = state->request;
  state->choices.reserve(r.n);
  for (int32_t i = 0; i < r.n; ++i) {
    engine::SamplingParams params = r.sampling;
    if (params.seed.has_value()) *params.seed += static_cast<uint64_t>(i);
    state->choices.push_back(Choice{
        .seq = next_seq_++,
        .tokens = r.prompt,
        .sampler = engine::Sampler(std::move(params), r.prompt),
        .stream =
            ChoiceStream(tokenizer_, r.stop, end_of_generation_ids_, i, r.sampling.logprobs >= 0),
    });
    seqs_.emplace(state->choices.back().seq, std::pair(id, i));
  }
  state->num_unfinished = r.n;
  Enqueue(*state, state->choices[0]);
  ++num_waiting_requests_;
  requests_.emplace(id, std::move(state));
}

void Scheduler::Enqueue(const RequestState& state, Choice& choice) {
  choice.phase = ChoicePhase::kWaiting;
  choice.num_computed = 0;
  choice.prefetch_started = false;
  waiting_.insert(KeyOf(state, choice));
}

// ---------------------------------------------------------------------------------------------
// Planning

BatchPlan Scheduler::PlanIteration(KvCache& kv) {
  StepState step{.budget = options_.max_batch_tokens};
  kv.PollTransfers();  // SSD reads that finished since the last step are on the host now
  ScheduleRunning(kv, step);
  if (step.preempted.empty()) AdmitWaiting(kv, step);
  if (!step.scheduled.empty()) ++counters_.steps;
  return BuildPlan(std::move(step), kv);
}

void Scheduler::ScheduleRunning(KvCache& kv, StepState& step) {
  // Decodes (one pending token) first, then unfinished prompt chunks; each group in key order.
  std::vector<std::pair<bool, SeqKey>> order;
  for (const SeqKey& key : running_) {
    order.emplace_back(Find(key.seq).second->num_pending() > 1, key);
  }
  std::sort(order.begin(), order.end());
  for (const auto& [is_prefill, key] : order) {
    if (step.budget == 0) break;
    if (!running_.contains(key)) continue;  // preempted earlier in this step
    Choice& choice = *Find(key.seq).second;
    const int32_t n = std::min(choice.num_pending(), step.budget);
    bool fits = true;
    while (fits && !kv.Grow(key.seq, n).has_value()) {
      fits = false;
      if (running_.size() == 1) {
        // Alone in the pool and still no room: it can never fit.
        EndRequest(seqs_.at(key.seq).first, FinishReason::kError,
                   absl::ResourceExhaustedError(absl::StrFormat(
                       "sequence of %d tokens does not fit in the KV cache (%d blocks of %d)",
                       choice.tokens.size(), kv.num_serving_blocks(), kvcache::kBlockTokens)),
                   kv);
        break;
      }
      fits = PreemptLast(kv, step) != key.seq;
    }
    if (!fits) continue;
    step.scheduled.push_back({key.seq, n});
    step.budget -= n;
  }
}

SeqId Scheduler::PreemptLast(KvCache& kv, StepState& step) {
  SPW_CHECK(!running_.empty());
  const SeqKey victim = *running_.rbegin();
  auto [state, choice] = Find(victim.seq);
  kv.Release(victim.seq);
  running_.erase(victim);
  Enqueue(*state, *choice);
  auto it = std::find_if(step.scheduled.begin(), step.scheduled.end(),
                         [&](const Scheduled& s) { return s.seq == victim.seq; });
  if (it != step.scheduled.end()) {
    step.budget += it->num_tokens;
    step.scheduled.erase(it);
  }
  step.preempted.push_back(victim.seq);
  ++counters_.preemptions;
  return victim.seq;
}

void Scheduler::AdmitWaiting(KvCache& kv, StepState& step) {
  auto it = waiting_.begin();
  while (step.budget > 0 && it != waiting_.end() &&
         static_cast<int32_t>(running_.size()) < options_.max_running_seqs) {
    const SeqKey key = *it;
    auto [state, choice] = Find(key.seq);
    // The last token is always computed, so that its logits exist (vLLM).
    const std::span<const TokenId> tokens(choice->tokens);
    kvcache::PrefixHit hit =
        kv.MatchPrefix(tokens.first(tokens.size() - 1), state->request.adapter.id);
    if (!TakeLowerHit(kv, *choice, hit)) {
      ++it;  // its SSD blocks are still being read; later sequences may go first
      continue;
    }
    const int32_t n =
        std::min(static_cast<int32_t>(tokens.size()) - hit.num_cached_tokens, step.budget);
    if (!kv.Grow(key.seq, n, hit).has_value()) {
      if (!running_.empty()) break;  // wait for running sequences to free blocks
      EndRequest(state->request.id, FinishReason::kError,
                 absl::ResourceExhaustedError(absl::StrFormat(
                     "prompt of %d tokens does not fit in the KV cache (%d blocks of %d)",
                     tokens.size(), kv.num_serving_blocks(), kvcache::kBlockTokens)),
                 kv);
      it = waiting_.upper_bound(key);
      continue;
    }
    counters_.prefix_cache_queries += static_cast<int64_t>(tokens.size()) - 1;
    counters_.prefix_cache_hits += hit.num_cached_tokens;
    if (!state->cached_tokens.has_value()) {
      state->cached_tokens = hit.num_cached_tokens;
      --num_waiting_requests_;
    }
    it = waiting_.erase(it);
    running_.insert(key);
    choice->phase = ChoicePhase::kRunning;
    choice->num_computed = hit.num_cached_tokens;
    step.scheduled.push_back({key.seq, n});
    step.budget -= n;
  }
}

bool Scheduler::TakeLowerHit(KvCache& kv, Choice& choice, kvcache::PrefixHit& hit) {
  if (hit.num_disk_blocks() == 0) return true;
  // NOTE(tiers): prefetch starts at the first admission attempt and runs once: a sequence
  // waits for its reads, then takes what reached the host and recomputes the rest (a read
  // that failed, or a block the host tier dropped meanwhile), so it can never wait forever.
  const int32_t loading = choice.prefetch_started ? kv.NumLoading(hit) : kv.Prefetch(hit);
  choice.prefetch_started = true;
  if (loading > 0) return false;
  hit.DropFromFirstDiskBlock();
  return true;
}

BatchPlan Scheduler::BuildPlan(StepState step, const KvCache& kv) const {
  BatchPlan plan;
  plan.preempted = std::move(step.preempted);
  // NOTE(adapters): sequences of one LoRA adapter go side by side (the base model's first),
  // otherwise in scheduling order: LlamaModel merges adjacent chunks of one adapter into one
  // row segment, so a step mixing k adapters costs k segments per projection, not one per
  // sequence. Logits rows follow the slices, so the order is free to choose.
  auto adapter_of = [&](const Scheduled& s) {
    return requests_.at(seqs_.at(s.seq).first)->request.adapter.weights.get();
  };
  std::stable_sort(step.scheduled.begin(), step.scheduled.end(),
                   [&](const Scheduled& x, const Scheduled& y) {
                     return std::less<const void*>()(adapter_of(x), adapter_of(y));
                   });
  for (const Scheduled& s : step.scheduled) {
    const auto& [request_id, index] = seqs_.at(s.seq);
    const RequestState& state = *requests_.at(request_id);
    const Choice& choice = state.choices[index];
    const bool wants_logits =
        choice.num_computed + s.num_tokens == static_cast<int32_t>(choice.tokens.size());
    plan.slices.push_back({.seq = s.seq,
                           .first_pos = choice.num_computed,
                           .num_tokens = s.num_tokens,
                           .wants_logits = wants_logits});
    const auto first = choice.tokens.begin() + choice.num_computed;
    plan.batch.tokens.insert(plan.batch.tokens.end(), first, first + s.num_tokens);
    plan.batch.chunks.push_back({.num_tokens = s.num_tokens,
                                 .first_position = choice.num_computed,
                                 .block_table = kv.block_table(s.seq),
                                 .want_logits = wants_logits,
                                 .adapter = state.request.adapter.weights.get()});
    plan.num_tokens += s.num_tokens;
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Applying a step

template <typename EmitRow>
void Scheduler::ApplyResultsWith(const BatchPlan& plan, KvCache& kv, EmitRow emit) {
  size_t row = 0;
  for (const SeqSlice& slice : plan.slices) {
    auto [state, choice] = Find(slice.seq);
    SPW_CHECK(choice != nullptr && choice->phase == ChoicePhase::kRunning) << slice.seq;
    SPW_CHECK(choice->num_computed == slice.first_pos) << slice.seq;
    choice->num_computed += slice.num_tokens;
    kv.CommitComputed(slice.seq, std::span(choice->tokens).first(choice->num_computed),
                      state->request.adapter.id);
    if (!slice.wants_logits) continue;
    emit(row, *state, *choice);
    ++row;
  }
}

void Scheduler::ApplyResults(const BatchPlan& plan, std::span<float> logits, KvCache& kv) {
  const auto vocab = static_cast<size_t>(options_.vocab_size);
  ApplyResultsWith(plan, kv, [&](size_t row, RequestState& state, Choice& choice) {
    SPW_CHECK((row + 1) * vocab <= logits.size()) << "too few logits rows";
    SampleAndEmit(state, choice, logits.subspan(row * vocab, vocab), kv);
  });
}

bool Scheduler::DescribeSampling(const BatchPlan& plan, engine::BatchSampling* out) {
  out->clear();
  for (const SeqSlice& slice : plan.slices) {
    if (!slice.wants_logits) continue;
    const Choice* choice = Find(slice.seq).second;
    SPW_CHECK(choice != nullptr) << slice.seq;
    if (choice->sampler.params().logprobs > engine::kMaxDeviceTopLogprobs) return false;
  }
  std::vector<TokenId> masked;
  for (const SeqSlice& slice : plan.slices) {
    if (!slice.wants_logits) continue;
    Choice& choice = *Find(slice.seq).second;
    masked.clear();
    choice.stream.AppendMaskedTokens(&masked);
    choice.sampler.DescribeRow(masked, options_.vocab_size, out);
  }
  return true;
}

void Scheduler::ApplyResults(const BatchPlan& plan, std::span<const engine::SampleResult> samples,
                             KvCache& kv) {
  ApplyResultsWith(plan, kv, [&](size_t row, RequestState& state, Choice& choice) {
    SPW_CHECK(row < samples.size()) << "too few samples";
    choice.sampler.Accept(samples[row].token);
    Emit(state, choice, samples[row], kv);
  });
}

void Scheduler::SampleAndEmit(RequestState& state, Choice& choice, std::span<float> logits,
                              KvCache& kv) {
  choice.stream.MaskStopTokens(logits);
  const engine::SampleResult sample = choice.sampler.Sample(logits);
  choice.sampler.Accept(sample.token);
  Emit(state, choice, sample, kv);
}

void Scheduler::Emit(RequestState& state, Choice& choice, const engine::SampleResult& sample,
                     KvCache& kv) {
  choice.tokens.push_back(sample.token);
  ++state.completion_tokens;
  // n > 1: the other choices start once choice 0's prompt blocks are in the prefix cache.
  if (&choice == state.choices.data() && choice.stream.num_generated() == 0) {
    for (size_t i = 1; i < state.choices.size(); ++i) Enqueue(state, state.choices[i]);
  }
  const bool at_limit = static_cast<int64_t>(choice.tokens.size()) >= options_.context_tokens;
  TokenEvent event = choice.stream.Accept(sample, at_limit);
  if (event.finish_reason != FinishReason::kNone) Retire(state, choice, kv);
  Push(state.request.id, std::move(event));
}

void Scheduler::Retire(const RequestState& state, Choice& choice, KvCache& kv) {
  if (choice.phase == ChoicePhase::kRunning) {
    kv.Release(choice.seq);
    running_.erase(KeyOf(state, choice));
  } else if (choice.phase == ChoicePhase::kWaiting) {
    waiting_.erase(KeyOf(state, choice));
  }
  choice.phase = ChoicePhase::kFinished;
}

void Scheduler::Push(RequestId id, TokenEvent event) {
  auto it = requests_.find(id);
  SPW_CHECK(it != requests_.end()) << id;
  RequestState& state = *it->second;
  const bool last = event.finish_reason != FinishReason::kNone && --state.num_unfinished == 0;
  if (last) {
    event.usage = Usage{.prompt_tokens = static_cast<int32_t>(state.request.prompt.size()),
                        .completion_tokens = state.completion_tokens,
                        .cached_tokens = state.cached_tokens.value_or(0)};
  }
  state.request.channel->Push(std::move(event));
  if (!last) return;
  state.request.channel->Close();
  if (!state.cached_tokens.has_value()) --num_waiting_requests_;  // ended before it ran
  for (const Choice& c : state.choices) seqs_.erase(c.seq);
  requests_.erase(it);
}

void Scheduler::EndRequest(RequestId id, FinishReason reason, const absl::Status& error,
                           KvCache& kv) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  RequestState& state = *it->second;
  std::vector<int32_t> open;
  for (Choice& choice : state.choices) {
    if (choice.phase == ChoicePhase::kFinished) continue;
    Retire(state, choice, kv);
    open.push_back(static_cast<int32_t>(&choice - state.choices.data()));
  }
  for (int32_t index : open) {  // the last Push forgets the request
    Push(id, TokenEvent{.index = index, .finish_reason = reason, .error = error});
  }
}

void Scheduler::FailBatch(const BatchPlan& plan, const absl::Status& error, KvCache& kv) {
  for (const SeqSlice& slice : plan.slices) {
    auto it = seqs_.find(slice.seq);
    if (it != seqs_.end()) EndRequest(it->second.first, FinishReason::kError, error, kv);
  }
}

void Scheduler::Cancel(RequestId id, const absl::Status& reason, KvCache& kv) {
  EndRequest(id, FinishReason::kCancelled, reason, kv);
}

void Scheduler::CancelExpired(std::chrono::steady_clock::time_point now, KvCache& kv) {
  std::vector<RequestId> expired;
  for (const auto& [id, state] : requests_) {
    if (state->request.deadline.has_value() && *state->request.deadline <= now) {
      expired.push_back(id);
    }
  }
  for (RequestId id : expired) {
    Cancel(id, absl::DeadlineExceededError("the request's deadline passed"), kv);
  }
}

void Scheduler::CancelAll(const absl::Status& reason, KvCache& kv) {
  std::vector<RequestId> ids;
  for (const auto& [id, state] : requests_) ids.push_back(id);
  for (RequestId id : ids) Cancel(id, reason, kv);
}

// ---------------------------------------------------------------------------------------------
// Test hooks

std::vector<SeqId> Scheduler::SeqIdsForTesting(RequestId id) const {
  std::vector<SeqId> out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  for (const Choice& c : it->second->choices) out.push_back(c.seq);
  return out;
}

std::vector<SeqId> Scheduler::RunningForTesting() const {
  std::vector<SeqId> out;
  for (const SeqKey& k : running_) out.push_back(k.seq);
  return out;
}

std::vector<SeqId> Scheduler::WaitingForTesting() const {
  std::vector<SeqId> out;
  for (const SeqKey& k : waiting_) out.push_back(k.seq);
  return out;
}

const Choice* Scheduler::ChoiceForTesting(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return nullptr;
  return &requests_.at(it->second.first)->choices[it->second.second];
}

}  // namespace spillway::scheduler
