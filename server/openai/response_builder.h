// ResponseBuilder: turns the TokenEvents of one OpenAI request (one scheduler::Request per
// prompt) into what goes on the wire — SSE chunks while streaming, or one JSON body at the
// end — in the shapes of OpenAI's /v1/completions and /v1/chat/completions: choices indexed
// prompt * n + i, `finish_reason` stop / length, vLLM's `stop_reason`, legacy completions
// `logprobs` (tokens, token_logprobs, top_logprobs, text_offset) or chat `logprobs.content`,
// and `usage` with prompt_tokens_details.cached_tokens.
// Thread safety: none; one instance per HTTP exchange, used on that connection's strand.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tokenizer/tokenizer.h"
#include "scheduler/api/token_event.h"
#include "server/openai/request_parser.h"

namespace spillway::server::openai {

struct ResponseContext {
  Endpoint endpoint = Endpoint::kCompletions;
  bool stream = false;
  bool include_usage = false;
  int32_t n = 1;
  int32_t logprobs = -1;
  std::vector<std::string> echo_texts = {};  // per prompt; empty: no echo
  size_t num_prompts = 1;
  std::string id = {};  // "cmpl-..." / "chatcmpl-..."
  int64_t created_unix = 0;
  std::string model = {};
  const engine::Tokenizer* tokenizer = nullptr;  // for logprob token strings; never null
};

// The context of `spec` (everything but id, created, model and tokenizer).
ResponseContext ContextOf(const GenerationSpec& spec);

class ResponseBuilder {
 public:
  explicit ResponseBuilder(ResponseContext context);

  // Streaming: the SSE bytes to send before any event (chat: a role delta per choice;
  // completions with echo: the prompt text per choice).
  std::string StreamStart();
  // Takes one event of prompt `prompt_index`'s request. Streaming: returns the SSE bytes to
  // send (possibly empty); otherwise it accumulates and returns "".
  std::string OnEvent(size_t prompt_index, const scheduler::TokenEvent& event);
  // Streaming, after every request's channel closed: the usage chunk (include_usage) or an
  // error event, then `data: [DONE]`.
  std::string StreamEnd();
  // Not streaming, after every channel closed and when error() is OK: the response body.
  std::string FinalJson() const;
  // The first failure an event reported (kError, or kCancelled by the server), else OK.
  const absl::Status& error() const { return error_; }
  // Token counts summed over the events seen so far (final once every channel closed).
  const scheduler::Usage& usage() const { return usage_; }
  // True once every choice has its final event.
  bool all_finished() const;

 private:
  struct Choice {
    std::string text;
    std::optional<std::string> finish_reason;
    boost::json::value stop_reason;  // null, a string or a token id
    int64_t text_offset = 0;         // characters of text so far (legacy logprobs)
    boost::json::array lp_tokens, lp_token_logprobs, lp_top, lp_offsets;  // completions
    boost::json::array lp_content;                                        // chat
  };

  boost::json::object ChunkHead() const;
  boost::json::value LogprobsJson(const Choice& c) const;
  // Appends the logprobs of `event` to `c` and returns those of this event alone.
  boost::json::value TakeLogprobs(Choice& c, const scheduler::TokenEvent& event);
  boost::json::object UsageJson() const;
  std::string Chunk(boost::json::object choice) const;

  ResponseContext ctx_;
  std::vector<Choice> choices_;
  scheduler::Usage usage_;
  absl::Status error_;
};

}  // namespace spillway::server::openai
