// RequestState and Choice: what the scheduler keeps for each request it holds and for each of
// its choices (one sequence per choice). Plain data owned by Scheduler; back-references are
// ids. Engine-loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/sampler/sampler.h"
#include "kvcache/ids.h"
#include "scheduler/api/request.h"
#include "scheduler/choice_stream.h"

namespace spillway::scheduler {

enum class ChoicePhase {
  kNotStarted,  // choice i > 0 of an n > 1 request: queued once choice 0's prompt is computed
  kWaiting,     // in the waiting queue (new, or preempted: holds no KV blocks)
  kRunning,     // holds KV blocks; scheduled every step while the budget lasts
  kFinished,    // its final event has been pushed
};

struct Choice {
  kvcache::SeqId seq = 0;
  std::vector<TokenId> tokens;  // prompt + generated so far
  int32_t num_computed = 0;     // tokens whose KV is written (0 while not running)
  engine::Sampler sampler;
  ChoiceStream stream;
  ChoicePhase phase = ChoicePhase::kNotStarted;
  // Waiting with part of its prefix on the SSD: reads into the host tier were started at its
  // first admission attempt (it is admitted when they finish, or past them if they fail).
  bool prefetch_started = false;

  int32_t num_pending() const { return static_cast<int32_t>(tokens.size()) - num_computed; }
};

struct RequestState {
  Request request;
  int64_t arrival = 0;          // order of Scheduler::Add calls; FCFS tie-break
  std::vector<Choice> choices;  // choices[i].stream refers to request.stop: never moved
  int32_t num_unfinished = 0;
  int32_t completion_tokens = 0;  // all choices
  // Prompt tokens found in the prefix cache when choice 0 was first admitted.
  std::optional<int32_t> cached_tokens;
};

}  // namespace spillway::scheduler
