// The prompt of an OpenAI request as token ids: `prompt` of /v1/completions (a string, a list
// of strings, token ids or lists of token ids; one prompt each) and `messages` of
// /v1/chat/completions rendered through the model's chat template. Also used by /tokenize.
// Failures are InvalidArgument naming the field (api_error.h). Pure functions over a
// ServedModel; safe from any thread.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "server/openai/served_model.h"

namespace spillway::server::openai {

struct PromptInput {
  std::vector<engine::TokenId> tokens;
  std::string text;  // the prompt text (decoded when given as token ids), for `echo`
};

// Completions: tokenized with the tokenizer's add_special (BOS as the model file says) and
// parse_special. Token ids must be in the vocabulary; no prompt may be empty; at most
// limits.max_prompts prompts.
absl::StatusOr<std::vector<PromptInput>> CompletionPrompts(const boost::json::value& prompt,
                                                           const ServedModel& model);

// Chat: the messages (roles system, developer (as system), user, assistant; content a string,
// a list of text parts or null) rendered by the chat template into text. `param` is the field
// name used in errors ("messages").
absl::StatusOr<std::string> RenderChat(const boost::json::value& messages,
                                       bool add_generation_prompt, const ServedModel& model);

// The rendered chat text as tokens: add_special=false (the template holds any BOS text, as
// transformers' apply_chat_template assumes), parse_special=true.
std::vector<engine::TokenId> TokenizeChat(const std::string& text, const ServedModel& model);

}  // namespace spillway::server::openai
