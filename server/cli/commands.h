// The `spillway` command-line subcommands: `version`, `generate`, `bench-engine` and `serve`.
// main.cc registers them with CLI11 and runs the chosen one.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "server/admin/admin_options.h"
#include "server/cli/kv_tier_options.h"
#include "server/cli/lora_options.h"

namespace spillway::server {

struct GenerateOptions {
  std::string model;  // empty: the default model in the cache
  std::string prompt;
  bool chat = false;
  std::string system;
  int32_t max_tokens = 128;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  std::optional<uint64_t> seed;
  int threads = 0;
  std::string device = "auto";  // auto | cpu | cuda (server/cli/loaded_engine.h)
  float gpu_memory_utilization = 0.9f;
};

struct BenchEngineOptions {
  std::string model;
  int threads = 2;
  int32_t prompt_tokens = 512;
  int32_t decode_tokens = 128;
  std::string batch_sizes = "1,8,32";
  std::string device = "auto";
  float gpu_memory_utilization = 0.9f;
  // llama.cpp's figures to compare with, measured in the same run by
  // benchmarks/llama_cpp_engine_peer.py; unset: the figures recorded in issue #2.
  std::optional<double> peer_prefill;
  std::optional<double> peer_decode;
};

struct ServeOptions {
  std::string model;              // empty: the default model in the cache
  std::string served_model_name;  // empty: the model file's name without .gguf
  std::string host = "127.0.0.1";
  int port = 8000;
  int grpc_port = 50051;  // spillway.v1.Inference on the same host (0: any free port)
  int32_t max_batch_tokens = 512;
  int32_t max_running_seqs = 64;
  int32_t max_queued_requests = 256;
  int64_t max_body_bytes = 4 << 20;
  int threads = 0;              // CPU compute threads (0 = all cores)
  int http_threads = 2;         // network threads
  int32_t kv_blocks = 0;        // 0: 16 full contexts, capped at 1 GiB (GPU: by the next field)
  std::string device = "auto";  // auto | cpu | cuda (server/cli/loaded_engine.h)
  float gpu_memory_utilization = 0.9f;  // share of GPU memory for weights + KV pool
  std::string device_sampling = "on";   // on | off: sample on the GPU (docs/gpu.md)
  std::string cuda_graphs = "off";      // on | off: CUDA graphs for decode steps (docs/gpu.md)
  // Seconds in-flight requests get to finish on SIGINT/SIGTERM (--drain-timeout; the old
  // name --shutdown-grace-s still works).
  int drain_timeout_s = 5;
  std::string api_key;                  // empty: /v1/*, /tokenize, /detokenize and gRPC are open
  std::string admin_api_key;            // guards /admin/* (else the API key does)
  bool protect_metrics = false;         // /metrics needs the API key too
  int max_connections = 4096;           // open HTTP connections; past it 503 and close
  int idle_timeout_s = 75;              // keep-alive connection with no request
  int read_timeout_s = 30;              // to read a request once it has begun (slow clients)
  int64_t max_header_bytes = 16 << 10;  // 431 past it
  KvTierOptions kv_tiers;               // host RAM and SSD KV tiers (server/cli/kv_tiers.h)
  LoraServeOptions lora;                // LoRA adapters (server/cli/lora_options.h)
  admin::AdminOptions admin;            // files and fine-tuning jobs (server/admin/)
};

struct MakeModelOptions {
  std::string shape;           // engine/weights/random_model.h FindModelShape
  std::string dtype = "bf16";  // bf16 | f16 | f32
  bool random = false;         // the only mode so far; required so the intent is explicit
  uint64_t seed = 0;
  std::string out;
  int64_t layers = 0;  // > 0: override the shape's layer count (quick tests)
  int threads = 0;
};

// Prints the version and the compiled-in backends to stdout.
int RunVersion();
// Streams the completion of one prompt to stdout; prompt and decode speed to stderr.
int RunGenerate(const GenerateOptions& options);
// Prefill tokens/s of a prompt and decode tokens/s at several batch sizes, with the ratio to
// llama.cpp's figures on the same machine kind (docs/benchmarks.md).
int RunBenchEngine(const BenchEngineOptions& options);
// Serves the OpenAI-compatible HTTP API and the gRPC API until SIGINT/SIGTERM; returns the exit
// code.
int RunServe(const ServeOptions& options);
// Writes a random-weight GGUF model of a real shape (docs/gpu.md).
int RunMakeModel(const MakeModelOptions& options);

}  // namespace spillway::server
