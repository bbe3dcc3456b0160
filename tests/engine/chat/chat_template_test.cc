// Tests of engine/chat/chat_template.h: byte-exact agreement with Python's jinja2 on real chat
// templates and on feature snippets (tests/golden/chat/goldens.json, made by
// make_goldens.py), plus direct tests of errors, limits and robustness on malformed input.
#include "engine/chat/chat_template.h"

#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "boost/json.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_paths.h"

namespace spillway::engine {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const json::object& Goldens() {
  static const json::value* goldens = [] {
    std::string text = ReadFile(testing::SourcePath("tests/golden/chat/goldens.json"));
    return new json::value(json::parse(text));
  }();
  return goldens->as_object();
}

std::string Str(const json::value& v) { return std::string(v.as_string()); }

std::vector<ChatMessage> Messages(const json::value& v) {
  std::vector<ChatMessage> messages;
  for (const auto& m : v.as_array()) {
    messages.push_back({Str(m.at("role")), Str(m.at("content"))});
  }
  return messages;
}

// 2025-03-07 14:30:05, the time make_goldens.py pins strftime_now to.
std::tm GoldenNow() {
  std::tm tm{};
  tm.tm_year = 2025 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 7;
  tm.tm_hour = 14;
  tm.tm_min = 30;
  tm.tm_sec = 5;
  std::time_t t = timegm(&tm);
  gmtime_r(&t, &tm);
  return tm;
}

// Checks one golden outcome: the same text, or an error in both (with the same message when
// the template called raise_exception).
void ExpectMatches(const absl::StatusOr<std::string>& got, const json::object& golden,
                   const std::string& label) {
  if (golden.at("error").is_null()) {
    ASSERT_TRUE(got.ok()) << label << ": " << got.status();
    EXPECT_EQ(*got, Str(golden.at("expected"))) << label;
    return;
  }
  const json::object& error = golden.at("error").as_object();
  ASSERT_FALSE(got.ok()) << label << ": expected error '" << Str(error.at("message"))
                         << "', got output:\n"
                         << *got;
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << label;
  if (Str(error.at("kind")) == "raise") {
    EXPECT_EQ(got.status().message(), Str(error.at("message"))) << label;
  }
}

TEST(ChatTemplateGolden, RealTemplatesRenderExactlyAsJinja2) {
  int checked = 0;
  for (const auto& c : Goldens().at("cases").as_array()) {
    const json::object& golden = c.as_object();
    std::string name = Str(golden.at("template"));
    std::string source =
        ReadFile(testing::SourcePath("tests/golden/chat/templates/" + name + ".jinja"));
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
    ASSERT_TRUE(tmpl.ok()) << name << ": " << tmpl.status();
    ChatTemplateInput input;
    input.messages = Messages(golden.at("messages"));
    input.add_generation_prompt = golden.at("add_generation_prompt").as_bool();
    input.bos_token = Str(golden.at("bos_token"));
    input.eos_token = Str(golden.at("eos_token"));
    for (const auto& [key, value] : golden.at("extra_vars").as_object()) {
      input.extra_string_vars[std::string(key)] = Str(value);
    }
    input.now = GoldenNow();
    std::string label = name + "/" + Str(golden.at("conversation")) +
                        (input.add_generation_prompt ? "/gen" : "/nogen") +
                        (input.extra_string_vars.empty() ? "" : "/vars");
    ExpectMatches(tmpl->Render(input), golden, label);
    ++checked;
  }
  EXPECT_GT(checked, 300);
}

TEST(ChatTemplateGolden, FeatureSnippetsRenderExactlyAsJinja2) {
  ChatTemplateInput input;
  input.messages = Messages(Goldens().at("snippet_messages"));
  input.bos_token = "<s>";
  input.eos_token = "</s>";
  for (const auto& [key, value] : Goldens().at("snippet_vars").as_object()) {
    input.extra_string_vars[std::string(key)] = Str(value);
  }
  input.now = GoldenNow();
  for (const auto& s : Goldens().at("snippets").as_array()) {
    const json::object& golden = s.as_object();
    std::string source = Str(golden.at("source"));
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
    if (!tmpl.ok()) {
      EXPECT_FALSE(golden.at("error").is_null()) << source << ": " << tmpl.status();
      if (!golden.at("error").is_null()) {
        EXPECT_EQ(Str(golden.at("error").as_object().at("kind")), "syntax")
            << source << ": jinja2 fails only when rendering; we fail to parse: " << tmpl.status();
      }
      continue;
    }
    ExpectMatches(tmpl->Render(input), golden, source);
  }
}

absl::StatusOr<std::string> RenderSource(std::string_view source, ChatTemplateInput input = {}) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->Render(input);
}

TEST(ChatTemplate, WhitespaceControlFollowsTrimAndLstripBlocks) {
  EXPECT_EQ(*RenderSource("{% if true %}\nA\n{% endif %}\nB"), "A\nB");
  EXPECT_EQ(*RenderSource("    {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(*RenderSource("a   {{- 'b' -}}   c"), "abc");
  EXPECT_EQ(*RenderSource("{{ 'a' }}\n{{ 'b' }}"), "a\nb");  // no trim after }}
  EXPECT_EQ(*RenderSource("x\r\ny\n"), "x\ny");              // newlines normalised, last dropped
}

TEST(ChatTemplate, RendersTheDefaultModelsTemplate) {
  std::string source = ReadFile(testing::SourcePath("tests/golden/chat/templates/smollm2.jinja"));
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  ChatTemplate copy = *tmpl;  // copyable; shares the parsed tree
  ChatTemplateInput input;
  input.messages = {{"user", "Hi"}};
  EXPECT_EQ(*copy.Render(input),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, SyntaxErrorsNameLineAndColumn) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse("line one\n{{ 1 + }}");
  ASSERT_FALSE(tmpl.ok());
  EXPECT_EQ(tmpl.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tmpl.status().message(), HasSubstr("line 2, column 8"));
  EXPECT_THAT(ChatTemplate::Parse("{% for x in y %}").status().message(),
              HasSubstr("expected else or endfor"));
  EXPECT_THAT(ChatTemplate::Parse("{% include 'x' %}").status().message(),
              HasSubstr("unsupported tag 'include'"));
  EXPECT_THAT(ChatTemplate::Parse("{{ x | nosuchfilter }}").status().message(),
              HasSubstr("no filter named 'nosuchfilter'"));
}

TEST(ChatTemplate, RuntimeErrorsCarryTheMessage) {
  absl::StatusOr<std::string> raised =
      RenderSource("{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(raised.ok());
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(raised.status().message(), "Roles must alternate");
  absl::StatusOr<std::string> type_error = RenderSource("\n{{ 'a' + 1 }}");
  ASSERT_FALSE(type_error.ok());
  EXPECT_THAT(type_error.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(type_error.status().message(), HasSubstr("can only concatenate str"));
  EXPECT_THAT(RenderSource("{{ missing.attr }}").status().message(),
              HasSubstr("'missing' is undefined"));
}

TEST(ChatTemplate, StrftimeNowUsesTheInjectedTime) {
  ChatTemplateInput input;
  input.now = GoldenNow();
  EXPECT_EQ(*RenderSource("{{ strftime_now('%d %b %Y') }}", input), "07 Mar 2025");
}

TEST(ChatTemplate, LimitsStopRunawayTemplates) {
  absl::StatusOr<std::string> loops = RenderSource(
      "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_EQ(loops.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> big = RenderSource("{{ 'x' * 100000000 }}");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> doubling = RenderSource(
      "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s "
      "%}{% endfor %}");
  EXPECT_EQ(doubling.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> recursion =
      RenderSource("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_EQ(recursion.status().code(), absl::StatusCode::kResourceExhausted);
  std::string deep(5000, '(');
  EXPECT_FALSE(ChatTemplate::Parse("{{ " + deep + "1 }}").ok());
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += "+1";
  EXPECT_FALSE(ChatTemplate::Parse(chain + " }}").ok());
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += "{% if true %}";
  EXPECT_FALSE(ChatTemplate::Parse(nested).ok());
}

TEST(ChatTemplate, SelfReferencesAndSharedValuesStayBounded) {
  // A namespace that holds itself renders, prints boundedly and is freed (LeakSanitizer).
  EXPECT_EQ(*RenderSource("{% set ns = namespace() %}{% set ns.me = ns %}"
                          "{{ ns.me.me is defined }}"),
            "True");
  absl::StatusOr<std::string> printed =
      RenderSource("{% set ns = namespace() %}{% set ns.a = ns %}{% set ns.b = ns %}{{ ns }}");
  EXPECT_EQ(printed.status().code(), absl::StatusCode::kResourceExhausted);
  // Doubling a list by reference would print 2^60 items; its weight is refused early.
  absl::StatusOr<std::string> doubled = RenderSource(
      "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
      "{% endfor %}{{ ns.x == ns.x }}");
  EXPECT_EQ(doubled.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderSource("{{ [1] * 100000000 }}").status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(ChatTemplate, MalformedTemplatesNeverCrash) {
  std::vector<std::string> sources;
  for (const char* name : {"llama3_1", "qwen2_5", "mistral_v0_3"}) {
    sources.push_back(ReadFile(
        testing::SourcePath(std::string("tests/golden/chat/templates/") + name + ".jinja")));
  }
  ChatTemplateInput input;
  input.messages = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"user", "v"}};
  std::mt19937 rng(1234);
  const std::string alphabet = "{}%#-+|()[]'\".,:=~ \nabcxyz01ifelsefor";
  for (const std::string& source : sources) {
    for (size_t cut = 0; cut < source.size(); cut += 13) {  // every truncation point
      absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source.substr(0, cut));
      if (tmpl.ok()) (void)tmpl->Render(input);
    }
    for (int i = 0; i < 300; ++i) {  // random edits
      std::string mutated = source;
      for (int k = 0; k < 3; ++k) {
        mutated[rng() % mutated.size()] = alphabet[rng() % alphabet.size()];
      }
      absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(mutated);
      if (tmpl.ok()) (void)tmpl->Render(input);
    }
  }
}

}  // namespace
}  // namespace spillway::engine
