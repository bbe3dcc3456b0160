// Debian 12's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), so std::string_view does not convert to it implicitly. These two spell the
// conversion where code passes views to Abseil (StrCat, Status, SimpleAtoi) and back.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace spillway {

inline absl::string_view AbslSv(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view StdSv(absl::string_view s) { return {s.data(), s.size()}; }

}  // namespace spillway
