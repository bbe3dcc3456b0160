// AdapterRegistry: the LoRA adapters a server serves beside its base model (issue #7,
// "Serving many adapters"). Each has a unique name (what clients put in `model`), a prefix-cache
// AdapterId (so that two adapters never share KV blocks) and its weights loaded into the
// backend (engine::lora::BackendLoraAdapter). Front ends resolve a request's `model` with Find
// and put the returned scheduler::AdapterRef into the scheduler::Request; the engine loop then
// runs that sequence's chunks with the adapter, in the same batches as everyone else's.
//
// Callers: `spillway serve` (--lora-modules at start-up), the OpenAI endpoints
// /v1/load_lora_adapter and /v1/unload_lora_adapter, the fine-tuning admin API (a finished
// job's adapter), /v1/models and gRPC.
//
// Backend work (Load, and freeing the weights) runs on the engine-loop thread: the registry
// posts it through `RunOnEngine` (scheduler::EngineLoop::Post). Add blocks until the load is
// done. Remove takes the name away at once (new requests
// get 404); requests already holding the adapter finish with it, and its backend weights are
// freed on the engine-loop thread when the last of them ends.
//
// Thread safety: every public method is safe from any thread (on the engine-loop thread
// itself, EngineLoop::Post runs the load at once instead of waiting for the next step).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/backend.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"
#include "kvcache/ids.h"
#include "scheduler/api/request.h"

namespace spillway::server::adapters {

struct AdapterRegistryOptions {
  int32_t max_loras = 8;       // adapters registered at once (vLLM's --max-loras)
  int32_t max_lora_rank = 64;  // the largest rank accepted (vLLM's --max-lora-rank)
};

// What /v1/models and the admin API show about one adapter.
struct AdapterInfo {
  std::string name;    // what clients put in `model`
  std::string source;  // where it came from: a PEFT directory, or e.g. "ftjob-..." (`root`)
  kvcache::AdapterId id = kvcache::kBaseModel;
  int32_t rank = 0;
  float alpha = 0.0f;
  int64_t created_unix = 0;  // when it was registered
};

// A served adapter as a front end needs it to build a scheduler::Request.
struct ResolvedAdapter {
  AdapterInfo info;
  scheduler::AdapterRef ref;  // ref.weights keeps the backend weights alive while held
};

class AdapterRegistry {
 public:
  // Runs `task` on the engine-loop thread soon (scheduler::EngineLoop::Post), or at once on
  // the calling thread when the loop has stopped. Tests may run it inline.
  using RunOnEngine = std::function<void(absl::AnyInvocable<void() &&>)>;

  // `model` is the base model's config (adapters are checked against it); `backend` gets the
  // adapters' weights. Both must outlive the registry and every AdapterRef it handed out.
  AdapterRegistry(const engine::ModelConfig& model, engine::Backend& backend,
                  RunOnEngine run_on_engine, AdapterRegistryOptions options = {});
  ~AdapterRegistry();
  AdapterRegistry(const AdapterRegistry&) = delete;
  AdapterRegistry& operator=(const AdapterRegistry&) = delete;

  // Registers `adapter` (host weights) under `name` and loads it into the backend; it is
  // servable when this returns. Errors: InvalidArgument for an empty name, a rank above
  // max_lora_rank or an adapter made for other model dimensions / layers; AlreadyExists for a
  // name in use (vLLM: "The lora adapter '<name>' has already been loaded."); ResourceExhausted
  // when max_loras adapters are registered; Unimplemented when the backend cannot apply LoRA;
  // the backend's error when loading fails.
  absl::StatusOr<AdapterInfo> Add(std::string name, engine::lora::LoraAdapter adapter,
                                  std::string source);
  // Reads the PEFT directory `dir` (engine/lora/peft_io.h; NotFound / InvalidArgument /
  // Unimplemented as LoadPeftAdapter) and Adds it with `dir` as its source.
  absl::StatusOr<AdapterInfo> AddPeftDir(std::string name, const std::string& dir);

  // Unregisters `name`: NotFound when no adapter has that name. Requests that hold it finish
  // first; its weights are freed (on the engine-loop thread) after the last one.
  absl::Status Remove(std::string_view name);

  // The adapter named `name`, or nullopt.
  std::optional<ResolvedAdapter> Find(std::string_view name) const;
  // Every registered adapter, in registration order.
  std::vector<AdapterInfo> List() const;
  int32_t size() const;
  // Adapters removed whose weights are still held by running requests (for tests, /health).
  int32_t num_draining() const;

  const AdapterRegistryOptions& options() const { return options_; }

 private:
  struct Entry;
  struct Shared;

  const engine::ModelConfig& model_;
  engine::Backend& backend_;
  const RunOnEngine run_on_engine_;
  const AdapterRegistryOptions options_;
  std::shared_ptr<Shared> shared_;  // draining count; outlives the registry via deleters

  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);  // registration order
  int32_t num_loading_ ABSL_GUARDED_BY(mu_) = 0;     // Adds between the check and the insert
};

}  // namespace spillway::server::adapters
