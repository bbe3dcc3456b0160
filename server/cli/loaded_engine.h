// LoadedEngine: a model file opened, its weights on a backend (the CPU, or the GPU with
// `--device cuda`), a KV cache and the tokenizer — everything `generate`, `bench-engine` and
// `serve` need, loaded with progress logs. Main thread, at start-up.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_file.h"
#include "kvcache/kv_cache.h"

namespace spillway::server {

struct EngineOptions {
  std::string device = "auto";  // "auto" (cuda when a GPU is present, else cpu), "cpu", "cuda"
  int threads = 0;              // CPU backend threads (0 = all cores)
  // KV cache blocks. 0 is allowed only on the GPU: the pool then takes what
  // gpu_memory_utilization of the device's memory leaves after the weights.
  int32_t kv_blocks = 0;
  float gpu_memory_utilization = 0.9f;
};

struct LoadedEngine {
  std::unique_ptr<engine::ModelFile> file;
  std::unique_ptr<engine::Backend> backend;
  std::unique_ptr<engine::LlamaModel> model;
  std::unique_ptr<kvcache::KvCache> kv;
  std::unique_ptr<engine::Tokenizer> tokenizer;
  int32_t kv_blocks = 0;  // the KV cache's size
};

// "cpu" or "cuda" for `requested` ("auto", "cpu" or "cuda"). FailedPrecondition for "cuda" when
// this build has no CUDA backend or no GPU is present (the message says which), InvalidArgument
// for another name.
absl::StatusOr<std::string> ResolveDevice(const std::string& requested);

// The backends this build has, for `spillway version`: "cpu" or "cpu, cuda".
std::string CompiledBackends();

// Opens `path` (empty: the default model in the cache) on the device `options` ask for.
absl::StatusOr<LoadedEngine> LoadEngine(const std::string& path, const EngineOptions& options);

// The serving model's GPU weights by tensor name (LlamaModel::FindWeight, then
// CudaBackend::DeviceData), so fine-tuning on the GPU trains on them instead of a second copy
// (CudaTrainOptions::device_weights); empty on the CPU backend. `e`'s model must outlive it.
std::function<const void*(std::string_view name)> DeviceWeights(const LoadedEngine& e);

}  // namespace spillway::server
