// GenerationEngine: what the OpenAI front end needs from the engine loop — submit, cancel, ids
// and stats. `spillway serve` adapts scheduler::EngineLoop to it; tests use a fake. It exists
// so the HTTP and OpenAI layers can be tested without a model (STYLE.md §9, "what to fake").
// Thread safety: implementations must allow every method from any thread.
#pragma once

#include "absl/status/status.h"
#include "scheduler/api/request.h"
#include "scheduler/engine_loop.h"

namespace spillway::server::openai {

class GenerationEngine {
 public:
  virtual ~GenerationEngine() = default;
  // As scheduler::EngineLoop::Submit: ResourceExhausted when the waiting queue is full (the
  // request then gets no events); otherwise every choice ends with one final event and the
  // channel is closed.
  [[nodiscard]] virtual absl::Status Submit(scheduler::Request request) = 0;
  virtual void Cancel(scheduler::RequestId id) = 0;
  virtual scheduler::RequestId NextRequestId() = 0;
  virtual scheduler::EngineStats stats() const = 0;
};

}  // namespace spillway::server::openai
