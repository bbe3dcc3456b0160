// Pre-tokenizers of byte-level BPE vocabularies: they split text into the pieces that BPE then
// encodes one by one. Each kind reproduces, by hand, the regex that Hugging Face `tokenizers`
// (and llama.cpp) use for it; see pre_tokenizer.cc for the regexes. Pure; safe from any thread.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::engine::internal {

enum class PreTokenizerKind {
  kGpt2,    // GPT-2's regex ("gpt2", "default")
  kSmolLm,  // every \p{N} on its own, then GPT-2's regex ("smollm")
  kLlama3,  // Llama 3's regex ("llama-bpe")
  kQwen2,   // Qwen2's regex: Llama 3's with single digits ("qwen2")
};

// Maps a GGUF `tokenizer.ggml.pre` name to a kind; an empty name means "default".
// Returns InvalidArgument for names this tokenizer does not implement.
absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name);

// Whether merges are skipped for pieces that are whole tokens (HF BPE `ignore_merges`).
bool IgnoresMerges(PreTokenizerKind kind);

// PreTokenize appends the pieces of `text` to `pieces`, in order; they are views into `text`,
// non-empty, and together cover it exactly. Ill-formed UTF-8 bytes count as punctuation.
void PreTokenize(PreTokenizerKind kind, std::string_view text,
                 std::vector<std::string_view>* pieces);

}  // namespace spillway::engine::internal
