#include "engine/chat/internal/lexer.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/internal/text.h"

namespace spillway::engine::chat::internal {
namespace {

// jinja2 normalises every newline sequence to "\n" and, without keep_trailing_newline, drops
// one trailing newline of the source.
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Length in bytes of the whitespace code point at `pos`, or 0.
size_t WhitespaceLength(const std::string& s, size_t pos) {
  auto b = static_cast<unsigned char>(s[pos]);
  if (b < 0x80) return IsPyWhitespace(b) ? 1 : 0;
  size_t len = (b & 0xE0) == 0xC0 ? 2 : ((b & 0xF0) == 0xE0 ? 3 : ((b & 0xF8) == 0xF0 ? 4 : 1));
  if (pos + len > s.size()) return 0;
  std::vector<char32_t> cps = DecodeUtf8(std::string_view(s).substr(pos, len));
  return cps.size() == 1 && IsPyWhitespace(cps[0]) ? len : 0;
}

size_t SkipWhitespace(const std::string& s, size_t pos) {
  while (pos < s.size()) {
    size_t len = WhitespaceLength(s, pos);
    if (len == 0) break;
    pos += len;
  }
  return pos;
}

bool AllWhitespace(const std::string& s, size_t begin) {
  return SkipWhitespace(s, begin) == s.size();
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr const char* kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/",
                                      "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                      "<",  ">",  "=",  ".",  ":",  "|",  ",", ";"};

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(NormalizeNewlines(source)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t tag = FindTagStart(pos);
      if (tag == std::string::npos) {
        Emit(TokenKind::kData, src_.substr(pos), pos);
        break;
      }
      char type = src_[tag + 1];
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text = PyStrip(text, nullptr, false, true);
      } else if (sign != '+' && type != '{') {
        // lstrip_blocks: drop the indentation before a block or comment tag.
        size_t line_begin = text.rfind('\n');
        line_begin = line_begin == std::string::npos ? 0 : line_begin + 1;
        if ((line_begin > 0 || line_starting) && line_begin < text.size() &&
            AllWhitespace(text, line_begin)) {
          text.resize(line_begin);
        }
      }
      if (!text.empty()) Emit(TokenKind::kData, std::move(text), pos);
      size_t body = tag + 2 + (sign != '\0' ? 1 : 0);
      if (type == '%') {
        if (std::optional<size_t> content = MatchRawTag(body, "raw")) {
          absl::StatusOr<size_t> end = LexRaw(tag, *content);
          if (!end.ok()) return end.status();
          pos = *end;
          line_starting = pos > 0 && src_[pos - 1] == '\n';
          continue;
        }
      }
      absl::StatusOr<size_t> end = type == '#' ? LexComment(tag, body) : LexTag(type, tag, body);
      if (!end.ok()) return end.status();
      pos = *end;
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Emit(TokenKind::kEof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t pos) const {
    while (true) {
      size_t hit = src_.find('{', pos);
      if (hit == std::string::npos || hit + 1 >= src_.size()) return std::string::npos;
      char next = src_[hit + 1];
      if (next == '{' || next == '%' || next == '#') return hit;
      pos = hit + 1;
    }
  }

  void Position(size_t offset, int& line, int& column) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    line = static_cast<int>(it - line_starts_.begin());
    column = static_cast<int>(offset - line_starts_[line - 1]) + 1;
  }

  Token& Emit(TokenKind kind, std::string text, size_t offset) {
    Token token{kind, std::move(text)};
    Position(offset, token.line, token.column);
    tokens_.push_back(std::move(token));
    return tokens_.back();
  }

  absl::Status Error(size_t offset, const std::string& message) const {
    int line = 0;
    int column = 0;
    Position(offset, line, column);
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line, ", column ", column, ": ", message));
  }

  // Consumes the end marker's trailing whitespace rule; returns the offset after it.
  size_t AfterTagEnd(size_t end_offset, char end_sign, bool trims_newline) const {
    if (end_sign == '-') return SkipWhitespace(src_, end_offset);
    if (end_sign != '+' && trims_newline && end_offset < src_.size() && src_[end_offset] == '\n') {
      return end_offset + 1;
    }
    return end_offset;
  }

  // If `{%` + sign is followed by `word` and the tag end, returns the offset after the tag end
  // (after the whitespace that `-%}` strips). Only `raw` and `endraw` are matched this way.
  std::optional<size_t> MatchRawTag(size_t body, std::string_view word) const {
    size_t pos = SkipWhitespace(src_, body);
    if (src_.compare(pos, word.size(), word) != 0) return std::nullopt;
    pos = SkipWhitespace(src_, pos + word.size());
    char end_sign = pos < src_.size() ? src_[pos] : '\0';
    if ((end_sign == '-' || end_sign == '+') && src_.compare(pos + 1, 2, "%}") == 0) {
      return AfterTagEnd(pos + 3, end_sign, word == "endraw");
    }
    if (src_.compare(pos, 2, "%}") == 0) return AfterTagEnd(pos + 2, '\0', word == "endraw");
    return std::nullopt;
  }

  // {% raw %}...{% endraw %}: everything up to endraw is data.
  absl::StatusOr<size_t> LexRaw(size_t tag, size_t content) {
    size_t search = content;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string::npos) return Error(tag, "missing end of raw directive");
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign != '-' && sign != '+') sign = '\0';
      std::optional<size_t> end = MatchRawTag(open + 2 + (sign != '\0' ? 1 : 0), "endraw");
      if (!end.has_value()) {
        search = open + 2;
        continue;
      }
      std::string text = src_.substr(content, open - content);
      if (sign == '-') text = PyStrip(text, nullptr, false, true);
      if (!text.empty()) Emit(TokenKind::kData, std::move(text), content);
      return *end;
    }
  }

  absl::StatusOr<size_t> LexComment(size_t tag, size_t body) const {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) return Error(tag, "missing end of comment tag");
    char end_sign = close > body ? src_[close - 1] : '\0';
    return AfterTagEnd(close + 2, end_sign, /*trims_newline=*/true);
  }

  absl::StatusOr<size_t> LexTag(char type, size_t tag, size_t body) {
    bool block = type == '%';
    Emit(block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, block ? "{%" : "{{", tag);
    const std::string close = block ? "%}" : "}}";
    std::vector<char> balance;
    size_t pos = body;
    while (true) {
      pos = SkipWhitespace(src_, pos);
      if (pos >= src_.size()) return Error(tag, "unexpected end of template, tag was not closed");
      if (balance.empty()) {
        char end_sign = src_[pos];
        bool signed_end =
            (end_sign == '-' || (block && end_sign == '+')) && src_.compare(pos + 1, 2, close) == 0;
        if (signed_end || src_.compare(pos, 2, close) == 0) {
          Emit(block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd, close, pos);
          size_t end_offset = pos + (signed_end ? 3 : 2);
          return AfterTagEnd(end_offset, signed_end ? end_sign : '\0', /*trims_newline=*/block);
        }
      }
      absl::StatusOr<size_t> next = LexExpressionToken(pos, balance);
      if (!next.ok()) return next.status();
      pos = *next;
    }
  }

  absl::StatusOr<size_t> LexExpressionToken(size_t pos, std::vector<char>& balance) {
    char c = src_[pos];
    if (c == '\'' || c == '"') return LexString(pos);
    if (IsDigit(c)) return LexNumber(pos);
    if (IsNameStart(c)) {
      size_t end = pos;
      while (end < src_.size() && IsNameChar(src_[end])) ++end;
      Emit(TokenKind::kName, src_.substr(pos, end - pos), pos);
      return end;
    }
    for (const char* op : kOperators) {
      size_t len = std::char_traits<char>::length(op);
      if (src_.compare(pos, len, op) != 0) continue;
      if (len == 1 && (c == '(' || c == '[' || c == '{')) {
        balance.push_back(c == '(' ? ')' : (c == '[' ? ']' : '}'));
      } else if (len == 1 && (c == ')' || c == ']' || c == '}')) {
        if (balance.empty() || balance.back() != c) {
          return Error(pos, absl::StrCat("unexpected '", std::string(1, c), "'"));
        }
        balance.pop_back();
      }
      Emit(TokenKind::kOperator, op, pos);
      return pos + len;
    }
    return Error(pos, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

  absl::StatusOr<size_t> LexNumber(size_t pos) {
    auto digits = [&](size_t p) {
      while (p < src_.size() && (IsDigit(src_[p]) ||
                                 (src_[p] == '_' && p + 1 < src_.size() && IsDigit(src_[p + 1])))) {
        ++p;
      }
      return p;
    };
    size_t end = digits(pos);
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && IsDigit(src_[end + 1])) {
      end = digits(end + 1);
      is_float = true;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t exp = end + 1;
      if (exp < src_.size() && (src_[exp] == '+' || src_[exp] == '-')) ++exp;
      if (exp < src_.size() && IsDigit(src_[exp])) {
        end = digits(exp);
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = pos; i < end; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Token& token = Emit(is_float ? TokenKind::kFloat : TokenKind::kInteger, text, pos);
    if (is_float) {
      token.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      auto res = std::from_chars(text.data(), text.data() + text.size(), token.int_value);
      if (res.ec != std::errc()) return Error(pos, "integer literal out of range");
    }
    return end;
  }

  // Python string-literal escapes, as jinja2 decodes them ("unicode-escape").
  absl::StatusOr<size_t> LexString(size_t pos) {
    char quote = src_[pos];
    std::string value;
    size_t i = pos + 1;
    while (true) {
      if (i >= src_.size()) return Error(pos, "unterminated string literal");
      char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        value.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) return Error(pos, "unterminated string literal");
      absl::StatusOr<size_t> next = DecodeEscape(i, value);
      if (!next.ok()) return next.status();
      i = *next;
    }
    Emit(TokenKind::kString, std::move(value), pos);
    return i + 1;
  }

  absl::StatusOr<size_t> DecodeEscape(size_t i, std::string& value) const {
    char e = src_[i + 1];
    switch (e) {
      case '\n':
        return i + 2;
      case '\\':
      case '\'':
      case '"':
        value.push_back(e);
        return i + 2;
      case 'a':
        value.push_back('\a');
        return i + 2;
      case 'b':
        value.push_back('\b');
        return i + 2;
      case 'f':
        value.push_back('\f');
        return i + 2;
      case 'n':
        value.push_back('\n');
        return i + 2;
      case 'r':
        value.push_back('\r');
        return i + 2;
      case 't':
        value.push_back('\t');
        return i + 2;
      case 'v':
        value.push_back('\v');
        return i + 2;
      case 'x':
      case 'u':
      case 'U': {
        size_t count = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
        char32_t cp = 0;
        for (size_t k = 0; k < count; ++k) {
          int h = i + 2 + k < src_.size() ? HexValue(src_[i + 2 + k]) : -1;
          if (h < 0) return Error(i, "truncated \\x, \\u or \\U escape in string literal");
          cp = cp * 16 + h;
        }
        if (cp > 0x10FFFF) return Error(i, "illegal Unicode character in string literal");
        AppendUtf8(cp, value);
        return i + 2 + count;
      }
      default:
        break;
    }
    if (e >= '0' && e <= '7') {
      char32_t cp = 0;
      size_t k = i + 1;
      while (k < src_.size() && k < i + 4 && src_[k] >= '0' && src_[k] <= '7') {
        cp = cp * 8 + (src_[k] - '0');
        ++k;
      }
      AppendUtf8(cp, value);
      return k;
    }
    value.push_back('\\');  // unknown escapes stay as written
    return i + 1;
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) { return Lexer(source).Run(); }

}  // namespace spillway::engine::chat::internal
