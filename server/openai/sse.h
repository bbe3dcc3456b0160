// Server-sent events as the OpenAI streaming API writes them: each message is one line
// `data: <json>` followed by a blank line, and the stream ends with `data: [DONE]`.
// Pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace spillway::server::openai {

inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// "data: <payload>\n\n". REQUIRES: payload holds no line break (serialized JSON never does:
// JSON escapes them inside strings).
std::string SseData(std::string_view payload);

}  // namespace spillway::server::openai
