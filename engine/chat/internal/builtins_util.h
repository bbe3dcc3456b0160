// Argument helpers shared by the built-in filters, tests, methods and functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/internal/value.h"

namespace spillway::engine::chat::internal {

// The argument at `index` among the positional ones, else the keyword argument `name`, else
// nullptr.
inline const Value* Arg(const CallArgs& args, size_t index, std::string_view name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

inline absl::StatusOr<std::string> StringArg(const Value& v, std::string_view what) {
  if (!v.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": expected a string argument, got '", TypeName(v), "'"));
  }
  return v.string_value();
}

inline absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what) {
  if (v.is_int()) return v.int_value();
  if (v.is_bool()) return int64_t{v.bool_value()};
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), ": expected an integer argument, got '", TypeName(v), "'"));
}

}  // namespace spillway::engine::chat::internal
