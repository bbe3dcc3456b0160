// UTF-8 helpers and code-point classes of the tokenizer.
#include "engine/tokenizer/internal/unicode.h"

#include <gtest/gtest.h>

#include <string>

namespace spillway::engine::internal {
namespace {

std::string Lossy(std::string_view bytes) {
  std::string out;
  EXPECT_EQ(AppendValidUtf8(bytes, /*final=*/true, &out), bytes.size());
  return out;
}

TEST(UnicodeTest, LossyReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(Lossy("abc"), "abc");
  EXPECT_EQ(Lossy("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(Lossy("\xFF"), r);
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), r);  // one truncated sequence: one U+FFFD
  EXPECT_EQ(Lossy("\xF0\x9F"
                  "a"),
            r + "a");
  EXPECT_EQ(Lossy("\x80\x80"), r + r);
  EXPECT_EQ(Lossy("\xED\xA0\x80"), r + r + r);  // surrogate: E D is not followed by A0
  EXPECT_EQ(Lossy("\xC0\xAF"), r + r);
  EXPECT_EQ(Lossy("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
}

TEST(UnicodeTest, HoldsBackIncompleteTail) {
  std::string out;
  EXPECT_EQ(AppendValidUtf8("ab\xF0\x9F\x98", /*final=*/false, &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(AppendValidUtf8("\xFF\xC3", false, &out), 1u);
  EXPECT_EQ(out, "\xEF\xBF\xBD");
}

TEST(UnicodeTest, DecodeAndEncode) {
  const std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";
  Utf8Char c = DecodeUtf8(s, 0);
  EXPECT_EQ(c.cp, U'a');
  c = DecodeUtf8(s, 1);
  EXPECT_EQ(c.cp, U'\u00E9');
  EXPECT_EQ(c.len, 2);
  c = DecodeUtf8(s, 3);
  EXPECT_EQ(c.cp, U'\u4E2D');
  c = DecodeUtf8(s, 6);
  EXPECT_EQ(c.cp, U'\U0001F600');
  EXPECT_EQ(c.len, 4);
  EXPECT_EQ(DecodeUtf8("\xFF", 0).len, 1);
  std::string out;
  for (char32_t cp : {U'a', U'\u00E9', U'\u4E2D', U'\U0001F600'}) AppendUtf8(cp, &out);
  EXPECT_EQ(out, s);
  EXPECT_TRUE(IsValidUtf8(s));
  EXPECT_FALSE(IsValidUtf8("\xC3"));
}

TEST(UnicodeTest, Classes) {
  EXPECT_EQ(CodepointFlags(U'a'), kCpLetter);
  EXPECT_EQ(CodepointFlags(U'7'), kCpNumber);
  EXPECT_EQ(CodepointFlags(U' '), kCpWhitespace);
  EXPECT_EQ(CodepointFlags(U'\u00A0'), kCpWhitespace);
  EXPECT_EQ(CodepointFlags(U'\u3000'), kCpWhitespace);
  EXPECT_EQ(CodepointFlags(U'\u001C'), 0);  // not \s for Oniguruma
  EXPECT_EQ(CodepointFlags(U'\u4E2D'), kCpLetter);
  EXPECT_EQ(CodepointFlags(U'\u0663'), kCpNumber);  // Arabic-Indic three
  EXPECT_EQ(CodepointFlags(U'\u00BD'), kCpNumber);  // one half (No)
  EXPECT_EQ(CodepointFlags(U'!'), 0);
  EXPECT_EQ(CodepointFlags(U'\U0001F600'), 0);
  EXPECT_EQ(CodepointFlags(U'\u0301'), 0);  // combining mark
}

}  // namespace
}  // namespace spillway::engine::internal
