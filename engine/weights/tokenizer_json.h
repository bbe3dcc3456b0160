// Hugging Face `tokenizer.json` + `tokenizer_config.json` -> TokenizerSpec, so that a Hugging
// Face directory gives the tokenizer the same plain data a GGUF file does. Called by the
// directory reader (hf_directory.cc) and by tests. Pure functions, safe from any thread.
//
// What is understood (anything else is Unimplemented, naming what was found):
//   * model.type "BPE" with a byte-level pre-tokenizer -> model "gpt2"; `pre` from the
//     pre-tokenizer: ByteLevel alone -> "gpt2"; Digits(individual) + ByteLevel -> "smollm";
//     Split with Llama 3's regex -> "llama-bpe"; Split with Qwen2's regex -> "qwen2".
//   * model.type "BPE" with byte_fallback and Metaspace "▁" (Llama 2 / Mistral) -> model
//     "llama", pre "default"; scores from merge rank (a token made by merge r scores -r, others
//     0, and tokens no merge can make score far below); add_space_prefix from the Prepend "▁"
//     normalizer or the Metaspace prepend_scheme / add_prefix_space.
// vocab gives the tokens by id; ids no entry names become "[PAD<id>]" of type kUnused.
// added_tokens are placed at their ids with type kControl (special) or kUserDefined.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_spec.h"

namespace spillway::engine {

// Builds the spec. bos/eos/unk/pad come from tokenizer_config.json's bos_token, eos_token,
// unk_token, pad_token (a string or {"content": ...}; the token must exist) and model.unk_token;
// for model "llama" missing ones default to <s>, </s>, <unk> when those tokens exist.
// add_bos/add_eos come from add_bos_token/add_eos_token, else from a TemplateProcessing
// post-processor that puts bos first / eos last, else add_bos = (model == "llama" and there
// is a bos).
// eot_ids: the added tokens that end a turn by name (<|im_end|>, <|eot_id|>, <|end|>,
// <end_of_turn>, <|endoftext|>), other than eos.
// Errors: InvalidArgument for bad JSON or inconsistent content (a merge naming an unknown
// token, duplicate ids, a bos_token that is not in the vocabulary); Unimplemented for a
// tokenizer kind spillway cannot run.
absl::StatusOr<TokenizerSpec> ParseTokenizerJson(std::string_view tokenizer_json,
                                                 std::string_view tokenizer_config_json);

// The chat template of tokenizer_config.json: "chat_template" as a string, or as a list of
// {"name", "template"} (the one named "default"); "" when there is none.
// Errors: InvalidArgument for bad JSON or a chat_template of another shape.
absl::StatusOr<std::string> ChatTemplateFromTokenizerConfig(std::string_view tokenizer_config_json);

}  // namespace spillway::engine
