#include "server/openai/json_fields.h"

#include <gtest/gtest.h>

#include "server/openai/api_error.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

TEST(IsValidUtf8, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
}

TEST(IsValidUtf8, RefusesIllFormedSequencesAndSaysWhere) {
  struct Case {
    std::string text;
    size_t offset;
  };
  const Case cases[] = {
      {"ab\xFF", 2},            // never valid
      {"\xC0\xAF", 0},          // overlong '/'
      {"x\xE0\x80\xAF", 1},     // overlong 3-byte
      {"\xED\xA0\x80", 0},      // UTF-16 surrogate
      {"\xF4\x90\x80\x80", 0},  // past U+10FFFF
      {"ok\xC3", 2},            // truncated
      {"\xE2\x82", 0},          // truncated
      {"a\x80", 1},             // lone continuation
  };
  for (const Case& c : cases) {
    size_t offset = 99;
    EXPECT_FALSE(IsValidUtf8(c.text, &offset));
    EXPECT_EQ(offset, c.offset);
  }
}

TEST(ParseJsonBody, RefusesBadBodies) {
  for (std::string_view body :
       {"", "{", "[1,2]", "\"s\"", "{\"a\":1,}", "{\"a\":\"\\ud800\"}", "nul", "{} {}"}) {
    absl::StatusOr<json::object> o = ParseJsonBody(body);
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << body;
  }
  EXPECT_NE(ParseJsonBody("\xFF").status().message().find("UTF-8"), absl::string_view::npos);
  EXPECT_TRUE(ParseJsonBody("{\"a\": [1, {\"b\": null}]}").ok());
}

TEST(ParseJsonBody, DeepNestingIsAnErrorNotACrash) {
  std::string deep(100000, '[');
  EXPECT_FALSE(ParseJsonBody("{\"a\":" + deep).ok());
}

TEST(FieldReader, ReadsTypedFieldsAndTreatsNullAsAbsent) {
  json::object o = json::parse(R"({"i": 3, "f": 2.0, "d": 0.5, "b": true, "s": "x",
                                   "n": null, "l": ["a", "b"]})")
                       .as_object();
  FieldReader r(o);
  EXPECT_EQ(*r.Int("i", 0, 10), 3);
  EXPECT_EQ(*r.Int("f", 0, 10), 2);  // integral doubles are integers
  EXPECT_EQ(*r.Number("d", 0, 1), 0.5);
  EXPECT_EQ(*r.Bool("b"), true);
  EXPECT_EQ(*r.String("s"), "x");
  EXPECT_EQ(*r.Int("n", 0, 1), std::nullopt);
  EXPECT_EQ(*r.Int("absent", 0, 1), std::nullopt);
  EXPECT_EQ((*r.StringOrStrings("s", 4))->size(), 1u);
  EXPECT_EQ((*r.StringOrStrings("l", 4))->size(), 2u);
}

TEST(FieldReader, WrongTypesAndRangesNameTheField) {
  json::object o = json::parse(R"({"i": 1.5, "big": 11, "str": "1", "b": 1, "d": -0.1,
                                   "l": ["a", 1], "many": ["a","b","c"]})")
                       .as_object();
  FieldReader r(o);
  auto expect_param = [](const absl::Status& s, const std::string& param) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParamOf(s), param) << s;
  };
  expect_param(r.Int("i", 0, 10).status(), "i");
  expect_param(r.Int("big", 0, 10).status(), "big");
  expect_param(r.Int("str", 0, 10).status(), "str");
  expect_param(r.Bool("b").status(), "b");
  expect_param(r.Number("d", 0, 1).status(), "d");
  expect_param(r.Number("str", 0, 1).status(), "str");
  expect_param(r.StringOrStrings("l", 4).status(), "l");
  expect_param(r.StringOrStrings("many", 2).status(), "many");
  expect_param(r.Object("str").status(), "str");
  EXPECT_NE(r.Number("d", 0, 1, true).status().message().find("(0, 1]"), absl::string_view::npos);
}

}  // namespace
}  // namespace spillway::server::openai
