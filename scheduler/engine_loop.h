// EngineLoop: the one thread that owns the scheduler, the model and the KV cache (DESIGN.md
// "Threads"; STYLE.md §7). Front ends call Submit and Cancel from any thread; those post into
// the inbox, which the loop drains at the start of each step. Each step plans one batch
// (running sequences' next tokens plus chunks of waiting prompts), runs Model::Forward,
// samples, applies stop rules and pushes TokenEvents into each request's channel.
//
// Thread safety: Submit, Cancel, stats() and Stop are safe from any thread. Everything else
// runs on the loop's own thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "engine/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "kvcache/kv_cache.h"
#include "scheduler/api/request.h"
#include "scheduler/idle_work.h"
#include "scheduler/metrics_sink.h"

namespace spillway::scheduler {

struct EngineLoopOptions {
  int32_t max_batch_tokens = 512;     // tokens per step (decode tokens + prompt chunks)
  int32_t max_running_seqs = 64;      // sequences decoding at once
  int32_t max_queued_requests = 256;  // waiting requests; past this Submit fails (429)
  // Sample on the model's backend when it can (Model::SupportsDeviceSampling: the CUDA
  // backend), so only token ids and logprobs leave the GPU; otherwise the logits come back to
  // the per-sequence Samplers. Same tokens either way (docs/gpu.md states the exceptions).
  bool device_sampling = true;
  // Told about every step on the loop's thread; may be null. Must outlive the loop.
  MetricsSink* metrics = nullptr;
  // Work run one bounded piece at a time when no request is held (a fine-tuning job); may be
  // null. Must outlive the loop.
  IdleWork* idle_work = nullptr;
  // Called on the loop's thread with blocks ReserveKvBlocks has just taken, before their
  // owner hears of it: the backend may give their memory back (Backend::DiscardKvBlocks). May
  // be empty.
  std::function<void(std::span<const kvcache::BlockId>)> on_kv_reserved = {};
};

// A consistent snapshot for /health, /metrics and tests.
struct EngineStats {
  int32_t running_seqs = 0;
  int32_t waiting_requests = 0;
  int32_t kv_used_blocks = 0;    // referenced by a running sequence
  int32_t kv_cached_blocks = 0;  // kept for prefix reuse (some of them also in use)
  int32_t kv_total_blocks = 0;
  int32_t kv_reserved_blocks = 0;  // held out of serving (ReserveKvBlocks); in kv_total_blocks
  int64_t preemptions = 0;
  int64_t prefix_cache_queries = 0;  // prompt tokens looked up
  int64_t prefix_cache_hits = 0;     // prompt tokens found cached
  int64_t steps = 0;
  // prefix_cache_hits split by the tier the tokens came from (kvcache::Tier order); a hit
  // counts when it is taken, so the sum can differ briefly from prefix_cache_hits.
  std::array<int64_t, kvcache::kNumTiers> prefix_cache_hits_by_tier{};
  // The lower tiers (host RAM, SSD); nullopt when the KV cache has none.
  std::optional<kvcache::TierStats> tiers = {};
};

class EngineLoop {
 public:
  // `model`, `kv` and `tokenizer` must outlive the loop; after Start they are touched only by
  // the loop's thread.
  EngineLoop(engine::Model& model, kvcache::KvCache& kv, const engine::Tokenizer& tokenizer,
             EngineLoopOptions options);
  ~EngineLoop();  // Stop()s

  // Starts the loop's thread (named "spw-engine").
  void Start();
  // Finishes every request with kCancelled (UNAVAILABLE) and joins the thread. Later
  // Submits fail with UNAVAILABLE. Idempotent.
  void Stop();

  // Queues `request`. Fails with ResourceExhausted when max_queued_requests are already
  // waiting (submitted, none of their choices started), with InvalidArgument for a request
  // the front end should have refused (empty prompt or one of >= context tokens, a token
  // outside the vocabulary, n < 1, max_tokens < 1, invalid sampling parameters, no channel),
  // and with Unavailable after Stop; in all these cases the channel gets nothing. Otherwise every
  // choice of the request ends with exactly one event whose finish_reason is not kNone, then the
  // channel is closed.
  [[nodiscard]] absl::Status Submit(Request request);
  // Drops the request within one step (kCancelled); its KV blocks are freed. Unknown or
  // finished ids are ignored.
  void Cancel(RequestId id);
  RequestId NextRequestId();
  // Runs `task` on the loop's thread at the start of its next step (waking it when idle), or
  // at once on the calling thread when that is the loop's thread, or when the loop is stopped
  // or was never started (then no other thread touches the backend). Tasks run in posting
  // order, before requests posted with them. Used for backend work such as loading LoRA
  // adapters (server/adapters/).
  void Post(absl::AnyInvocable<void() &&> task);
  // Tells a loop blocked with nothing to do that idle_work may have work now. Any thread.
  void WakeForIdleWork();

  // Holds `num_blocks` device KV blocks out of serving for `owner` (a fine-tuning job's
  // memory, issue #7) until ReleaseKvBlocks(owner). The loop takes them when it holds no
  // request, so that every block is free or cached (cached ones are evicted, spilling to the
  // lower tiers) and no sequence is ever preempted for them; requests that arrive later are
  // admitted against the smaller pool. Then it calls `granted` on its own thread: OK, or
  // ResourceExhausted when the pool cannot give that many even with no other reservation
  // held (while another owner's is held, it waits for that one to go). Any thread.
  void ReserveKvBlocks(std::string owner, int32_t num_blocks,
                       absl::AnyInvocable<void(absl::Status) &&> granted);
  // Gives `owner`'s blocks back to the pool, or drops its reservation not yet granted (whose
  // `granted` is then never called). Unknown owners are ignored. Any thread; on the loop's
  // thread it happens at once (EngineLoop::Post).
  void ReleaseKvBlocks(std::string owner);

  EngineStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace spillway::scheduler
