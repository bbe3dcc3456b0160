#include "engine/tokenizer/internal/unicode.h"

#include <algorithm>
#include <array>

namespace spillway::engine::internal {
namespace {

uint8_t LookupFlags(char32_t cp) {
  const CodepointRange* begin = kCodepointRanges;
  const CodepointRange* end = kCodepointRanges + kNumCodepointRanges;
  // First range whose `last` is >= cp.
  const CodepointRange* it = std::lower_bound(
      begin, end, cp, [](const CodepointRange& r, char32_t c) { return r.last < c; });
  return (it != end && it->first <= cp) ? it->flags : 0;
}

const std::array<uint8_t, 256>& Latin1Flags() {
  static const std::array<uint8_t, 256> table = [] {
    std::array<uint8_t, 256> t{};
    for (char32_t cp = 0; cp < 256; ++cp) t[cp] = LookupFlags(cp);
    return t;
  }();
  return table;
}

// Length of the sequence that lead byte `b` starts, 0 if `b` cannot start one, and the allowed
// range of the second byte (Unicode Table 3-7).
struct LeadInfo {
  int len;
  uint8_t lo;
  uint8_t hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Scans the sequence at bytes[pos]. Returns the number of bytes of its well-formed prefix
// (`valid` tells whether the whole sequence is complete and well formed).
int ScanSequence(std::string_view bytes, size_t pos, bool* valid) {
  const auto b0 = static_cast<uint8_t>(bytes[pos]);
  const LeadInfo lead = Lead(b0);
  if (lead.len == 0) {
    *valid = false;
    return 1;
  }
  int n = 1;
  for (; n < lead.len; ++n) {
    if (pos + n >= bytes.size()) {
      *valid = false;
      return n;
    }
    const auto b = static_cast<uint8_t>(bytes[pos + n]);
    const uint8_t lo = n == 1 ? lead.lo : 0x80;
    const uint8_t hi = n == 1 ? lead.hi : 0xBF;
    if (b < lo || b > hi) {
      *valid = false;
      return n;
    }
  }
  *valid = true;
  return n;
}

}  // namespace

uint8_t CodepointFlags(char32_t cp) {
  if (cp < 256) return Latin1Flags()[cp];
  return LookupFlags(cp);
}

Utf8Char DecodeUtf8(std::string_view text, size_t pos) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) return {b0, 1};
  bool valid = false;
  const int n = ScanSequence(text, pos, &valid);
  if (!valid) return {kReplacementChar, 1};
  char32_t cp = b0 & (0x7F >> n);
  for (int i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  return {cp, n};
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out) {
  size_t pos = 0;
  size_t run_begin = 0;  // start of the pending run of valid bytes, copied in one go
  while (pos < bytes.size()) {
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    bool valid = false;
    const int n = ScanSequence(bytes, pos, &valid);
    if (valid) {
      pos += n;
      continue;
    }
    out->append(bytes.substr(run_begin, pos - run_begin));
    if (pos + n >= bytes.size() && Lead(static_cast<uint8_t>(bytes[pos])).len > 0 && !final) {
      // Incomplete but possibly valid sequence at the end: hold it back.
      return pos;
    }
    AppendUtf8(kReplacementChar, out);
    pos += n;
    run_begin = pos;
  }
  out->append(bytes.substr(run_begin, pos - run_begin));
  return pos;
}

bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    bool valid = false;
    const int n = ScanSequence(text, pos, &valid);
    if (!valid) return false;
    pos += n;
  }
  return true;
}

}  // namespace spillway::engine::internal
