// The built-in library of the chat-template interpreter: jinja2's filters and tests as HF
// transformers configures them (tojson without HTML escaping), global functions (range,
// namespace, dict, raise_exception, strftime_now), Python str/dict/list methods, and the
// attribute, item, slice and iteration rules of jinja2's sandbox. Used by evaluator.cc.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat/internal/value.h"

namespace spillway::engine::chat::internal {

// The error jinja2 raises when an Undefined is used where a value is needed.
// REQUIRES: v.is_undefined().
absl::Status UndefinedError(const Value& v);

// `name(value, *args, **kwargs)` for the filter or test `name`; unknown names fail.
absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& value,
                                  const CallArgs& args);
absl::StatusOr<bool> ApplyTest(Evaluator& ev, std::string_view name, const Value& value,
                               const CallArgs& args);

// Whether `name` is a filter / test this library provides (jinja2 rejects unknown names when
// compiling, except inside if-blocks and inline ifs).
bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

// jinja2's `obj.name` (attribute first, then item) and `obj[key]` (item first, then attribute).
// Missing entries give Undefined; using an Undefined object fails.
absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// Python's obj[start:stop:step] for lists, tuples and strings; nullptr parts are omitted.
absl::StatusOr<Value> SliceValue(const Value& obj, const Value* start, const Value* stop,
                                 const Value* step);
// The items a for-loop visits: list items, dict keys, string characters; Undefined is empty.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
// Python's `item in container`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);

// The global function `name`, if there is one.
std::optional<Value> LookupGlobal(const std::string& name);

}  // namespace spillway::engine::chat::internal
