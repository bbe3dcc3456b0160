#include "engine/tokenizer/internal/pre_tokenizer.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/unicode.h"

namespace spillway::engine::internal {
namespace {

// NOTE(tok): The regexes, as Hugging Face tokenizer.json files spell them:
//   GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:  as Llama3 with \p{N} in place of \p{N}{1,3}
// SmolLM2 applies Digits(individual_digits=true) first and GPT-2's regex to what lies between.
// No C++ regex library here knows \p{..}, so each regex is a hand-written matcher that tries
// the alternatives in order at the current position, as a backtracking engine would.

// The text decoded once: code point, its classes, and its byte offset.
struct Decoded {
  std::vector<char32_t> cps;
  std::vector<uint8_t> flags;
  std::vector<uint32_t> offsets;  // size cps.size() + 1; offsets.back() == text size
};

Decoded Decode(std::string_view text) {
  Decoded d;
  d.cps.reserve(text.size());
  d.flags.reserve(text.size());
  d.offsets.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char c = DecodeUtf8(text, pos);
    d.cps.push_back(c.cp);
    // An ill-formed byte is U+FFFD (a symbol), hence no flags: it behaves as punctuation.
    d.flags.push_back(c.len == 1 && c.cp == kReplacementChar ? 0 : CodepointFlags(c.cp));
    d.offsets.push_back(static_cast<uint32_t>(pos));
    pos += c.len;
  }
  d.offsets.push_back(static_cast<uint32_t>(text.size()));
  return d;
}

// Matches the regexes over the code points [begin, end) of one Decoded text.
class Matcher {
 public:
  Matcher(const Decoded& d, size_t begin, size_t end) : d_(d), begin_(begin), end_(end) {}

  bool IsL(size_t i) const { return i < end_ && (d_.flags[i] & kCpLetter); }
  bool IsN(size_t i) const { return i < end_ && (d_.flags[i] & kCpNumber); }
  bool IsS(size_t i) const { return i < end_ && (d_.flags[i] & kCpWhitespace); }
  bool IsOther(size_t i) const { return i < end_ && d_.flags[i] == 0; }  // [^\s\p{L}\p{N}]
  bool IsNewline(size_t i) const { return i < end_ && (d_.cps[i] == '\r' || d_.cps[i] == '\n'); }
  char32_t At(size_t i) const { return i < end_ ? d_.cps[i] : 0; }

  // 's|'t|'re|'ve|'m|'ll|'d at i; returns the match end or i. `ignore_case` is ASCII-only:
  // Oniguruma's (?i:'s) does not match "'ſ" (U+017F), as the goldens check.
  size_t Contraction(size_t i, bool ignore_case) const {
    if (At(i) != '\'') return i;
    auto lower = [&](size_t k) -> char32_t {
      const char32_t c = At(k);
      return ignore_case && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
    };
    const char32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const char32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
  }

  size_t RunWhile(size_t i, bool (Matcher::*pred)(size_t) const) const {
    while ((this->*pred)(i)) ++i;
    return i;
  }

  // \s+(?!\S)|\s+ at i, where i is whitespace.
  size_t TrailingWhitespace(size_t i) const {
    const size_t run_end = RunWhile(i, &Matcher::IsS);
    if (run_end == end_ || run_end - i == 1) return run_end;
    return run_end - 1;  // leave the last space to the next piece (" word")
  }

  // GPT-2: returns the end of the match at i (> i).
  size_t Gpt2(size_t i) const {
    if (size_t e = Contraction(i, /*ignore_case=*/false); e != i) return e;
    const size_t j = At(i) == ' ' ? i + 1 : i;
    if (IsL(j)) return RunWhile(j, &Matcher::IsL);
    if (IsN(j)) return RunWhile(j, &Matcher::IsN);
    if (IsOther(j)) return RunWhile(j, &Matcher::IsOther);
    if (IsS(i)) return TrailingWhitespace(i);
    return i + 1;  // unreachable: every code point is L, N, \s or other
  }

  // Llama 3 (max_digits 3) and Qwen2 (max_digits 1).
  size_t Llama3(size_t i, size_t max_digits) const {
    if (size_t e = Contraction(i, /*ignore_case=*/true); e != i) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (IsL(i)) return RunWhile(i, &Matcher::IsL);
    if (!IsNewline(i) && !IsN(i) && IsL(i + 1)) return RunWhile(i + 1, &Matcher::IsL);
    // \p{N}{1,max_digits}
    if (IsN(i)) {
      size_t e = i;
      while (e - i < max_digits && IsN(e)) ++e;
      return e;
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t j = At(i) == ' ' ? i + 1 : i;
    if (IsOther(j)) return RunWhile(RunWhile(j, &Matcher::IsOther), &Matcher::IsNewline);
    // \s*[\r\n]+ : up to the last newline of the whitespace run.
    const size_t run_end = RunWhile(i, &Matcher::IsS);
    for (size_t k = run_end; k > i; --k) {
      if (IsNewline(k - 1)) return k;
    }
    if (IsS(i)) return TrailingWhitespace(i);
    return i + 1;  // unreachable
  }

 private:
  const Decoded& d_;
  [[maybe_unused]] size_t begin_;
  size_t end_;
};

void Emit(const Decoded& d, std::string_view text, size_t b, size_t e,
          std::vector<std::string_view>* pieces) {
  pieces->push_back(text.substr(d.offsets[b], d.offsets[e] - d.offsets[b]));
}

}  // namespace

absl::StatusOr<PreTokenizerKind> PreTokenizerFromName(std::string_view name) {
  if (name.empty() || name == "default" || name == "gpt2") return PreTokenizerKind::kGpt2;
  if (name == "smollm") return PreTokenizerKind::kSmolLm;
  if (name == "llama-bpe" || name == "llama3") return PreTokenizerKind::kLlama3;
  if (name == "qwen2") return PreTokenizerKind::kQwen2;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported pre-tokenizer '", std::string(name),
                   "'; supported: smollm, gpt2, default, llama-bpe, qwen2"));
}

bool IgnoresMerges(PreTokenizerKind kind) { return kind == PreTokenizerKind::kLlama3; }

void PreTokenize(PreTokenizerKind kind, std::string_view text,
                 std::vector<std::string_view>* pieces) {
  if (text.empty()) return;
  const Decoded d = Decode(text);
  const size_t n = d.cps.size();
  auto run = [&](size_t begin, size_t end) {
    Matcher m(d, begin, end);
    for (size_t i = begin; i < end;) {
      size_t e = i + 1;
      switch (kind) {
        case PreTokenizerKind::kGpt2:
        case PreTokenizerKind::kSmolLm:
          e = m.Gpt2(i);
          break;
        case PreTokenizerKind::kLlama3:
          e = m.Llama3(i, 3);
          break;
        case PreTokenizerKind::kQwen2:
          e = m.Llama3(i, 1);
          break;
      }
      Emit(d, text, i, e, pieces);
      i = e;
    }
  };
  if (kind != PreTokenizerKind::kSmolLm) {
    run(0, n);
    return;
  }
  // Digits(individual_digits=true): each \p{N} is a piece; GPT-2's regex runs between them.
  size_t seg = 0;
  for (size_t i = 0; i < n; ++i) {
    if (d.flags[i] & kCpNumber) {
      if (seg < i) run(seg, i);
      Emit(d, text, i, i + 1, pieces);
      seg = i + 1;
    }
  }
  if (seg < n) run(seg, n);
}

}  // namespace spillway::engine::internal
