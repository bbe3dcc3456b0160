// FieldReader: typed, range-checked reads of an OpenAI request's JSON fields. Every failure is
// an InvalidArgument that names the field in `param` (api_error.h) and says what was expected
// and what came, e.g. "'top_p' must be in (0, 1], got 1.5". A field that is absent or null
// reads as std::nullopt, as OpenAI treats null as "not given"; fields the reader is never
// asked about are ignored, as OpenAI ignores unknown fields.
// Also ParseJsonBody: raw body bytes -> JSON object (UTF-8 checked first).
// Plain functions and a value type; no thread affinity.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::server::openai {

// ParseJsonBody returns the object in `body`, or InvalidArgument: "body is not valid UTF-8 (at
// byte N)", "body is not valid JSON: ...", "body must be a JSON object". Never throws.
absl::StatusOr<boost::json::object> ParseJsonBody(std::string_view body);

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
// otherwise sets *bad_offset (when given) to the first bad byte's offset.
bool IsValidUtf8(std::string_view text, size_t* bad_offset = nullptr);

class FieldReader {
 public:
  explicit FieldReader(const boost::json::object& object) : object_(object) {}

  // The raw value of `name`, or null when absent or null.
  const boost::json::value* Find(std::string_view name) const;

  // Integers: a JSON integer, or a number with an integral value (1.0), in [min, max].
  absl::StatusOr<std::optional<int64_t>> Int(std::string_view name, int64_t min, int64_t max) const;
  // Any finite JSON number in [min, max] (inclusive unless the *_exclusive flag is set).
  absl::StatusOr<std::optional<double>> Number(std::string_view name, double min, double max,
                                               bool min_exclusive = false) const;
  absl::StatusOr<std::optional<bool>> Bool(std::string_view name) const;
  absl::StatusOr<std::optional<std::string>> String(std::string_view name) const;
  // A JSON object (e.g. stream_options, logit_bias).
  absl::StatusOr<const boost::json::object*> Object(std::string_view name) const;
  // A string or a list of strings (stop), at most `max_items`.
  absl::StatusOr<std::optional<std::vector<std::string>>> StringOrStrings(std::string_view name,
                                                                          size_t max_items) const;

 private:
  const boost::json::object& object_;
};

// The JSON value's type in OpenAI's words ("string", "integer", "number", "array", ...).
const char* JsonTypeName(const boost::json::value& value);

// An integral value of `v` (int64, uint64 that fits, or a double with no fraction).
std::optional<int64_t> AsInteger(const boost::json::value& v);

}  // namespace spillway::server::openai
