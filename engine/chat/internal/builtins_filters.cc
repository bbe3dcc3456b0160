// jinja2's filters and tests, as HF transformers' sandboxed environment provides them.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/internal/builtins.h"
#include "engine/chat/internal/builtins_util.h"
#include "engine/chat/internal/evaluator.h"
#include "engine/chat/internal/text.h"

namespace spillway::engine::chat::internal {
namespace {

// Arguments after the filtered value, as a CallArgs without the first `skip` positionals.
CallArgs Rest(const CallArgs& args, size_t skip) {
  CallArgs rest;
  for (size_t i = skip; i < args.positional.size(); ++i)
    rest.positional.push_back(args.positional[i]);
  rest.keyword = args.keyword;
  return rest;
}

absl::StatusOr<Value> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Value::Int(0);
    case Value::Kind::kString:
      return Value::Int(CodePointCount(v.string_value()));
    case Value::Kind::kList:
      return Value::Int(static_cast<int64_t>(v.list().items.size()));
    case Value::Kind::kDict:
      return Value::Int(static_cast<int64_t>(v.dict().items.size()));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False); unlike jinja2's own filter it does not escape HTML characters.
absl::StatusOr<Value> ToJsonFilter(const Value& v, const CallArgs& args) {
  JsonOptions options;
  if (const Value* a = Arg(args, 0, "ensure_ascii")) options.ensure_ascii = Truthy(*a);
  if (const Value* indent = Arg(args, 1, "indent"); indent != nullptr && !indent->is_none()) {
    options.has_indent = true;
    options.item_separator.assign(1, ',');  // json.dumps drops the space when indenting
    if (indent->is_string()) {
      options.indent = indent->string_value();
    } else {
      SPW_ASSIGN_OR_RETURN(int64_t width, IntArg(*indent, "tojson indent"));
      options.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(width, 0, 64)), ' ');
    }
  }
  if (const Value* sep = Arg(args, 2, "separators"); sep != nullptr && !sep->is_none()) {
    if (!sep->is_list() || sep->list().items.size() != 2 || !sep->list().items[0].is_string() ||
        !sep->list().items[1].is_string()) {
      return absl::InvalidArgumentError("tojson: separators must be a pair of strings");
    }
    options.item_separator = sep->list().items[0].string_value();
    options.key_separator = sep->list().items[1].string_value();
  }
  if (const Value* sort = Arg(args, 3, "sort_keys")) options.sort_keys = Truthy(*sort);
  SPW_ASSIGN_OR_RETURN(std::string json, ToJson(v, options));
  return Value::String(std::move(json));
}

// Python's int(str): optional sign, digits and underscores, surrounding whitespace.
std::optional<int64_t> ParsePyInt(const std::string& text) {
  std::string s = PyStrip(text, nullptr, true, true);
  std::string digits;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) digits.push_back(s[i++]);
  if (i == s.size()) return std::nullopt;
  for (; i < s.size(); ++i) {
    if (s[i] >= '0' && s[i] <= '9') {
      digits.push_back(s[i]);
    } else if (s[i] != '_' || i + 1 == s.size() || digits.empty()) {
      return std::nullopt;
    }
  }
  errno = 0;
  char* end = nullptr;
  long long value = std::strtoll(digits.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

std::optional<double> ParsePyFloat(const std::string& text) {
  std::string s = PyStrip(text, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double value = std::strtod(s.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return value;
}

absl::StatusOr<Value> IntFilter(const Value& v, const CallArgs& args) {
  const Value* fallback = Arg(args, 0, "default");
  Value def = fallback != nullptr ? *fallback : Value::Int(0);
  if (v.is_int()) return v;
  if (v.is_bool()) return Value::Int(v.bool_value());
  if (v.is_float()) {
    double d = v.float_value();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return def;
    return Value::Int(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    if (std::optional<int64_t> i = ParsePyInt(v.string_value())) return Value::Int(*i);
    std::optional<double> d = ParsePyFloat(v.string_value());
    if (d.has_value() && std::isfinite(*d) && std::fabs(*d) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(*d));
    }
  }
  return def;
}

absl::StatusOr<Value> FloatFilter(const Value& v, const CallArgs& args) {
  const Value* fallback = Arg(args, 0, "default");
  Value def = fallback != nullptr ? *fallback : Value::Float(0.0);
  if (v.is_number()) return Value::Float(v.AsDouble());
  if (v.is_string()) {
    if (std::optional<double> d = ParsePyFloat(v.string_value())) return Value::Float(*d);
  }
  return def;
}

// jinja2's attribute lookup for selectattr/map: "a.b" walks nested attributes, integers index.
absl::StatusOr<Value> AttributePath(const Value& item, const std::string& path) {
  Value v = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric) {
      SPW_ASSIGN_OR_RETURN(v, GetItem(v, Value::Int(std::atoll(part.c_str()))));
    } else {
      SPW_ASSIGN_OR_RETURN(v, GetItem(v, Value::String(part)));
    }
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

// select/reject/selectattr/rejectattr.
absl::StatusOr<Value> SelectFilter(Evaluator& ev, const Value& seq, const CallArgs& args,
                                   bool by_attribute, bool keep_when) {
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    const Value* attr = Arg(args, next++, "attribute");
    if (attr == nullptr) return absl::InvalidArgumentError("selectattr needs an attribute name");
    SPW_ASSIGN_OR_RETURN(attribute, StringArg(*attr, "selectattr"));
  }
  std::string test;
  if (next < args.positional.size()) {
    SPW_ASSIGN_OR_RETURN(test, StringArg(args.positional[next], "select test"));
    ++next;
  }
  CallArgs test_args = Rest(args, next);
  test_args.keyword.clear();
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(seq));
  std::vector<Value> kept;
  for (Value& item : items) {
    SPW_RETURN_IF_ERROR(ev.Tick());
    Value subject = item;
    if (by_attribute) {
      SPW_ASSIGN_OR_RETURN(subject, AttributePath(item, attribute));
    }
    bool pass = Truthy(subject);
    if (!test.empty()) {
      SPW_ASSIGN_OR_RETURN(pass, ApplyTest(ev, test, subject, test_args));
    }
    if (pass == keep_when) kept.push_back(std::move(item));
  }
  return Value::List(std::move(kept));
}

absl::StatusOr<Value> MapFilter(Evaluator& ev, const Value& seq, const CallArgs& args) {
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(seq));
  std::vector<Value> out;
  const Value* attribute = nullptr;
  for (const auto& [key, value] : args.keyword) {
    if (key == "attribute") attribute = &value;
  }
  const Value* fallback = nullptr;
  for (const auto& [key, value] : args.keyword) {
    if (key == "default") fallback = &value;
  }
  for (const Value& item : items) {
    SPW_RETURN_IF_ERROR(ev.Tick());
    if (attribute != nullptr) {
      SPW_ASSIGN_OR_RETURN(std::string path, StringArg(*attribute, "map"));
      SPW_ASSIGN_OR_RETURN(Value v, AttributePath(item, path));
      out.push_back(v.is_undefined() && fallback != nullptr ? *fallback : v);
    } else {
      if (args.positional.empty()) return absl::InvalidArgumentError("map needs a filter name");
      SPW_ASSIGN_OR_RETURN(std::string filter, StringArg(args.positional[0], "map"));
      CallArgs rest = Rest(args, 1);
      SPW_ASSIGN_OR_RETURN(Value v, ApplyFilter(ev, filter, item, rest));
      out.push_back(std::move(v));
    }
  }
  return Value::List(std::move(out));
}

std::vector<std::string> SplitLines(const std::string& s) {
  std::vector<std::string> lines;
  std::vector<char32_t> cps = DecodeUtf8(s);
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    char32_t c = cps[i];
    bool breaks = c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0x1C || c == 0x1D ||
                  c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!breaks) continue;
    lines.push_back(EncodeUtf8(cps, start, i));
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < cps.size()) lines.push_back(EncodeUtf8(cps, start, cps.size()));
  return lines;
}

absl::StatusOr<Value> IndentFilter(const Value& v, const CallArgs& args) {
  std::string indention = "    ";
  if (const Value* width = Arg(args, 0, "width")) {
    if (width->is_string()) {
      indention = width->string_value();
    } else {
      SPW_ASSIGN_OR_RETURN(int64_t w, IntArg(*width, "indent"));
      indention = std::string(static_cast<size_t>(std::clamp<int64_t>(w, 0, 256)), ' ');
    }
  }
  const Value* first = Arg(args, 1, "first");
  const Value* blank = Arg(args, 2, "blank");
  std::vector<std::string> lines = SplitLines(ToString(v) + "\n");
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    bool indent = i > 0 && (!lines[i].empty() || (blank != nullptr && Truthy(*blank)));
    if (indent) out += indention;
    out += lines[i];
  }
  if (first != nullptr && Truthy(*first)) out = indention + out;
  return Value::String(std::move(out));
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<Value> FirstOrLast(const Value& v, bool first) {
  if (v.is_string() || v.is_list() || v.is_dict() || v.is_undefined()) {
    SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    if (!items.empty()) return first ? items.front() : items.back();
    return Value::MakeUndefined(first ? "No first item, sequence was empty."
                                      : "No last item, sequence was empty.");
  }
  return absl::InvalidArgumentError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
}

absl::StatusOr<Value> ReverseOrSort(Evaluator& ev, const Value& v, bool sort) {
  if (v.is_string() && !sort) {
    std::vector<char32_t> cps = DecodeUtf8(v.string_value());
    std::reverse(cps.begin(), cps.end());
    return Value::String(EncodeUtf8(cps, 0, cps.size()));
  }
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (!sort) {
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  absl::Status status;
  std::stable_sort(items.begin(), items.end(), [&status](const Value& a, const Value& b) {
    absl::StatusOr<int> c = Compare(a, b);
    if (!c.ok()) status = c.status();
    return c.ok() && *c < 0;
  });
  SPW_RETURN_IF_ERROR(status);
  SPW_RETURN_IF_ERROR(ev.Tick());
  return Value::List(std::move(items));
}

absl::StatusOr<Value> StringFilter(std::string_view name, const Value& value,
                                   const CallArgs& args) {
  std::string s = ToString(value);
  if (name == "trim") {
    const Value* chars = Arg(args, 0, "chars");
    if (chars != nullptr && !chars->is_none()) {
      SPW_ASSIGN_OR_RETURN(std::string set, StringArg(*chars, "trim"));
      return Value::String(PyStrip(s, &set, true, true));
    }
    return Value::String(PyStrip(s, nullptr, true, true));
  }
  if (name == "upper") return Value::String(PyUpper(s));
  if (name == "lower") return Value::String(PyLower(s));
  if (name == "capitalize") return Value::String(PyCapitalize(s));
  if (name == "title") return Value::String(JinjaTitle(s));
  if (name == "string") return Value::String(std::move(s));
  if (name == "escape" || name == "e") return Value::String(HtmlEscape(s));
  // replace
  const Value* from = Arg(args, 0, "old");
  const Value* to = Arg(args, 1, "new");
  const Value* count = Arg(args, 2, "count");
  if (from == nullptr || to == nullptr)
    return absl::InvalidArgumentError("replace needs 2 arguments");
  int64_t n = -1;
  if (count != nullptr && !count->is_none()) {
    SPW_ASSIGN_OR_RETURN(n, IntArg(*count, "replace"));
  }
  return Value::String(PyReplace(s, ToString(*from), ToString(*to), n));
}

absl::StatusOr<Value> JoinFilter(const Value& value, const CallArgs& args) {
  const Value* sep = Arg(args, 0, "d");
  const Value* attribute = Arg(args, 1, "attribute");
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0 && sep != nullptr) out += ToString(*sep);
    Value item = items[i];
    if (attribute != nullptr && !attribute->is_none()) {
      SPW_ASSIGN_OR_RETURN(item, AttributePath(item, ToString(*attribute)));
    }
    out += ToString(item);
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> ItemsFilter(const Value& value) {
  if (value.is_undefined()) return Value::List({});
  if (!value.is_dict()) {
    return absl::InvalidArgumentError("Can only get item pairs from a mapping.");
  }
  std::vector<Value> pairs;
  for (const auto& [key, v] : value.dict().items) {
    pairs.push_back(Value::List({Value::String(key), v}, /*is_tuple=*/true));
  }
  return Value::List(std::move(pairs));
}

constexpr std::string_view kFilters[] = {
    "trim",   "upper",      "lower",      "capitalize", "title",  "string",  "replace", "escape",
    "e",      "length",     "count",      "tojson",     "safe",   "default", "d",       "join",
    "first",  "last",       "int",        "float",      "abs",    "list",    "items",   "select",
    "reject", "selectattr", "rejectattr", "map",        "indent", "reverse", "sort"};
constexpr std::string_view kTests[] = {
    "defined",     "undefined", "none",        "boolean",  "true",    "false",
    "integer",     "float",     "number",      "string",   "mapping", "callable",
    "iterable",    "sequence",  "lower",       "upper",    "odd",     "even",
    "divisibleby", "eq",        "equalto",     "==",       "ne",      "!=",
    "sameas",      "in",        "lt",          "lessthan", "<",       "le",
    "<=",          "gt",        "greaterthan", ">",        "ge",      ">="};

}  // namespace

bool IsKnownFilter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& value,
                                  const CallArgs& args) {
  if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize" ||
      name == "title" || name == "string" || name == "replace" || name == "escape" || name == "e") {
    SPW_ASSIGN_OR_RETURN(Value result, StringFilter(name, value, args));
    SPW_RETURN_IF_ERROR(ev.CheckSize(result.string_value().size()));
    return result;
  }
  if (name == "length" || name == "count") return Length(value);
  if (name == "tojson") {
    SPW_ASSIGN_OR_RETURN(Value json, ToJsonFilter(value, args));
    SPW_RETURN_IF_ERROR(ev.CheckSize(json.string_value().size()));
    return json;
  }
  if (name == "safe") return value;
  if (name == "default" || name == "d") {
    const Value* fallback = Arg(args, 0, "default_value");
    const Value* boolean = Arg(args, 1, "boolean");
    bool use_default =
        value.is_undefined() || (boolean != nullptr && Truthy(*boolean) && !Truthy(value));
    if (!use_default) return value;
    return fallback != nullptr ? *fallback : Value::String("");
  }
  if (name == "join") {
    SPW_ASSIGN_OR_RETURN(Value joined, JoinFilter(value, args));
    SPW_RETURN_IF_ERROR(ev.CheckSize(joined.string_value().size()));
    return joined;
  }
  if (name == "first" || name == "last") return FirstOrLast(value, name == "first");
  if (name == "int") return IntFilter(value, args);
  if (name == "float") return FloatFilter(value, args);
  if (name == "abs") {
    if (value.is_float()) return Value::Float(std::fabs(value.float_value()));
    if (value.is_int() && value.int_value() != INT64_MIN)
      return Value::Int(std::llabs(value.int_value()));
    return absl::InvalidArgumentError(
        absl::StrCat("bad operand type for abs(): '", TypeName(value), "'"));
  }
  if (name == "list") {
    SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
    return Value::List(std::move(items));
  }
  if (name == "items") return ItemsFilter(value);
  if (name == "select" || name == "reject")
    return SelectFilter(ev, value, args, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") {
    return SelectFilter(ev, value, args, true, name == "selectattr");
  }
  if (name == "map") return MapFilter(ev, value, args);
  if (name == "indent") {
    SPW_ASSIGN_OR_RETURN(Value indented, IndentFilter(value, args));
    SPW_RETURN_IF_ERROR(ev.CheckSize(indented.string_value().size()));
    return indented;
  }
  if (name == "reverse" || name == "sort") return ReverseOrSort(ev, value, name == "sort");
  return absl::InvalidArgumentError(absl::StrCat("No filter named '", std::string(name), "'."));
}

absl::StatusOr<bool> ApplyTest(Evaluator& ev, std::string_view name, const Value& value,
                               const CallArgs& args) {
  const Value* other = Arg(args, 0, "other");
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "none") return value.is_none();
  if (name == "boolean") return value.is_bool();
  if (name == "true") return value.is_bool() && value.bool_value();
  if (name == "false") return value.is_bool() && !value.bool_value();
  if (name == "integer") return value.is_int();
  if (name == "float") return value.is_float();
  if (name == "number") return value.is_number();
  if (name == "string") return value.is_string();
  if (name == "mapping") return value.is_dict();
  if (name == "callable") return value.is_callable();
  // Python iter() accepts Undefined (it iterates as empty), as do len() and [] for sequences.
  if (name == "iterable" || name == "sequence") {
    return value.is_string() || value.is_list() || value.is_dict() || value.is_undefined();
  }
  if (name == "lower" || name == "upper") {
    std::string s = ToString(value);
    bool cased = PyUpper(s) != PyLower(s);
    return cased && (name == "lower" ? PyLower(s) == s : PyUpper(s) == s);
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    SPW_ASSIGN_OR_RETURN(int64_t i, IntArg(value, name));
    if (name == "divisibleby") {
      if (other == nullptr) return absl::InvalidArgumentError("divisibleby needs an argument");
      SPW_ASSIGN_OR_RETURN(int64_t d, IntArg(*other, name));
      if (d == 0) return absl::InvalidArgumentError("integer division or modulo by zero");
      return d == -1 || i % d == 0;
    }
    return (i % 2 != 0) == (name == "odd");
  }
  if (other == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("No test named '", std::string(name), "'."));
  }
  if (name == "eq" || name == "equalto" || name == "==") return Equals(value, *other);
  if (name == "ne" || name == "!=") return !Equals(value, *other);
  if (name == "sameas") {
    // Python's `is`: singletons, and the small ints CPython caches (-5..256).
    bool small_int = value.is_int() && value.int_value() >= -5 && value.int_value() <= 256;
    return value.kind() == other->kind() &&
           (value.is_none() || value.is_undefined() ||
            ((value.is_bool() || small_int) && Equals(value, *other)));
  }
  if (name == "in") return Contains(*other, value);
  if (name == "lt" || name == "lessthan" || name == "<" || name == "le" || name == "<=" ||
      name == "gt" || name == "greaterthan" || name == ">" || name == "ge" || name == ">=") {
    if (value.is_undefined()) return UndefinedError(value);
    if (other->is_undefined()) return UndefinedError(*other);
    SPW_ASSIGN_OR_RETURN(int c, Compare(value, *other));
    if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
    if (name == "le" || name == "<=") return c <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
    return c >= 0;
  }
  return absl::InvalidArgumentError(absl::StrCat("No test named '", std::string(name), "'."));
}

}  // namespace spillway::engine::chat::internal
