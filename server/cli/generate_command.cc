// `spillway generate`: one prompt, streamed to stdout.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "engine/chat/chat_template.h"
#include "engine/generator/generator.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "kvcache/ids.h"
#include "server/cli/commands.h"
#include "server/cli/loaded_engine.h"

namespace spillway::server {
namespace {

absl::StatusOr<std::vector<engine::TokenId>> PromptTokens(const GenerateOptions& o,
                                                          const LoadedEngine& e) {
  if (!o.chat) return e.tokenizer->Encode(o.prompt, /*add_special=*/true, /*parse_special=*/true);
  if (e.file->chat_template().empty()) {
    return absl::FailedPreconditionError("--chat: this model file has no chat template");
  }
  auto tmpl = engine::ChatTemplate::Parse(e.file->chat_template());
  if (!tmpl.ok()) return tmpl.status();
  engine::ChatTemplateInput input;
  if (!o.system.empty()) input.messages.push_back({"system", o.system});
  input.messages.push_back({"user", o.prompt});
  input.add_generation_prompt = true;
  const engine::TokenizerSpec& spec = e.file->tokenizer();
  if (spec.bos_id >= 0) input.bos_token = std::string(e.tokenizer->TokenPiece(spec.bos_id));
  if (spec.eos_id >= 0) input.eos_token = std::string(e.tokenizer->TokenPiece(spec.eos_id));
  auto text = tmpl->Render(input);
  if (!text.ok()) return text.status();
  // The template already holds any BOS text, as Hugging Face's apply_chat_template assumes.
  return e.tokenizer->Encode(*text, /*add_special=*/false, /*parse_special=*/true);
}

}  // namespace

int RunGenerate(const GenerateOptions& o) {
  const int32_t blocks =
      static_cast<int32_t>((o.prompt.size() * 2 + o.max_tokens) / kvcache::kBlockTokens + 64);
  absl::StatusOr<LoadedEngine> e =
      LoadEngine(o.model, {.device = o.device,
                           .threads = o.threads,
                           .kv_blocks = blocks,
                           .gpu_memory_utilization = o.gpu_memory_utilization});
  if (!e.ok()) {
    spdlog::error("{}", std::string(e.status().message()));
    return 1;
  }
  absl::StatusOr<std::vector<engine::TokenId>> prompt = PromptTokens(o, *e);
  if (!prompt.ok()) {
    spdlog::error("{}", std::string(prompt.status().message()));
    return 1;
  }
  engine::GenerateRequest request{.prompt = *prompt, .max_tokens = o.max_tokens};
  request.sampling.temperature = o.temperature;
  request.sampling.top_k = o.top_k;
  request.sampling.top_p = o.top_p;
  request.sampling.min_p = o.min_p;
  request.sampling.seed = o.seed;
  const engine::TokenizerSpec& spec = e->file->tokenizer();
  if (spec.eos_id >= 0) request.stop_ids.push_back(spec.eos_id);
  request.stop_ids.insert(request.stop_ids.end(), spec.eot_ids.begin(), spec.eot_ids.end());
  if (absl::Status s = engine::Validate(request.sampling, e->model->config().vocab_size); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }

  engine::IncrementalDetokenizer detok(*e->tokenizer, /*skip_special=*/true);
  engine::Generator generator(*e->model, *e->kv);
  auto result = generator.Run({&request, 1}, [&](size_t, engine::TokenId token) {
    std::cout << detok.Push(token) << std::flush;
  });
  std::cout << detok.Flush() << std::endl;
  if (!result.ok()) {
    spdlog::error("{}", std::string(result.status().message()));
    return 1;
  }
  const engine::GenerateStats& s = generator.stats();
  spdlog::info("prompt: {} tokens in {:.3f} s ({:.1f} tokens/s)", s.prompt_tokens,
               s.prefill_seconds, s.prompt_tokens / std::max(s.prefill_seconds, 1e-9));
  spdlog::info("decode: {} tokens in {:.3f} s ({:.1f} tokens/s)", s.generated_tokens - 1,
               s.decode_seconds, (s.generated_tokens - 1) / std::max(s.decode_seconds, 1e-9));
  return 0;
}

int RunVersion() {
  std::cout << "spillway " << SPW_VERSION << "\nbackends: " << CompiledBackends() << "\n";
  return 0;
}

}  // namespace spillway::server
