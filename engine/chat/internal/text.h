// UTF-8 helpers for the chat-template interpreter: code-point counting, indexing and the
// whitespace and case rules of Python's `str`, which jinja2 filters and methods follow.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spillway::engine::chat::internal {

// Splits `s` into code points. Invalid bytes become one code point each (U+FFFD is not
// substituted, the byte value is kept) so that no input makes a later step fail.
std::vector<char32_t> DecodeUtf8(std::string_view s);
void AppendUtf8(char32_t cp, std::string& out);
std::string EncodeUtf8(const std::vector<char32_t>& cps, size_t begin, size_t end);
// Number of code points, as Python's len(str).
int64_t CodePointCount(std::string_view s);

// Python's str.isspace() for one code point.
bool IsPyWhitespace(char32_t cp);
// Python's str.strip/lstrip/rstrip. `chars` == nullptr strips whitespace.
std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right);

// Python's str.upper/lower/capitalize and jinja2's `title` filter.
// NOTE(chat): case mapping covers ASCII, Latin-1 (with ß -> SS), basic Greek and Cyrillic;
// other scripts and Python's final-sigma rule are not mapped. Chat templates case-map only
// their own ASCII strings, so this has not mattered in practice.
std::string PyUpper(std::string_view s);
std::string PyLower(std::string_view s);
std::string PyCapitalize(std::string_view s);
std::string JinjaTitle(std::string_view s);
// Python's str.title(): upper-case a cased character that follows an uncased one.
std::string PyTitle(std::string_view s);

// Python's str.split(sep, maxsplit). `sep` == nullptr splits on whitespace runs.
std::vector<std::string> PySplit(std::string_view s, const std::string* sep, int64_t maxsplit);
// Python's str.replace(old, new, count); count < 0 replaces all.
std::string PyReplace(std::string_view s, std::string_view from, std::string_view to,
                      int64_t count);

// Python's repr() of a str, e.g. 'it\'s' -> "it's", with single quotes unless the text has a
// single quote and no double quote.
std::string PyStrRepr(std::string_view s);
// Python's repr()/str() of a float: shortest round-trip digits, "1.0", "1e+16", "inf", "nan".
std::string PyFloatRepr(double v);

}  // namespace spillway::engine::chat::internal
