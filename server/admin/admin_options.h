// The `serve` flags of the admin API's files and fine-tuning jobs (docs/operating.md), and
// the data directory they default to. Main thread, at start-up.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace CLI {
class App;
}  // namespace CLI

namespace spillway::server::admin {

struct AdminOptions {
  std::string data_dir;                      // empty: DefaultDataDir()
  int64_t max_file_bytes = 3 << 20;          // upload limit (also bounded by --max-body-bytes)
  int64_t finetune_memory_bytes = 0;         // an extra cap on a job's memory; 0: none
  int32_t finetune_micro_batch_tokens = 64;  // bounds one idle-time training step
  int32_t finetune_checkpoint_steps = 10;    // optimizer steps between checkpoints
  std::string finetune_device = "auto";      // auto | cpu | cuda (ResolveFinetuneDevice)
};

// $SPILLWAY_CACHE/data, or ~/.cache/spillway/data.
std::string DefaultDataDir();

// Where fine-tuning jobs train ("cpu" or "cuda") for --finetune-device `requested` on a server
// whose backend is `serving_device` (ResolveDevice's answer): auto follows the backend, cpu
// always works, cuda needs the cuda backend — FailedPrecondition (the message says why and
// what to use instead) on the CPU backend; InvalidArgument for another name.
absl::StatusOr<std::string> ResolveFinetuneDevice(const std::string& requested,
                                                  const std::string& serving_device);

// Adds --data-dir, --max-file-bytes, --finetune-memory-bytes, --finetune-micro-batch-tokens,
// --finetune-checkpoint-steps and --finetune-device (each with a SPILLWAY_* variable) to
// `serve`.
void AddAdminFlags(CLI::App& serve, AdminOptions& options);

}  // namespace spillway::server::admin
