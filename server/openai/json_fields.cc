#include "server/openai/json_fields.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/string_views.h"
#include "server/openai/api_error.h"

namespace spillway::server::openai {
namespace {

namespace json = boost::json;

absl::Status WrongType(std::string_view name, std::string_view expected, const json::value& v) {
  return InvalidParamError(name, absl::StrCat("'", AbslSv(name), "' must be ", AbslSv(expected),
                                              ", got ", JsonTypeName(v)));
}

std::string RangeText(double min, double max, bool min_exclusive) {
  const bool no_min = min == -std::numeric_limits<double>::infinity();
  const bool no_max = max == std::numeric_limits<double>::infinity();
  if (no_min && no_max) return "finite";
  if (no_max) return absl::StrCat(min_exclusive ? "> " : ">= ", min);
  if (no_min) return absl::StrCat("<= ", max);
  return absl::StrCat("in ", min_exclusive ? "(" : "[", min, ", ", max, "]");
}

}  // namespace

bool IsValidUtf8(std::string_view text, size_t* bad_offset) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      break;
    }
    if (i + len > n) break;
    bool ok = true;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlongs, UTF-16 surrogates and code points past U+10FFFF.
    if (!ok || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      break;
    }
    i += len;
  }
  if (i == n) return true;
  if (bad_offset != nullptr) *bad_offset = i;
  return false;
}

absl::StatusOr<json::object> ParseJsonBody(std::string_view body) {
  size_t bad = 0;
  if (!IsValidUtf8(body, &bad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Request body is not valid UTF-8 (at byte ", bad, ")"));
  }
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 64;
  json::value v = json::parse(body, ec, json::storage_ptr(), options);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("Request body is not valid JSON: ", ec.message()));
  }
  if (!v.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Request body must be a JSON object, got ", JsonTypeName(v)));
  }
  return std::move(v.as_object());
}

const char* JsonTypeName(const json::value& value) {
  switch (value.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "boolean";
    case json::kind::int64:
    case json::kind::uint64:
      return "integer";
    case json::kind::double_:
      return "number";
    case json::kind::string:
      return "string";
    case json::kind::array:
      return "array";
    case json::kind::object:
      return "object";
  }
  return "value";
}

std::optional<int64_t> AsInteger(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    const double d = v.get_double();
    // 2^63 is exactly representable; anything at or past it does not fit.
    if (std::isfinite(d) && std::trunc(d) == d && d >= -9.2233720368547758e18 &&
        d < 9.2233720368547758e18) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

const json::value* FieldReader::Find(std::string_view name) const {
  const json::value* v = object_.if_contains(name);
  if (v == nullptr || v->is_null()) return nullptr;
  return v;
}

absl::StatusOr<std::optional<int64_t>> FieldReader::Int(std::string_view name, int64_t min,
                                                        int64_t max) const {
  const json::value* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return WrongType(name, "an integer", *v);
  std::optional<int64_t> i = AsInteger(*v);
  if (!i.has_value() || *i < min || *i > max) {
    const std::string got = v->is_double() ? absl::StrCat(v->get_double()) : json::serialize(*v);
    return InvalidParamError(name, absl::StrCat("'", AbslSv(name), "' must be an integer in [", min,
                                                ", ", max, "], got ", got));
  }
  return i;
}

absl::StatusOr<std::optional<double>> FieldReader::Number(std::string_view name, double min,
                                                          double max, bool min_exclusive) const {
  const json::value* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return WrongType(name, "a number", *v);
  const double d = v->to_number<double>();
  const bool low = min_exclusive ? !(d > min) : !(d >= min);
  if (!std::isfinite(d) || low || !(d <= max)) {
    return InvalidParamError(name, absl::StrCat("'", AbslSv(name), "' must be ",
                                                RangeText(min, max, min_exclusive), ", got ", d));
  }
  return d;
}

absl::StatusOr<std::optional<bool>> FieldReader::Bool(std::string_view name) const {
  const json::value* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) return WrongType(name, "a boolean", *v);
  return v->get_bool();
}

absl::StatusOr<std::optional<std::string>> FieldReader::String(std::string_view name) const {
  const json::value* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return WrongType(name, "a string", *v);
  return std::string(v->get_string());
}

absl::StatusOr<const json::object*> FieldReader::Object(std::string_view name) const {
  const json::value* v = Find(name);
  if (v == nullptr) return nullptr;
  if (!v->is_object()) return WrongType(name, "an object", *v);
  return &v->get_object();
}

absl::StatusOr<std::optional<std::vector<std::string>>> FieldReader::StringOrStrings(
    std::string_view name, size_t max_items) const {
  const json::value* v = Find(name);
  if (v == nullptr) return std::nullopt;
  std::vector<std::string> out;
  if (v->is_string()) {
    out.emplace_back(v->get_string());
    return out;
  }
  if (!v->is_array()) return WrongType(name, "a string or a list of strings", *v);
  const json::array& a = v->get_array();
  if (a.size() > max_items) {
    return InvalidParamError(name, absl::StrCat("'", AbslSv(name), "' may hold at most ", max_items,
                                                " strings, got ", a.size()));
  }
  for (const json::value& item : a) {
    if (!item.is_string()) return WrongType(name, "a string or a list of strings", item);
    out.emplace_back(item.get_string());
  }
  return out;
}

}  // namespace spillway::server::openai
