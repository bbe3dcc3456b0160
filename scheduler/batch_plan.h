// BatchPlan: what one step of the engine loop runs, as plain data (STYLE.md §3 "plan, then
// apply"). Scheduler::PlanIteration builds it (having reserved the KV blocks it needs), the
// engine loop hands `batch` to Model::Forward, and Scheduler::ApplyResults (or FailBatch)
// consumes it. The block-table views in `batch` point into the KvCache and stay valid until the
// step ends. Engine-loop thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "kvcache/ids.h"

namespace spillway::scheduler {

// One sequence's part of the step: tokens [first_pos, first_pos + num_tokens) — a prompt
// chunk, a re-prefill after preemption, or the one decode token.
struct SeqSlice {
  kvcache::SeqId seq = 0;
  int32_t first_pos = 0;
  int32_t num_tokens = 0;
  bool wants_logits = false;  // the slice ends at the sequence's last token: sample after it
};

struct BatchPlan {
  std::vector<SeqSlice> slices;  // in batch order; logits rows follow the slices that want them
  engine::Batch batch;           // the same slices as Model::Forward takes them
  int32_t num_tokens = 0;        // sum of slice sizes, <= max_batch_tokens
  std::vector<kvcache::SeqId> preempted;  // sequences preempted while planning this step

  bool empty() const { return slices.empty(); }
};

}  // namespace spillway::scheduler
