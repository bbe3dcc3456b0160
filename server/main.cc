// spillway: the server binary. Subcommands: version, generate, bench-engine (serve arrives
// with the serving issue).
#include <CLI/CLI.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

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
  generate->add_option("--model", gen.model, "GGUF file or Hugging Face directory (default: "
                                             "SmolLM2-135M-Instruct from the cache)");
  generate->add_option("--prompt", gen.prompt, "the prompt text")->required();
  generate->add_flag("--chat", gen.chat, "wrap the prompt as a user message in the chat template");
  generate->add_option("--system", gen.system, "system message (with --chat)");
  generate->add_option("--max-tokens", gen.max_tokens, "tokens to generate")
      ->check(CLI::Range(1, 1 << 20));
  generate->add_option("--temperature", gen.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
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

  CLI11_PARSE(app, argc, argv);
  if (version->parsed()) return spillway::server::RunVersion();
  if (generate->parsed()) return spillway::server::RunGenerate(gen);
  if (bench_engine->parsed()) return spillway::server::RunBenchEngine(bench);
  return 1;
}
