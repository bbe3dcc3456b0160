// spillway: the server binary. Subcommands: version, generate, bench-engine, serve, make-model.
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "server/admin/admin_options.h"
#include "server/cli/commands.h"
#include "server/cli/kv_tiers.h"

namespace {

// --device and --gpu-memory-utilization, shared by generate, bench-engine and serve.
std::pair<CLI::Option*, CLI::Option*> AddDeviceOptions(CLI::App* cmd, std::string& device,
                                                       float& utilization) {
  CLI::Option* d =
      cmd->add_option("--device", device,
                      "auto (cuda when a GPU is present, else cpu), cpu or cuda (fails at "
                      "start without a GPU)")
          ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
          ->capture_default_str();
  CLI::Option* u = cmd->add_option("--gpu-memory-utilization", utilization,
                                   "share of the GPU's memory for weights, activations and the "
                                   "KV pool (cuda)")
                       ->check(CLI::Range(0.05, 1.0))
                       ->capture_default_str();
  return {d, u};
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr; SPDLOG_LEVEL=debug etc. changes the level.
  spdlog::set_default_logger(spdlog::stderr_color_mt("spillway"));
  spdlog::cfg::load_env_levels();

  CLI::App app{"spillway: an LLM inference server"};
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "print the version and compiled-in backends");

  spillway::server::GenerateOptions gen;
  auto* generate = app.add_subcommand("generate", "generate a completion of one prompt");
  generate->add_option("--model", gen.model,
                       "GGUF file or Hugging Face directory (default: "
                       "SmolLM2-135M-Instruct from the cache)");
  generate->add_option("--prompt", gen.prompt, "the prompt text")->required();
  generate->add_flag("--chat", gen.chat, "wrap the prompt as a user message in the chat template");
  generate->add_option("--system", gen.system, "system message (with --chat)");
  generate->add_option("--max-tokens", gen.max_tokens, "tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  generate->add_option("--temperature", gen.temperature, "0 = greedy")
      ->check(CLI::Range(0.0, 100.0));
  generate->add_option("--top-k", gen.top_k, "0 = off")->check(CLI::Range(-1, 1 << 30));
  generate->add_option("--top-p", gen.top_p)->check(CLI::Range(0.0, 1.0));
  generate->add_option("--min-p", gen.min_p)->check(CLI::Range(0.0, 1.0));
  generate->add_option("--seed", gen.seed, "random seed for sampling");
  generate->add_option("--threads", gen.threads, "CPU threads (0 = all cores)");
  AddDeviceOptions(generate, gen.device, gen.gpu_memory_utilization);

  spillway::server::BenchEngineOptions bench;
  auto* bench_engine = app.add_subcommand("bench-engine", "engine prefill and decode speed");
  bench_engine->add_option("--model", bench.model, "model (default: SmolLM2-135M-Instruct)");
  bench_engine->add_option("--threads", bench.threads, "CPU threads");
  AddDeviceOptions(bench_engine, bench.device, bench.gpu_memory_utilization);
  bench_engine->add_option("--prompt-tokens", bench.prompt_tokens)->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--decode-tokens", bench.decode_tokens)->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--batch-sizes", bench.batch_sizes, "comma-separated");
  bench_engine->add_option("--peer-prefill", bench.peer_prefill,
                           "llama.cpp prefill tok/s measured in the same run");
  bench_engine->add_option("--peer-decode", bench.peer_decode,
                           "llama.cpp batch-1 decode tok/s measured in the same run");

  spillway::server::ServeOptions serve;
  auto* serve_cmd = app.add_subcommand(
      "serve",
      "serve the OpenAI-compatible HTTP API and the gRPC API; every option can also come from "
      "the SPILLWAY_* environment variable shown beside it (the command line wins)");
  // NOTE(ops): each serve option reads SPILLWAY_<NAME> (upper case, '-' -> '_') when not given.
  auto env = [](CLI::Option* o, const char* name) { return o->envname(name); };
  env(serve_cmd->add_option("--model", serve.model,
                            "GGUF file or Hugging Face directory (default: "
                            "SmolLM2-135M-Instruct from the cache)"),
      "SPILLWAY_MODEL");
  env(serve_cmd->add_option(
          "--served-model-name", serve.served_model_name,
          "the name clients use in `model` (default: the file name without .gguf)"),
      "SPILLWAY_SERVED_MODEL_NAME");
  env(serve_cmd->add_option("--host", serve.host, "address to listen on")->capture_default_str(),
      "SPILLWAY_HOST");
  env(serve_cmd->add_option("--port", serve.port, "port to listen on (0: any free port)")
          ->check(CLI::Range(0, 65535))
          ->capture_default_str(),
      "SPILLWAY_PORT");
  env(serve_cmd
          ->add_option("--grpc-port", serve.grpc_port,
                       "gRPC (spillway.v1.Inference) port (0: any free port)")
          ->check(CLI::Range(0, 65535))
          ->capture_default_str(),
      "SPILLWAY_GRPC_PORT");
  env(serve_cmd->add_option("--max-batch-tokens", serve.max_batch_tokens, "tokens per engine step")
          ->check(CLI::Range(1, 1 << 20))
          ->capture_default_str(),
      "SPILLWAY_MAX_BATCH_TOKENS");
  env(serve_cmd
          ->add_option("--max-running-seqs", serve.max_running_seqs, "sequences decoding at once")
          ->check(CLI::Range(1, 1 << 16))
          ->capture_default_str(),
      "SPILLWAY_MAX_RUNNING_SEQS");
  env(serve_cmd
          ->add_option("--max-queued-requests", serve.max_queued_requests,
                       "waiting requests before 429")
          ->check(CLI::Range(0, 1 << 20))
          ->capture_default_str(),
      "SPILLWAY_MAX_QUEUED_REQUESTS");
  env(serve_cmd
          ->add_option("--device-sampling", serve.device_sampling,
                       "sample on the GPU, returning only token ids and logprobs (cuda)")
          ->check(CLI::IsMember({"on", "off"}))
          ->capture_default_str(),
      "SPILLWAY_DEVICE_SAMPLING");
  env(serve_cmd
          ->add_option("--cuda-graphs", serve.cuda_graphs,
                       "run decode steps as CUDA graphs (cuda; never yet run on a GPU)")
          ->check(CLI::IsMember({"on", "off"}))
          ->capture_default_str(),
      "SPILLWAY_CUDA_GRAPHS");
  env(serve_cmd->add_option("--max-body-bytes", serve.max_body_bytes, "request body limit (413)")
          ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32))
          ->capture_default_str(),
      "SPILLWAY_MAX_BODY_BYTES");
  env(serve_cmd
          ->add_option("--max-header-bytes", serve.max_header_bytes,
                       "request line and header fields limit (431)")
          ->check(CLI::Range(int64_t{1024}, int64_t{1} << 24))
          ->capture_default_str(),
      "SPILLWAY_MAX_HEADER_BYTES");
  env(serve_cmd
          ->add_option("--max-connections", serve.max_connections,
                       "open HTTP connections; past it a new one gets 503 and is closed")
          ->check(CLI::Range(1, 1 << 20))
          ->capture_default_str(),
      "SPILLWAY_MAX_CONNECTIONS");
  env(serve_cmd
          ->add_option("--idle-timeout-s", serve.idle_timeout_s,
                       "seconds a connection may sit without sending a complete request header "
                       "(keep-alive idle, slow clients)")
          ->check(CLI::Range(1, 86400))
          ->capture_default_str(),
      "SPILLWAY_IDLE_TIMEOUT_S");
  env(serve_cmd
          ->add_option("--read-timeout-s", serve.read_timeout_s,
                       "seconds to receive a request once its first bytes came (slow bodies)")
          ->check(CLI::Range(1, 86400))
          ->capture_default_str(),
      "SPILLWAY_READ_TIMEOUT_S");
  env(serve_cmd->add_option("--threads", serve.threads, "CPU compute threads (0 = all cores)")
          ->check(CLI::Range(0, 1024)),
      "SPILLWAY_THREADS");
  {
    auto [device, utilization] =
        AddDeviceOptions(serve_cmd, serve.device, serve.gpu_memory_utilization);
    env(device, "SPILLWAY_DEVICE");
    env(utilization, "SPILLWAY_GPU_MEMORY_UTILIZATION");
  }
  env(serve_cmd->add_option("--http-threads", serve.http_threads, "network threads")
          ->check(CLI::Range(1, 64))
          ->capture_default_str(),
      "SPILLWAY_HTTP_THREADS");
  env(serve_cmd
          ->add_option("--kv-blocks", serve.kv_blocks,
                       "KV cache size in 16-token blocks (default: 16 full contexts, at most "
                       "1 GiB)")
          ->check(CLI::Range(0, 1 << 28)),
      "SPILLWAY_KV_BLOCKS");
  spillway::server::AddKvTierFlags(*serve_cmd, serve.kv_blocks, serve.kv_tiers);
  spillway::server::AddLoraFlags(*serve_cmd, serve.lora);
  spillway::server::admin::AddAdminFlags(*serve_cmd, serve.admin);
  env(serve_cmd
          ->add_option("--drain-timeout,--shutdown-grace-s", serve.drain_timeout_s,
                       "seconds in-flight requests get to finish on SIGINT/SIGTERM (readiness "
                       "turns 503 first; new requests get 503)")
          ->check(CLI::Range(0, 3600))
          ->capture_default_str(),
      "SPILLWAY_DRAIN_TIMEOUT");
  env(serve_cmd->add_option("--api-key", serve.api_key,
                            "require 'Authorization: Bearer <key>' on /v1/*, /tokenize, "
                            "/detokenize and gRPC Inference calls (prefer the environment "
                            "variable: a command line is visible to other users)"),
      "SPILLWAY_API_KEY");
  env(serve_cmd->add_option("--admin-api-key", serve.admin_api_key,
                            "the key admin endpoints (/admin/*) require (default: --api-key)"),
      "SPILLWAY_ADMIN_API_KEY");
  env(serve_cmd->add_flag("--protect-metrics", serve.protect_metrics,
                          "/metrics needs the API key too (/health and /ready stay open)"),
      "SPILLWAY_PROTECT_METRICS");

  spillway::server::MakeModelOptions make;
  auto* make_model = app.add_subcommand(
      "make-model", "write a GGUF model of a real shape with random weights (speed tests)");
  make_model->add_option("--shape", make.shape, "llama3-8b, llama3.2-1b, smollm2-135m or tiny")
      ->required();
  make_model->add_option("--dtype", make.dtype, "matrix type")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  make_model->add_flag("--random", make.random, "random weights (required)")->required();
  make_model->add_option("--seed", make.seed, "random seed")->capture_default_str();
  make_model->add_option("--out", make.out, "the GGUF file to write")->required();
  make_model->add_option("--layers", make.layers, "override the shape's layer count")
      ->check(CLI::Range(1, 1024));
  make_model->add_option("--threads", make.threads, "threads (0 = all cores)");

  CLI11_PARSE(app, argc, argv);
  if (version->parsed()) return spillway::server::RunVersion();
  if (generate->parsed()) return spillway::server::RunGenerate(gen);
  if (bench_engine->parsed()) return spillway::server::RunBenchEngine(bench);
  if (serve_cmd->parsed()) return spillway::server::RunServe(serve);
  if (make_model->parsed()) return spillway::server::RunMakeModel(make);
  return 1;
}
