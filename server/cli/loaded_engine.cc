#include "server/cli/loaded_engine.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "common/cache_dir.h"
#include "common/status_macros.h"
#include "engine/cpu/cpu_backend.h"

namespace spillway::server {

absl::StatusOr<LoadedEngine> LoadEngine(const std::string& path, int threads, int32_t kv_blocks) {
  const std::string model_path = path.empty() ? DefaultModelPath() : path;
  const auto start = std::chrono::steady_clock::now();
  spdlog::info("loading model {}", model_path);
  LoadedEngine e;
  SPW_ASSIGN_OR_RETURN(e.file, engine::OpenModelFile(model_path));
  const engine::ModelConfig& c = e.file->config();
  spdlog::info("model '{}': {} layers, hidden {}, {} heads ({} KV), vocab {}, context {}", c.name,
               c.num_layers, c.hidden, c.num_heads, c.num_kv_heads, c.vocab_size, c.context_length);
  SPW_ASSIGN_OR_RETURN(e.tokenizer, engine::Tokenizer::Create(e.file->tokenizer()));
  auto backend = std::make_unique<engine::cpu::CpuBackend>(threads);
  spdlog::info("backend cpu with {} threads; KV cache {} blocks", backend->num_threads(),
               kv_blocks);
  e.backend = std::move(backend);
  SPW_ASSIGN_OR_RETURN(e.model, engine::LlamaModel::Create(*e.file, *e.backend, kv_blocks));
  e.kv = std::make_unique<kvcache::KvCache>(kv_blocks);
  spdlog::info("model ready in {:.2f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return e;
}

}  // namespace spillway::server
