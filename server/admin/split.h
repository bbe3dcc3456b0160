// Small std::string_view helpers for the admin API's parsing of paths, query strings and
// multipart headers (absl's string functions take absl::string_view, which is not
// std::string_view in this absl build). Pure functions; any thread.
#pragma once

#include <string_view>
#include <vector>

namespace spillway::server::admin {

// `text` cut at every `sep` (empty pieces kept), as views into `text`.
inline std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (true) {
    const size_t end = text.find(sep, pos);
    if (end == std::string_view::npos) {
      out.push_back(text.substr(pos));
      return out;
    }
    out.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
}

// `text` without leading and trailing spaces and tabs.
inline std::string_view Trim(std::string_view text) {
  const size_t b = text.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return text.substr(b, text.find_last_not_of(" \t") - b + 1);
}

// ASCII case-insensitive equality.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace spillway::server::admin
