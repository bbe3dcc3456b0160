#include "scheduler/engine_loop.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "scheduler/inbox.h"
#include "scheduler/scheduler.h"

namespace spillway::scheduler {
namespace {

// Steps with fewer tokens are mostly decodes, whose cost per token says nothing about prefill.
constexpr int32_t kMinRecomputeSampleTokens = 4 * kvcache::kBlockTokens;

}  // namespace

struct EngineLoop::State {
  State(engine::Model& model, kvcache::KvCache& kv, const engine::Tokenizer& tokenizer,
        EngineLoopOptions options)
      : model(model),
        kv(kv),
        tokenizer(tokenizer),
        options(options),
        context_tokens(model.config().context_length),
        vocab_size(model.config().vocab_size),
        scheduler(tokenizer, {.max_batch_tokens = options.max_batch_tokens,
                              .max_running_seqs = options.max_running_seqs,
                              .context_tokens = context_tokens,
                              .vocab_size = vocab_size}) {}

  void Run();
  // Applies the inbox's messages; returns false on the stop signal.
  bool ApplyInbox(Inbox::Messages messages);
  // Runs one step; false when requests are held but nothing could be planned.
  bool RunStep();
  void PublishStats();
  // Grants the pending KV reservations that fit (the loop holds no request). Sets
  // reservations_blocked when the first one must wait for another owner's release.
  void GrantReservations();

  // Set at construction, then read-only (any thread).
  engine::Model& model;
  kvcache::KvCache& kv;
  const engine::Tokenizer& tokenizer;
  const EngineLoopOptions options;
  const int64_t context_tokens;
  const int64_t vocab_size;

  // Any thread.
  Inbox inbox;
  std::atomic<int32_t> queued{0};  // submitted requests none of whose choices ran yet
  std::atomic<RequestId> next_id{1};
  mutable absl::Mutex stats_mu;
  EngineStats stats ABSL_GUARDED_BY(stats_mu);

  // The loop's thread only (no locks).
  Scheduler scheduler;
  std::vector<float> logits;
  engine::BatchSampling sampling;             // a step sampled on the backend: its rows
  std::vector<engine::SampleResult> samples;  // and their tokens
  int32_t last_waiting = 0;  // scheduler.num_waiting_requests() when `queued` was last settled
  int32_t added = 0;         // requests added since then
  struct PendingReservation {
    std::string owner;
    int32_t num_blocks = 0;
    absl::AnyInvocable<void(absl::Status) &&> granted;
  };
  std::deque<PendingReservation> pending_reservations;
  std::map<std::string, std::vector<kvcache::BlockId>> reservations;  // granted, by owner
  bool reservations_blocked = false;  // the first pending one waits for a release

  std::thread thread;                          // Start / Stop callers
  std::atomic<bool> started{false};            // Start was called: Post goes through the inbox
  std::atomic<std::thread::id> loop_thread{};  // set by Run
};

EngineLoop::EngineLoop(engine::Model& model, kvcache::KvCache& kv,
                       const engine::Tokenizer& tokenizer, EngineLoopOptions options)
    : state_(std::make_unique<State>(model, kv, tokenizer, options)) {
  SPW_CHECK(options.max_batch_tokens > 0 && options.max_running_seqs > 0 &&
            options.max_queued_requests >= 0);
}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Start() {
  SPW_CHECK(!state_->thread.joinable()) << "EngineLoop started twice";
  state_->started.store(true);
  state_->thread = std::thread([s = state_.get()] { s->Run(); });
  pthread_setname_np(state_->thread.native_handle(), "spw-engine");
}

void EngineLoop::Stop() {
  State& s = *state_;
  s.inbox.PostStop();
  if (s.thread.joinable()) {
    s.thread.join();
    return;
  }
  // Never started (or already joined): no other thread touches the loop's state, so end
  // whatever was submitted here.
  s.ApplyInbox(s.inbox.Take(/*wait=*/false));
  s.scheduler.CancelAll(absl::UnavailableError("the server is shutting down"), s.kv);
  s.PublishStats();
}

absl::Status EngineLoop::Submit(Request request) {
  State& s = *state_;
  if (request.channel == nullptr) return absl::InvalidArgumentError("request has no channel");
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt < 1 || prompt >= s.context_tokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt is %d tokens; it must be between 1 and %d (this model's context "
                        "is %d tokens)",
                        prompt, s.context_tokens - 1, s.context_tokens));
  }
  for (TokenId t : request.prompt) {
    if (t < 0 || t >= s.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token %d is not in the vocabulary (%d tokens)", t, s.vocab_size));
    }
  }
  if (request.n < 1) return absl::InvalidArgumentError("n must be >= 1");
  if (request.adapter.is_base() != (request.adapter.id == kvcache::kBaseModel)) {
    return absl::InvalidArgumentError("an adapter needs both its weights and a non-zero id");
  }
  if (request.stop.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be >= 1");
  if (absl::Status st = engine::Validate(request.sampling, s.vocab_size); !st.ok()) return st;

  int32_t queued = s.queued.load();
  do {
    if (queued >= s.options.max_queued_requests) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%d requests are already waiting (the limit is %d); retry later", queued,
                          s.options.max_queued_requests));
    }
  } while (!s.queued.compare_exchange_weak(queued, queued + 1));
  if (!s.inbox.PostRequest(std::move(request))) {
    s.queued.fetch_sub(1);
    return absl::UnavailableError("the engine loop is stopping");
  }
  return absl::OkStatus();
}

void EngineLoop::Cancel(RequestId id) { state_->inbox.PostCancel(id); }

void EngineLoop::Post(absl::AnyInvocable<void() &&> task) {
  State& s = *state_;
  // On the loop's own thread a task runs at once: waiting for the next step there would
  // deadlock a caller that waits for the task.
  if (s.started.load() && std::this_thread::get_id() != s.loop_thread.load() &&
      s.inbox.PostTask(task)) {
    return;
  }
  std::move(task)();
}

RequestId EngineLoop::NextRequestId() { return state_->next_id.fetch_add(1); }

void EngineLoop::WakeForIdleWork() { state_->inbox.PostWake(); }

void EngineLoop::ReserveKvBlocks(std::string owner, int32_t num_blocks,
                                 absl::AnyInvocable<void(absl::Status) &&> granted) {
  SPW_CHECK(num_blocks >= 0) << num_blocks;
  Post([s = state_.get(), owner = std::move(owner), num_blocks,
        granted = std::move(granted)]() mutable {
    s->pending_reservations.push_back(
        {.owner = std::move(owner), .num_blocks = num_blocks, .granted = std::move(granted)});
    s->reservations_blocked = false;
  });
}

void EngineLoop::ReleaseKvBlocks(std::string owner) {
  Post([s = state_.get(), owner = std::move(owner)] {
    std::erase_if(s->pending_reservations,
                  [&](const State::PendingReservation& r) { return r.owner == owner; });
    if (auto it = s->reservations.find(owner); it != s->reservations.end()) {
      s->kv.Unreserve(it->second);
      s->reservations.erase(it);
    }
    s->reservations_blocked = false;
    s->PublishStats();
  });
}

EngineStats EngineLoop::stats() const {
  absl::MutexLock lock(&state_->stats_mu);
  return state_->stats;
}

// ---------------------------------------------------------------------------------------------
// The loop's thread

void EngineLoop::State::Run() {
  loop_thread.store(std::this_thread::get_id());
  PublishStats();  // occupancy (e.g. an SSD tier reloaded at start-up) before any request
  // NOTE(ftapi): idle work runs only when no request is held at all (none running, none
  // waiting), one piece per pass, and the inbox is read between pieces: a request that
  // arrives waits for at most the piece under way.
  auto idle_work_ready = [this] {
    return options.idle_work != nullptr && options.idle_work->HasWork();
  };
  auto reservation_ready = [this] {
    return !pending_reservations.empty() && !reservations_blocked;
  };
  while (ApplyInbox(inbox.Take(
      /*wait=*/scheduler.idle() && !idle_work_ready() && !reservation_ready()))) {
    if (scheduler.idle() && reservation_ready()) {
      GrantReservations();
      PublishStats();
      continue;
    }
    if (scheduler.idle() && idle_work_ready()) {
      options.idle_work->RunOnce();
      PublishStats();
      continue;
    }
    if (!RunStep()) {
      // NOTE(tiers): nothing could run although requests are held: they wait for SSD reads
      // (or for blocks); back off briefly instead of spinning on the inbox.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    PublishStats();
  }
  // Requests posted before the stop signal were applied above; end everything.
  scheduler.CancelAll(absl::UnavailableError("the server is shutting down"), kv);
  PublishStats();
}

void EngineLoop::State::GrantReservations() {
  while (!pending_reservations.empty()) {
    PendingReservation& r = pending_reservations.front();
    std::optional<std::vector<kvcache::BlockId>> blocks = kv.Reserve(r.num_blocks);
    absl::Status status;
    if (!blocks.has_value()) {
      if (!reservations.empty()) {
        reservations_blocked = true;  // another owner's blocks may come back
        return;
      }
      status = absl::ResourceExhaustedError(
          absl::StrFormat("%d KV blocks cannot be reserved: the device pool has %d", r.num_blocks,
                          kv.num_serving_blocks()));
    } else {
      if (options.on_kv_reserved) options.on_kv_reserved(*blocks);
      std::vector<kvcache::BlockId>& held = reservations[r.owner];
      held.insert(held.end(), blocks->begin(), blocks->end());
    }
    PendingReservation taken = std::move(r);
    pending_reservations.pop_front();
    std::move(taken.granted)(status);
  }
}

bool EngineLoop::State::ApplyInbox(Inbox::Messages messages) {
  for (auto& task : messages.tasks) std::move(task)();
  for (Request& r : messages.requests) {
    scheduler.Add(std::move(r));
    ++added;
  }
  for (RequestId id : messages.cancels) {
    scheduler.Cancel(id, absl::CancelledError("the request was cancelled"), kv);
  }
  return !messages.stop;
}

bool EngineLoop::State::RunStep() {
  scheduler.CancelExpired(std::chrono::steady_clock::now(), kv);
  const BatchPlan plan = scheduler.PlanIteration(kv);
  if (plan.empty()) return scheduler.idle();
  const auto start = std::chrono::steady_clock::now();
  const bool on_backend = options.device_sampling && model.SupportsDeviceSampling() &&
                          scheduler.DescribeSampling(plan, &sampling);
  const absl::Status st = on_backend ? model.ForwardAndSample(plan.batch, sampling, &samples)
                                     : model.Forward(plan.batch, &logits);
  if (st.ok()) {
    // Prompt-sized steps tell the KV cache what recomputing a block costs here.
    if (plan.num_tokens >= kMinRecomputeSampleTokens) {
      kv.ObserveForward(
          plan.num_tokens,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    if (options.metrics != nullptr) {
      options.metrics->OnStep({.start = start,
                               .num_tokens = plan.num_tokens,
                               .num_seqs = static_cast<int32_t>(plan.slices.size())});
    }
    if (on_backend) {
      scheduler.ApplyResults(plan, samples, kv);
    } else {
      scheduler.ApplyResults(plan, logits, kv);
    }
  } else {
    scheduler.FailBatch(plan, st, kv);
  }
  return true;
}

void EngineLoop::State::PublishStats() {
  // Requests that left the queue (ran or ended) since the last settlement.
  const int32_t waiting = scheduler.num_waiting_requests();
  queued.fetch_sub(last_waiting + added - waiting);
  last_waiting = waiting;
  added = 0;
  const kvcache::Occupancy occ = kv.occupancy();
  const SchedulerCounters& c = scheduler.counters();
  absl::MutexLock lock(&stats_mu);
  stats = {.running_seqs = scheduler.num_running_seqs(),
           .waiting_requests = waiting,
           .kv_used_blocks = occ.used_blocks,
           .kv_cached_blocks = occ.cached_blocks,
           .kv_total_blocks = occ.total_blocks,
           .kv_reserved_blocks = occ.reserved_blocks,
           .preemptions = c.preemptions,
           .prefix_cache_queries = c.prefix_cache_queries,
           .prefix_cache_hits = c.prefix_cache_hits,
           .steps = c.steps,
           .prefix_cache_hits_by_tier = kv.hit_tokens(),
           .tiers = kv.tiers() != nullptr ? std::optional(kv.tiers()->stats()) : std::nullopt};
}

}  // namespace spillway::scheduler
