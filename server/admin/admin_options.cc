#include "server/admin/admin_options.h"

#include <CLI/CLI.hpp>
#include <filesystem>

#include "common/cache_dir.h"

namespace spillway::server::admin {

std::string DefaultDataDir() { return (std::filesystem::path(CacheDir()) / "data").string(); }

absl::StatusOr<std::string> ResolveFinetuneDevice(const std::string& requested,
                                                  const std::string& serving_device) {
  if (requested == "auto") return serving_device;
  if (requested == "cpu") return std::string("cpu");
  if (requested != "cuda") {
    return absl::InvalidArgumentError("--finetune-device must be auto, cpu or cuda, not '" +
                                      requested + "'");
  }
  // NOTE(ftcuda): training on the GPU shares the device with the serving backend (its memory
  // comes out of the same KV budget, docs/fine-tuning.md), so it needs the cuda backend.
  if (serving_device != "cuda") {
    return absl::FailedPreconditionError(
        "--finetune-device cuda: the server runs on the CPU backend, and fine-tuning on the GPU "
        "needs the cuda backend (--device cuda); use --finetune-device cpu (or auto)");
  }
  return std::string("cuda");
}

void AddAdminFlags(CLI::App& serve, AdminOptions& o) {
  serve
      .add_option("--data-dir", o.data_dir,
                  "where uploaded files, fine-tuning jobs, checkpoints and adapters are kept "
                  "(default: $SPILLWAY_CACHE/data or ~/.cache/spillway/data)")
      ->envname("SPILLWAY_DATA_DIR");
  serve
      .add_option("--max-file-bytes", o.max_file_bytes,
                  "largest upload to /v1/files (requests are also bounded by --max-body-bytes)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 34))
      ->capture_default_str()
      ->envname("SPILLWAY_MAX_FILE_BYTES");
  serve
      .add_option("--finetune-memory-bytes", o.finetune_memory_bytes,
                  "an extra cap on the memory one fine-tuning job may reserve (frozen base "
                  "weights, LoRA state, activations); 0: none. A job's memory always comes out "
                  "of the KV cache, and one that does not fit is refused at creation")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str()
      ->envname("SPILLWAY_FINETUNE_MEMORY_BYTES");
  serve
      .add_option("--finetune-micro-batch-tokens", o.finetune_micro_batch_tokens,
                  "tokens per idle-time training step (a request arriving meanwhile waits for "
                  "at most one step)")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str()
      ->envname("SPILLWAY_FINETUNE_MICRO_BATCH_TOKENS");
  serve
      .add_option("--finetune-checkpoint-steps", o.finetune_checkpoint_steps,
                  "optimizer steps between a running job's checkpoints")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str()
      ->envname("SPILLWAY_FINETUNE_CHECKPOINT_STEPS");
  serve
      .add_option("--finetune-device", o.finetune_device,
                  "where fine-tuning jobs train: auto (the serving backend's device), cpu, or "
                  "cuda (needs --device cuda)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str()
      ->envname("SPILLWAY_FINETUNE_DEVICE");
}

}  // namespace spillway::server::admin
