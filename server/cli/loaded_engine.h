// LoadedEngine: a model file opened, its weights on a backend, a KV cache and the tokenizer —
// everything `generate` and `bench-engine` need, loaded with progress logs.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/llama/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/weights/model_file.h"
#include "kvcache/kv_cache.h"

namespace spillway::server {

struct LoadedEngine {
  std::unique_ptr<engine::ModelFile> file;
  std::unique_ptr<engine::Backend> backend;
  std::unique_ptr<engine::LlamaModel> model;
  std::unique_ptr<kvcache::KvCache> kv;
  std::unique_ptr<engine::Tokenizer> tokenizer;
};

// Opens `path` (empty: the default model in the cache) on the CPU backend with `threads`
// threads and a KV cache of `kv_blocks` blocks.
absl::StatusOr<LoadedEngine> LoadEngine(const std::string& path, int threads, int32_t kv_blocks);

}  // namespace spillway::server
