#include "server/openai/sse.h"

#include <gtest/gtest.h>

namespace spillway::server::openai {
namespace {

TEST(Sse, FramesOneDataLinePerMessage) {
  EXPECT_EQ(SseData("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseData(""), "data: \n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(SseDeathTest, ALineBreakInThePayloadIsABug) {
  EXPECT_DEATH(SseData("a\nb"), "");  // SPW_CHECK logs to stdout
}

}  // namespace
}  // namespace spillway::server::openai
