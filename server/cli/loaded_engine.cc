#include "server/cli/loaded_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "common/cache_dir.h"
#include "common/status_macros.h"
#include "engine/cpu/cpu_backend.h"
#if defined(SPW_WITH_CUDA)
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.h"
#endif

namespace spillway::server {
namespace {

#if defined(SPW_WITH_CUDA)
// NOTE(cuda): device memory kept out of the KV pool for activations, cuBLAS workspaces and the
// CUDA context's own allocations; the scratch of a 2048-token step of an 8B model is ~0.6 GiB.
constexpr int64_t kGpuActivationReserve = int64_t{3} << 29;  // 1.5 GiB

// Bytes CudaBackend::LoadWeight will take for the file's tensors: bf16 matrices, f32 vectors.
int64_t GpuWeightBytes(const engine::ModelFile& file) {
  int64_t bytes = 0;
  for (const auto& [name, t] : file.tensors()) {
    bytes += t.num_elements() * (t.shape.size() == 1 ? 4 : 2);
  }
  return bytes;
}

absl::StatusOr<int32_t> GpuKvBlocks(const engine::ModelFile& file, float utilization) {
  SPW_ASSIGN_OR_RETURN(const engine::cuda::CudaDeviceInfo info, engine::cuda::ProbeCudaDevice());
  const engine::ModelConfig& c = file.config();
  const int64_t used_elsewhere = info.total_bytes - info.free_bytes;
  const int64_t budget = static_cast<int64_t>(static_cast<double>(info.total_bytes) * utilization) -
                         used_elsewhere - GpuWeightBytes(file) - kGpuActivationReserve;
  const int64_t block =
      engine::cuda::CudaBackend::KvBlockBytes(c.num_layers, c.num_kv_heads, c.head_dim);
  if (budget < block * 4) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "--gpu-memory-utilization %.2f of %d MiB leaves no room for a KV cache after %d MiB of "
        "weights (%d MiB in use by others, %d MiB reserved for activations)",
        utilization, info.total_bytes >> 20, GpuWeightBytes(file) >> 20, used_elsewhere >> 20,
        kGpuActivationReserve >> 20));
  }
  return static_cast<int32_t>(std::min<int64_t>(budget / block, int64_t{1} << 27));
}
#endif

}  // namespace

absl::StatusOr<std::string> ResolveDevice(const std::string& requested) {
  if (requested != "auto" && requested != "cpu" && requested != "cuda") {
    return absl::InvalidArgumentError("--device must be auto, cpu or cuda, not '" + requested +
                                      "'");
  }
  if (requested == "cpu") return std::string("cpu");
#if defined(SPW_WITH_CUDA)
  absl::StatusOr<engine::cuda::CudaDeviceInfo> info = engine::cuda::ProbeCudaDevice();
  if (info.ok()) return std::string("cuda");
  if (requested == "auto") return std::string("cpu");
  return absl::FailedPreconditionError(absl::StrFormat(
      "--device cuda: %s; use --device cpu (or auto) to run on the CPU", info.status().message()));
#else
  if (requested == "auto") return std::string("cpu");
  return absl::FailedPreconditionError(
      "--device cuda: this spillway was built without the CUDA backend (no nvcc at build time); "
      "use --device cpu (or auto)");
#endif
}

std::string CompiledBackends() {
#if defined(SPW_WITH_CUDA)
  return "cpu, cuda";
#else
  return "cpu";
#endif
}

absl::StatusOr<LoadedEngine> LoadEngine(const std::string& path, const EngineOptions& options) {
  SPW_ASSIGN_OR_RETURN(const std::string device, ResolveDevice(options.device));
  const std::string model_path = path.empty() ? DefaultModelPath() : path;
  const auto start = std::chrono::steady_clock::now();
  spdlog::info("loading model {}", model_path);
  LoadedEngine e;
  SPW_ASSIGN_OR_RETURN(e.file, engine::OpenModelFile(model_path));
  const engine::ModelConfig& c = e.file->config();
  spdlog::info("model '{}': {} layers, hidden {}, {} heads ({} KV), vocab {}, context {}", c.name,
               c.num_layers, c.hidden, c.num_heads, c.num_kv_heads, c.vocab_size, c.context_length);
  SPW_ASSIGN_OR_RETURN(e.tokenizer, engine::Tokenizer::Create(e.file->tokenizer()));
  int32_t kv_blocks = options.kv_blocks;
  if (device == "cpu") {
    if (kv_blocks <= 0) return absl::InvalidArgumentError("the CPU backend needs a KV block count");
    auto backend = std::make_unique<engine::cpu::CpuBackend>(options.threads);
    spdlog::info("backend cpu with {} threads; KV cache {} blocks", backend->num_threads(),
                 kv_blocks);
    e.backend = std::move(backend);
  } else {
#if defined(SPW_WITH_CUDA)
    if (options.gpu_memory_utilization <= 0.0f || options.gpu_memory_utilization > 1.0f) {
      return absl::InvalidArgumentError("--gpu-memory-utilization must be in (0, 1]");
    }
    if (kv_blocks <= 0) {
      SPW_ASSIGN_OR_RETURN(kv_blocks, GpuKvBlocks(*e.file, options.gpu_memory_utilization));
    }
    SPW_ASSIGN_OR_RETURN(const engine::cuda::CudaDeviceInfo info, engine::cuda::ProbeCudaDevice());
    SPW_ASSIGN_OR_RETURN(e.backend, engine::cuda::CudaBackend::Create(info.ordinal));
    spdlog::info("backend cuda on {} ({} MiB, {} SMs, sm_{}{}); KV cache {} blocks ({} MiB)",
                 info.name, info.total_bytes >> 20, info.sm_count, info.compute_major,
                 info.compute_minor, kv_blocks,
                 (int64_t{kv_blocks} * engine::cuda::CudaBackend::KvBlockBytes(
                                           c.num_layers, c.num_kv_heads, c.head_dim)) >>
                     20);
#endif
  }
  SPW_ASSIGN_OR_RETURN(e.model, engine::LlamaModel::Create(*e.file, *e.backend, kv_blocks));
  e.kv = std::make_unique<kvcache::KvCache>(kv_blocks);
  e.kv_blocks = kv_blocks;
  spdlog::info("model ready in {:.2f} s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return e;
}

std::function<const void*(std::string_view name)> DeviceWeights(const LoadedEngine& e) {
#if defined(SPW_WITH_CUDA)
  if (e.backend != nullptr && e.backend->name() == "cuda" && e.model != nullptr) {
    return [model = e.model.get()](std::string_view name) -> const void* {
      const engine::BackendWeight* w = model->FindWeight(name);
      return w == nullptr ? nullptr : engine::cuda::CudaBackend::DeviceData(*w);
    };
  }
#endif
  (void)e;
  return {};
}

}  // namespace spillway::server
