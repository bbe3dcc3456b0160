// spillway: the server binary. Subcommands: version, generate, bench-engine, serve.
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "server/cli/commands.h"

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

  spillway::server::BenchEngineOptions bench;
  auto* bench_engine = app.add_subcommand("bench-engine", "engine prefill and decode speed");
  bench_engine->add_option("--model", bench.model, "model (default: SmolLM2-135M-Instruct)");
  bench_engine->add_option("--threads", bench.threads, "CPU threads");
  bench_engine->add_option("--prompt-tokens", bench.prompt_tokens)->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--decode-tokens", bench.decode_tokens)->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--batch-sizes", bench.batch_sizes, "comma-separated");
  bench_engine->add_option("--peer-prefill", bench.peer_prefill,
                           "llama.cpp prefill tok/s measured in the same run");
  bench_engine->add_option("--peer-decode", bench.peer_decode,
                           "llama.cpp batch-1 decode tok/s measured in the same run");

  spillway::server::ServeOptions serve;
  auto* serve_cmd = app.add_subcommand("serve", "serve the OpenAI-compatible HTTP API");
  serve_cmd->add_option("--model", serve.model,
                        "GGUF file or Hugging Face directory (default: "
                        "SmolLM2-135M-Instruct from the cache)");
  serve_cmd->add_option("--served-model-name", serve.served_model_name,
                        "the name clients use in `model` (default: the file name without .gguf)");
  serve_cmd->add_option("--host", serve.host, "address to listen on")->capture_default_str();
  serve_cmd->add_option("--port", serve.port, "port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  serve_cmd
      ->add_option("--grpc-port", serve.grpc_port,
                   "gRPC (spillway.v1.Inference) port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  serve_cmd->add_option("--max-batch-tokens", serve.max_batch_tokens, "tokens per engine step")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  serve_cmd->add_option("--max-running-seqs", serve.max_running_seqs, "sequences decoding at once")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  serve_cmd
      ->add_option("--max-queued-requests", serve.max_queued_requests,
                   "waiting requests before 429")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  serve_cmd->add_option("--max-body-bytes", serve.max_body_bytes, "request body limit (413)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32))
      ->capture_default_str();
  serve_cmd->add_option("--threads", serve.threads, "CPU compute threads (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  serve_cmd->add_option("--http-threads", serve.http_threads, "network threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  serve_cmd
      ->add_option("--kv-blocks", serve.kv_blocks,
                   "KV cache size in 16-token blocks (default: 16 full contexts, at most "
                   "1 GiB)")
      ->check(CLI::Range(0, 1 << 28));
  serve_cmd
      ->add_option("--shutdown-grace-s", serve.shutdown_grace_s,
                   "seconds in-flight requests get to finish on SIGINT/SIGTERM")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  if (version->parsed()) return spillway::server::RunVersion();
  if (generate->parsed()) return spillway::server::RunGenerate(gen);
  if (bench_engine->parsed()) return spillway::server::RunBenchEngine(bench);
  if (serve_cmd->parsed()) return spillway::server::RunServe(serve);
  return 1;
}
