// `spillway serve`: loads the model, starts the engine loop, the OpenAI-compatible HTTP
// server and the gRPC server (server/grpc/), and runs until SIGINT or SIGTERM. Shutdown
// (docs/operating.md): readiness turns 503 and new requests get 503, in-flight requests get
// --drain-timeout seconds to finish, the rest are cancelled (EngineLoop::Stop), connections
// close, exit 0.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <thread>

#include "common/cache_dir.h"
#include "kvcache/ids.h"
#include "scheduler/engine_loop.h"
#include "server/adapters/adapter_registry.h"
#include "server/adapters/lora_endpoints.h"
#include "server/admin/admin_api.h"
#include "server/admin/admin_grpc_service.h"
#include "server/admin/file_store.h"
#include "server/admin/fine_tune_jobs.h"
#include "server/cli/commands.h"
#include "server/cli/kv_tiers.h"
#include "server/cli/loaded_engine.h"
#include "server/cli/lora_options.h"
#include "server/grpc/grpc_server.h"
#include "server/http/auth.h"
#include "server/http/http_server.h"
#include "server/http/router.h"
#include "server/metrics/metered_engine.h"
#include "server/metrics/server_metrics.h"
#include "server/openai/api_error.h"
#include "server/openai/generation_engine.h"
#include "server/openai/openai_api.h"
#include "server/openai/served_model.h"

namespace spillway::server {
namespace {

// NOTE(http): the default KV cache holds 16 full contexts of the model, capped at 1 GiB
// (fp16 K and V); for SmolLM2-135M that is 2,912 blocks (46,592 tokens).
constexpr int64_t kDefaultKvCapBytes = int64_t{1} << 30;
constexpr int64_t kDefaultKvContexts = 16;

class EngineLoopAdapter final : public openai::GenerationEngine {
 public:
  explicit EngineLoopAdapter(scheduler::EngineLoop& loop) : loop_(loop) {}
  absl::Status Submit(scheduler::Request request) override {
    return loop_.Submit(std::move(request));
  }
  void Cancel(scheduler::RequestId id) override { loop_.Cancel(id); }
  scheduler::RequestId NextRequestId() override { return loop_.NextRequestId(); }
  scheduler::EngineStats stats() const override { return loop_.stats(); }

 private:
  scheduler::EngineLoop& loop_;
};

// One device KV block: K and V of every layer, fp16 (both backends).
int64_t KvBlockBytes(const engine::ModelConfig& c) {
  return int64_t{kvcache::kBlockTokens} * c.num_layers * 2 * c.num_kv_heads * c.head_dim * 2;
}

absl::StatusOr<int32_t> DefaultKvBlocks(const std::string& path) {
  absl::StatusOr<std::unique_ptr<engine::ModelFile>> file = engine::OpenModelFile(path);
  if (!file.ok()) return file.status();
  const engine::ModelConfig& c = (*file)->config();
  const int64_t bytes_per_block = KvBlockBytes(c);
  const int64_t for_contexts =
      kDefaultKvContexts * ((c.context_length + kvcache::kBlockTokens - 1) / kvcache::kBlockTokens);
  return static_cast<int32_t>(
      std::max<int64_t>(1, std::min(for_contexts, kDefaultKvCapBytes / bytes_per_block)));
}

// "SmolLM2-135M-Instruct.Q4_1" for ".../SmolLM2-135M-Instruct.Q4_1.gguf"; a directory's name
// for a Hugging Face directory.
std::string DefaultServedName(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && !p.has_filename()) p = p.parent_path();
  if (p.extension() == ".gguf") return p.stem().string();
  return p.filename().string();
}

void RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

openai::ServedModel MakeServedModel(const ServeOptions& o, const std::string& path,
                                    const LoadedEngine& e, int32_t kv_blocks,
                                    const engine::ChatTemplate* chat_template) {
  openai::ServedModel m;
  m.name = o.served_model_name.empty() ? DefaultServedName(path) : o.served_model_name;
  m.path = path;
  m.tokenizer = e.tokenizer.get();
  m.chat_template = chat_template;
  const engine::TokenizerSpec& spec = e.file->tokenizer();
  if (spec.bos_id >= 0) m.bos_token = std::string(e.tokenizer->TokenPiece(spec.bos_id));
  if (spec.eos_id >= 0) m.eos_token = std::string(e.tokenizer->TokenPiece(spec.eos_id));
  // NOTE(http): a sequence can never hold more tokens than the whole KV cache, so a smaller
  // cache lowers the context the API admits (and reports as max_model_len).
  m.context_tokens = static_cast<int32_t>(std::min<int64_t>(
      e.model->config().context_length, int64_t{kv_blocks} * kvcache::kBlockTokens));
  m.created_unix = std::time(nullptr);
  return m;
}

// Blocks until SIGINT or SIGTERM. REQUIRES: both blocked in every thread (BlockSignals).
int WaitForSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

void BlockSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void WaitUntilIdle(const openai::OpenAiApi& api, const grpc_api::GrpcServer& grpc,
                   std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while ((api.num_active_generations() > 0 || grpc.num_active_calls() > 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// The 401 OpenAI sends for a missing or wrong key.
http::HttpResponse UnauthorizedResponse() {
  http::HttpResponse r = openai::ErrorResponse(
      {.http_status = 401,
       .type = "invalid_request_error",
       .message = "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
       .code = "invalid_api_key"});
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

http::HttpResponse DrainingResponse() {
  return openai::ErrorResponse({.http_status = 503,
                                .type = "service_unavailable",
                                .message = "the server is shutting down",
                                .code = "server_shutting_down",
                                .retry_after_s = 1});
}

// NOTE(ops): readiness: 200 while serving, 503 while loading or draining; /health (liveness)
// stays 200 throughout. Auth runs before routing (so an unknown path without a key is 401),
// and draining refuses everything but the probes and (open) /metrics.
void AddOperatingRoutes(http::Router& router, const http::AccessPolicy& policy,
                        const std::atomic<bool>& ready) {
  router.Add("GET", "/ready", [&ready](const http::HttpRequest&, http::Exchange e) {
    e.Reply(ready.load() ? openai::JsonResponse(R"({"status":"ready"})")
                         : openai::JsonResponse(R"({"status":"not ready"})", 503));
  });
  router.SetGate(
      [&policy, &ready](const http::HttpRequest& r) -> std::optional<http::HttpResponse> {
        const http::AccessScope scope = policy.ScopeOf(r.path);
        if (scope == http::AccessScope::kOpen) return std::nullopt;
        if (!policy.Allows(scope, http::FindHeader(r, "authorization")))
          return UnauthorizedResponse();
        if (!ready.load()) return DrainingResponse();
        return std::nullopt;
      });
}

}  // namespace

int RunServe(const ServeOptions& o) {
  BlockSignals();  // before any thread starts, so that only sigwait sees them
  RaiseOpenFileLimit();
  const std::string path = o.model.empty() ? DefaultModelPath() : o.model;
  absl::StatusOr<std::string> device = ResolveDevice(o.device);
  if (!device.ok()) {
    spdlog::error("{}", std::string(device.status().message()));
    return 1;
  }
  // Before the model loads, as --device: a training device the backend cannot give fails now.
  absl::StatusOr<std::string> finetune_device =
      admin::ResolveFinetuneDevice(o.admin.finetune_device, *device);
  if (!finetune_device.ok()) {
    spdlog::error("{}", std::string(finetune_device.status().message()));
    return 1;
  }
  int32_t kv_blocks = o.kv_blocks;
  // On the GPU, 0 blocks means: size the pool by --gpu-memory-utilization (LoadEngine).
  if (kv_blocks <= 0 && *device == "cpu") {
    absl::StatusOr<int32_t> blocks = DefaultKvBlocks(path);
    if (!blocks.ok()) {
      spdlog::error("{}", std::string(blocks.status().message()));
      return 1;
    }
    kv_blocks = *blocks;
  }
  absl::StatusOr<LoadedEngine> e =
      LoadEngine(path, {.device = *device,
                        .threads = o.threads,
                        .kv_blocks = kv_blocks,
                        .gpu_memory_utilization = o.gpu_memory_utilization});
  if (!e.ok()) {
    spdlog::error("{}", std::string(e.status().message()));
    return 1;
  }
  kv_blocks = e->kv_blocks;
  if (absl::Status st = e->model->SetDecodeGraphs(o.cuda_graphs == "on"); !st.ok()) {
    spdlog::error("--cuda-graphs on: {}", std::string(st.message()));
    return 1;
  }
  if (absl::Status st = AttachKvTiers(o.kv_tiers, *e); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    return 1;
  }
  std::optional<engine::ChatTemplate> chat_template;
  if (!e->file->chat_template().empty()) {
    absl::StatusOr<engine::ChatTemplate> t = engine::ChatTemplate::Parse(e->file->chat_template());
    if (t.ok()) {
      chat_template = std::move(*t);
    } else {
      spdlog::warn("chat template unusable, /v1/chat/completions disabled: {}",
                   std::string(t.status().message()));
    }
  }
  openai::ServedModel model =
      MakeServedModel(o, path, *e, kv_blocks, chat_template ? &*chat_template : nullptr);

  metrics::ServerMetrics server_metrics(model.name);
  // Files and fine-tuning jobs (docs/fine-tuning.md "Admin API"): jobs train in the engine
  // loop's idle time (its IdleWork) and hand their adapters to lora_registry.
  const std::string data_dir =
      o.admin.data_dir.empty() ? admin::DefaultDataDir() : o.admin.data_dir;
  absl::StatusOr<std::unique_ptr<admin::FileStore>> files = admin::FileStore::Open(
      (std::filesystem::path(data_dir) / "files").string(), o.admin.max_file_bytes);
  if (!files.ok()) {
    spdlog::error("{}", std::string(files.status().message()));
    return 1;
  }
  const engine::TokenizerSpec& spec = e->file->tokenizer();
  admin::FineTuneJobs finetune(
      {.file = e->file.get(),
       .name = model.name,
       .tokenize = {.tokenizer = e->tokenizer.get(),
                    .chat_template = model.chat_template,
                    .bos_token = model.bos_token,
                    .eos_token = model.eos_token,
                    .eos_id = spec.eos_id},
       .context_tokens = model.context_tokens,
       .device_weights = DeviceWeights(*e)},
      {.jobs_dir = (std::filesystem::path(data_dir) / "jobs").string(),
       .memory_bytes = o.admin.finetune_memory_bytes,
       .micro_batch_tokens = o.admin.finetune_micro_batch_tokens,
       .checkpoint_steps = o.admin.finetune_checkpoint_steps,
       .threads = o.threads,
       .device = *finetune_device},
      **files,
      {.on_piece = [&server_metrics](double s) { server_metrics.ObserveTrainingPiece(s); },
       .on_optimizer_step = [&server_metrics](double l) { server_metrics.ObserveTrainingStep(l); },
       .on_job_states =
           [&server_metrics](const std::map<std::string, int64_t>& n) {
             server_metrics.SetFineTuneJobs(n);
           }});
  scheduler::EngineLoop loop(
      *e->model, *e->kv, *e->tokenizer,
      {.max_batch_tokens = o.max_batch_tokens,
       .max_running_seqs = o.max_running_seqs,
       .max_queued_requests = o.max_queued_requests,
       .device_sampling = o.device_sampling == "on",
       .metrics = &server_metrics,
       .idle_work = &finetune,
       .on_kv_reserved = [backend = e->backend.get()](std::span<const kvcache::BlockId> b) {
         backend->DiscardKvBlocks(b);
       }});
  // A job's memory comes out of the KV pool (docs/fine-tuning.md "Memory"); the pool keeps
  // room for one sequence of the served context, so no request is refused meanwhile.
  const int32_t floor_blocks =
      (model.context_tokens + kvcache::kBlockTokens - 1) / kvcache::kBlockTokens;
  finetune.SetKvBudget(
      {.block_bytes = KvBlockBytes(e->model->config()),
       .max_blocks = std::max(0, kv_blocks - floor_blocks),
       .reserve =
           [&loop](std::string owner, int32_t blocks,
                   absl::AnyInvocable<void(absl::Status) &&> granted) {
             loop.ReserveKvBlocks(std::move(owner), blocks, std::move(granted));
           },
       .release = [&loop](std::string owner) { loop.ReleaseKvBlocks(std::move(owner)); }});
  loop.Start();
  // LoRA adapters (docs/fine-tuning.md "Serving adapters"); declared after the loop, which
  // must outlive every adapter reference (their weights are freed through it).
  adapters::AdapterRegistry lora_registry(
      e->model->config(), *e->backend,
      [&loop](absl::AnyInvocable<void() &&> task) { loop.Post(std::move(task)); },
      {.max_loras = o.lora.max_loras, .max_lora_rank = o.lora.max_lora_rank});
  if (absl::Status st = LoadLoraModules(o.lora, lora_registry); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    loop.Stop();
    return 1;
  }
  model.adapters = &lora_registry;
  finetune.SetWake([&loop] { loop.WakeForIdleWork(); });
  finetune.SetAdapterSink([&lora_registry](const std::string& name, const std::string& dir) {
    return lora_registry.AddPeftDir(name, dir).status();
  });
  if (absl::Status st = finetune.Start(); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    loop.Stop();
    return 1;
  }
  EngineLoopAdapter adapter(loop);
  // Each front end submits through its own MeteredEngine, which labels its requests' metrics.
  metrics::MeteredEngine http_engine(adapter, server_metrics, "http");
  metrics::MeteredEngine grpc_engine(adapter, server_metrics, "grpc");
  openai::OpenAiApi api(model, http_engine);
  http::Router router(openai::OpenAiApi::ErrorPages());
  api.Register(router);
  adapters::RegisterLoraEndpoints(router, lora_registry);
  admin::AdminApi admin_api(**files, finetune);
  admin_api.Register(router);
  server_metrics.RegisterEndpoint(router, [&loop] { return loop.stats(); });
  const http::AccessPolicy policy({.api_key = o.api_key,
                                   .admin_api_key = o.admin_api_key,
                                   .protect_metrics = o.protect_metrics});
  std::atomic<bool> ready{false};
  AddOperatingRoutes(router, policy, ready);
  http::HttpServer server(router, {.host = o.host,
                                   .port = o.port,
                                   .num_threads = o.http_threads,
                                   .max_body_bytes = o.max_body_bytes,
                                   .idle_timeout = std::chrono::seconds(o.idle_timeout_s),
                                   .header_timeout = std::chrono::seconds(o.read_timeout_s),
                                   .max_header_bytes = o.max_header_bytes,
                                   .max_connections = o.max_connections});
  if (absl::Status s = server.Start(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    loop.Stop();
    return 1;
  }
  grpc_api::GrpcServer grpc(model, grpc_engine);
  const std::unique_ptr<grpc::Service> admin_grpc =
      admin::MakeAdminGrpcService(**files, finetune, policy);
  if (absl::Status s = grpc.Start({.host = o.host,
                                   .port = o.grpc_port,
                                   .api_key = o.api_key,
                                   .extra_services = {admin_grpc.get()}});
      !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    server.Stop();
    server.Join();
    loop.Stop();
    return 1;
  }
  spdlog::info("model '{}': context {} tokens, KV cache {} blocks", model.name,
               model.context_tokens, kv_blocks);
  grpc.SetServing(true);  // the model is loaded and the engine loop runs
  ready.store(true);
  if (!o.api_key.empty()) spdlog::info("API key required on /v1/*, /tokenize, /detokenize, gRPC");
  spdlog::info("serving gRPC on {}:{}", o.host, grpc.port());
  spdlog::info("serving on http://{}:{}", o.host, server.port());

  const int sig = WaitForSignal();
  // Draining: readiness turns 503 and gRPC health NOT_SERVING first; the listeners stay open
  // so that probes and new requests get a clear 503 / UNAVAILABLE instead of a refused
  // connection, while the requests in flight finish.
  ready.store(false);
  grpc.SetServing(false);
  spdlog::info("{}: draining (up to {} s for {} requests in flight)",
               sig == SIGINT ? "SIGINT" : "SIGTERM", o.drain_timeout_s,
               api.num_active_generations() + grpc.num_active_calls());
  WaitUntilIdle(api, grpc, std::chrono::seconds(o.drain_timeout_s));
  server.StopAccepting();
  loop.Stop();      // cancels what is left; their clients get an error
  finetune.Stop();  // before lora_registry goes: the preparer may be registering an adapter
  WaitUntilIdle(api, grpc, std::chrono::seconds(1));
  grpc.Shutdown(/*grace_ms=*/500);
  server.Stop();
  server.Join();
  spdlog::info("stopped");
  return 0;
}

}  // namespace spillway::server
