#include "server/openai/sse.h"

#include "common/check.h"

namespace spillway::server::openai {

std::string SseData(std::string_view payload) {
  SPW_CHECK(payload.find_first_of("\r\n") == std::string_view::npos)
      << "an SSE data line cannot hold a line break";
  std::string out;
  out.reserve(payload.size() + 8);
  out.append("data: ").append(payload).append("\n\n");
  return out;
}

}  // namespace spillway::server::openai
