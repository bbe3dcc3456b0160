// Fine-tuning datasets: JSONL validated line by line at upload (purpose "fine-tune"), and the
// examples turned into training token ids with a loss mask.
//   - Chat lines: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]},
//     at least one assistant message. Tokens: the model's chat template rendered for the whole
//     conversation; each assistant message's span (what the template adds for it after the
//     generation prompt of the messages before it) is tokenized on its own and is the only
//     part with loss_mask 1, so training sees exactly the tokens inference would produce.
//   - Prompt/completion lines: {"prompt": "...", "completion": "..."}: the prompt with the
//     tokenizer's special prefix (BOS), then the completion and EOS, loss on the latter.
// Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/train/training_job.h"

namespace spillway::server::admin {

struct DatasetExample {
  bool chat = false;
  std::vector<engine::ChatMessage> messages;  // chat
  std::string prompt, completion;             // prompt/completion
};

// Parses every line (blank lines are skipped). InvalidArgument "line N: ..." for the first
// bad line (not JSON, not an object, wrong field types, an unknown role, no assistant
// message, an empty completion), and for a file with no example.
absl::StatusOr<std::vector<DatasetExample>> ParseFineTuneJsonl(std::string_view text);

struct TokenizeContext {
  const engine::Tokenizer* tokenizer = nullptr;
  const engine::ChatTemplate* chat_template = nullptr;  // null: chat lines are refused
  std::string bos_token = {}, eos_token = {};                     // for the template
  engine::TokenId eos_id = -1;                          // appended to completions (if >= 0)
};

// Each example as tokens and a loss mask. InvalidArgument "example N: ..." when the template
// fails, or an example has no target token or more than `max_tokens` tokens.
absl::StatusOr<std::vector<engine::train::TrainingExample>> TokenizeExamples(
    const std::vector<DatasetExample>& examples, const TokenizeContext& ctx, int64_t max_tokens);

}  // namespace spillway::server::admin
