// FineTuneJobs: the fine-tuning jobs of the admin API (POST /v1/fine_tuning/jobs, issue #7),
// trained in the engine's idle time.
//
// A job goes validating_files -> queued -> running -> succeeded | failed | cancelled.
//   - Create (any thread) checks the request, resolves the hyperparameters, refuses a job
//     whose memory (frozen base weights as F16, LoRA parameters + gradient + AdamW moments,
//     one micro-batch's activations) does not fit under --finetune-memory-bytes, and persists
//     the job as <jobs dir>/<id>/job.json.
//   - The preparer thread (one) checks the training file against its digest and tokenizes it
//     (dataset.h): the job is "queued". When no job holds the training slot it builds the
//     oldest queued job's TrainingJob on FineTuneOptions::device (dequantizes the base on the
//     host, or uploads it to the GPU: seconds, so never on the engine thread), restores its
//     last checkpoint if it has one, and hands it to the slot: the job is "running". One job
//     trains at a time.
//   - The engine loop (scheduler::IdleWork) runs one piece of a micro-batch per idle pass
//     (TrainingJob::StepPiece: half a layer or one lm_head slice, a few ms); every
//     --finetune-checkpoint-steps optimizer steps it checkpoints (atomic) and persists the job
//     and its events. At the end it saves the PEFT adapter to <jobs dir>/<id>/adapter; the
//     preparer then hands it to the AdapterSink (the serving registry, which loads through the
//     engine loop) under the name "ft:<base>:<suffix>:<id>", and only then does the job succeed.
//   - Cancel marks the job; the engine loop drops it before its next step.
// On start, jobs left validating, queued or running are queued again; a running one resumes
// from its last checkpoint.
//
// Thread safety: public methods are safe from any thread; HasWork/RunOnce run on the engine
// loop's thread (the only thread that touches the TrainingJob in the slot).
#pragma once

#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/cpu/thread_pool.h"
#include "engine/train/training_job.h"
#include "engine/weights/model_file.h"
#include "scheduler/idle_work.h"
#include "server/admin/dataset.h"
#include "server/admin/file_store.h"

namespace spillway::server::admin {

struct FineTuneOptions {
  std::string jobs_dir;              // <data dir>/jobs
  int64_t memory_bytes = 0;          // an extra cap on a job's memory; 0: only the KV budget
  int32_t micro_batch_tokens = 64;   // bounds one idle-time step
  int32_t checkpoint_steps = 10;     // optimizer steps between checkpoints
  int threads = 0;                   // training thread pool (0 = all cores)
  double base_learning_rate = 2e-3;  // times learning_rate_multiplier
  // Where jobs train: "cpu" (TrainModel<float> on the thread pool) or "cuda" (CudaTrainModel;
  // only in a build with the CUDA backend, on a server whose backend is cuda). Resolved from
  // --finetune-device before FineTuneJobs is built (admin_options.h).
  std::string device = "cpu";
};

// What the jobs need from the served model; must outlive FineTuneJobs.
struct FineTuneModel {
  const engine::ModelFile* file = nullptr;
  std::string name;  // the served base model name (the `model` jobs must name)
  TokenizeContext tokenize;
  int64_t context_tokens = 0;
  // On "cuda": the serving model's weights on the GPU by tensor name
  // (CudaTrainOptions::device_weights), so jobs train on them instead of a copy; unset: each
  // job uploads its own.
  std::function<const void*(std::string_view name)> device_weights = {};
};

// Makes a finished adapter (a PEFT directory) servable as `name`. Any thread.
using AdapterSink = std::function<absl::Status(const std::string& name, const std::string& dir)>;

// Where a job's memory comes from: the device KV pool (issue #7). A running job holds
// ceil(bytes / block_bytes) blocks, which serving cannot use meanwhile.
struct KvBudget {
  int64_t block_bytes = 0;  // one device KV block (K and V of every layer)
  // The most blocks a job may hold: the pool minus a floor that keeps serving possible
  // (room for one sequence of the served context).
  int32_t max_blocks = 0;
  // EngineLoop::ReserveKvBlocks / ReleaseKvBlocks. `granted` runs on the engine loop's thread.
  std::function<void(std::string owner, int32_t blocks,
                     absl::AnyInvocable<void(absl::Status) &&> granted)>
      reserve;
  std::function<void(std::string owner)> release;
};

// What one job keeps in memory while it trains (docs/fine-tuning.md "Memory").
struct JobMemory {
  // The base weights as training keeps them: F16 W and Wᵀ on the host, BF16 on the GPU.
  int64_t frozen = 0;
  int64_t state = 0;  // LoRA parameters, gradient and AdamW moments (host memory)
  // One micro-batch that holds the longest example (on the GPU: with the device copies of
  // the LoRA parameters and gradient).
  int64_t activations = 0;
  int64_t total() const { return frozen + state + activations; }
};

// Told about training progress (metrics). Engine-loop thread, except OnJobStates (any).
struct FineTuneObserver {
  std::function<void(double seconds)> on_piece;        // each piece of training or validation
  std::function<void(double loss)> on_optimizer_step;  // each optimizer step
  std::function<void(const std::map<std::string, int64_t>&)> on_job_states;  // counts by status
};

class FineTuneJobs final : public scheduler::IdleWork {
 public:
  FineTuneJobs(FineTuneModel model, FineTuneOptions options, FileStore& files,
               FineTuneObserver observer = {});
  ~FineTuneJobs() override;  // Stop()s

  // Joins the preparer thread (finishing a registration or preparation under way). Idempotent.
  void Stop();

  // Loads persisted jobs, requeues unfinished ones, starts the preparer.
  absl::Status Start();
  // Called (any thread) when a job becomes runnable: EngineLoop::WakeForIdleWork.
  void SetWake(std::function<void()> wake);
  void SetAdapterSink(AdapterSink sink);
  // Without a budget (tests), jobs run without reserving KV blocks. Call before Start.
  void SetKvBudget(KvBudget budget);

  // The job objects in OpenAI's shape. Errors carry the offending param (api_error.h).
  absl::StatusOr<boost::json::object> Create(const boost::json::object& request);
  // Newest first; `after` a job id; limit in 1..100.
  absl::StatusOr<boost::json::object> List(const std::string& after, int64_t limit) const;
  absl::StatusOr<boost::json::object> Get(const std::string& id) const;
  absl::StatusOr<boost::json::object> Cancel(const std::string& id);
  absl::StatusOr<boost::json::object> Events(const std::string& id, const std::string& after,
                                             int64_t limit) const;
  absl::StatusOr<boost::json::object> Checkpoints(const std::string& id) const;

  // scheduler::IdleWork (engine-loop thread).
  bool HasWork() override;
  void RunOnce() override;

  // The memory a job reserves: computed at creation (to refuse a job that cannot fit) and
  // again at launch, from the model's config, the LoRA config, the micro-batch budget, the
  // dataset's longest example (a micro-batch holds at least that one) and the device ("cpu"
  // or "cuda", as FineTuneOptions::device), by the static TrainingJob::StateBytes and
  // TrainModel::ActivationBytes, or on "cuda" CudaTrainModel::FrozenBytes and
  // ActivationBytes (admin_job_memory_test checks the arguments against the built job's
  // figures). REQUIRES: "cuda" only in a build with the CUDA backend.
  // `shared_weights`: on "cuda", the job trains on the serving model's weights (frozen 0).
  static JobMemory MemoryOf(const engine::ModelConfig& config, const engine::lora::LoraConfig& lora,
                            int64_t micro_batch_tokens, int64_t longest_example,
                            std::string_view device, bool shared_weights = false);
  // The frozen base weights as host training keeps them (F16 W and Wᵀ of every matmul).
  static int64_t FrozenBytes(const engine::ModelConfig& config);

 private:
  struct Job;
  void PrepareLoop();
  // Checks and tokenizes the job's files; the job is then queued for the slot.
  void Prepare(const std::string& id);
  // Builds the TrainingJob (restoring its checkpoint) and hands it to the slot. Holds the slot.
  void Launch(const std::string& id);
  void Register(const std::string& id);
  // Engine-loop thread (RunOnce and what it calls). The training slot's end: the slot is free
  // again (mu_ held).
  void ReleaseSlot() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After the last step (and the validation loss and token accuracy, when there is a
  // validation file): saves the adapter, hands the job to the preparer, frees the slot.
  void FinishTraining(std::optional<engine::train::EvalPieceReport> valid);
  // Counts one piece's time (the observer's on_piece, the job's piece statistics).
  void RecordPiece(double seconds);
  // "Trained in N pieces ...: p50, p99, max" (the benchmark reads it).
  void AddPieceEvent(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives back the job's KV blocks (requested or held), if any.
  void ReleaseKv(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refuses a job whose memory does not fit the KV budget (or --finetune-memory-bytes): the
  // error, or OK. Also returns the blocks it needs.
  absl::Status CheckMemory(const JobMemory& memory, int32_t* blocks) const;
  // The training file's (or validation file's) examples, as tokens.
  absl::StatusOr<std::vector<engine::train::TrainingExample>> LoadExamples(
      const std::string& file_id) const;
  void Finish(Job& job, const std::string& status, const absl::Status& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores the job's per-step metrics as a "fine-tune-results" CSV file (OpenAI's
  // result_files) and lists it on the job.
  void WriteResults(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddEvent(Job& job, std::string message, boost::json::object data = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  boost::json::object ToJson(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportStates() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string DirOf(const std::string& id) const;
  absl::StatusOr<Job*> Find(const std::string& id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FineTuneModel model_;
  const FineTuneOptions options_;
  FileStore& files_;
  const FineTuneObserver observer_;
  // The CPU training threads; none when jobs train on the GPU (--finetune-device cuda).
  std::optional<engine::cpu::ThreadPool> pool_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> to_prepare_ ABSL_GUARDED_BY(mu_);  // to validate
  std::deque<std::string> to_start_ ABSL_GUARDED_BY(mu_);    // validated, "queued"
  // Finished jobs whose adapter the preparer hands to the sink (and, after a restart, jobs
  // that had succeeded, to serve them again).
  std::deque<std::string> to_register_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool slot_busy_ ABSL_GUARDED_BY(mu_) = false;  // a job holds (or is about to hold) the slot
  std::function<void()> wake_ ABSL_GUARDED_BY(mu_);
  AdapterSink sink_ ABSL_GUARDED_BY(mu_);
  KvBudget kv_budget_;  // set before Start, then read-only

  // The training slot: set by the preparer under mu_, then used by the engine loop alone.
  std::atomic<bool> slot_ready_{false};
  std::unique_ptr<engine::train::TrainingJob> slot_job_;
  std::vector<engine::train::TrainingExample> slot_validation_;
  std::string slot_id_;
  bool slot_evaluating_ = false;  // training is done; the validation loss runs
  // Piece times of the job in the slot: 0.1 ms buckets, the max, the count.
  std::vector<uint32_t> slot_piece_hist_;
  double slot_piece_max_ = 0;
  int64_t slot_pieces_ = 0;

  std::thread preparer_;
};

}  // namespace spillway::server::admin
