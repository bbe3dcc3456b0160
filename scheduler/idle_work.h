// IdleWork: work the engine loop runs in the device's idle time (issue #7: a LoRA fine-tuning
// job), one bounded piece per call, only while the loop holds no request. The loop reads its
// inbox between pieces, so an arriving request waits for at most one piece; a piece should
// therefore be short (a training piece: half a layer or one lm_head slice of a micro-batch,
// a few ms on the CPU; TrainingJob::StepPiece).
//
// Thread safety: both methods are called on the engine loop's thread only. Whoever gives the
// loop new work from another thread calls EngineLoop::WakeForIdleWork afterwards.
#pragma once

namespace spillway::scheduler {

class IdleWork {
 public:
  virtual ~IdleWork() = default;
  // True when RunOnce has something to do. Cheap (called every pass of an idle loop).
  virtual bool HasWork() = 0;
  // Runs one bounded piece of work.
  virtual void RunOnce() = 0;
};

}  // namespace spillway::scheduler
