// Random-weight models of real shapes, written as GGUF files that OpenGguf loads and the
// server serves: `spillway make-model` writes them for speed tests on machines where no real
// weights can be downloaded (docs/gpu.md). The weights are deterministic in the seed; the
// tokenizer is a byte-level BPE (the 256 byte tokens, letter-pair merges, filler tokens up to
// the vocabulary size, ChatML-style special tokens) with a chat template, so prompts encode,
// outputs decode and /v1/chat/completions works. Any thread; WriteRandomModel uses `threads`
// threads of its own to fill tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine {

struct ModelShape {
  std::string name;
  int64_t num_layers = 0;
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t ffn_hidden = 0;
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;
};

// The shape called `name` ("llama3-8b", "llama3.2-1b", "smollm2-135m", "tiny"), or nullopt.
std::optional<ModelShape> FindModelShape(std::string_view name);
// Every name FindModelShape knows, for help texts.
std::vector<std::string> ModelShapeNames();

struct RandomModelOptions {
  ModelShape shape;
  GgmlType dtype = GgmlType::kBF16;  // of the matrices: F32, F16 or BF16; norms are F32
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
};

// Writes the model to `path`. InvalidArgument for an unsupported dtype or an inconsistent
// shape (heads not dividing hidden, ...).
absl::Status WriteRandomModel(const RandomModelOptions& options, const std::string& path);

}  // namespace spillway::engine
