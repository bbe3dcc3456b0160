#include "engine/chat/internal/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/internal/text.h"

namespace spillway::engine::chat::internal {
namespace {

constexpr int kMaxNesting = 128;

void AppendRepr(const Value& v, int depth, std::string& out);

void AppendItemsRepr(const std::vector<Value>& items, int depth, std::string& out) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    AppendRepr(items[i], depth + 1, out);
  }
}

void AppendDictRepr(const DictData& dict, int depth, std::string& out) {
  out += "{";
  for (size_t i = 0; i < dict.items.size(); ++i) {
    if (i > 0) out += ", ";
    out += PyStrRepr(dict.items[i].first);
    out += ": ";
    AppendRepr(dict.items[i].second, depth + 1, out);
  }
  out += "}";
}

void AppendRepr(const Value& v, int depth, std::string& out) {
  if (out.size() > kMaxTextBytes) return;
  if (depth > kMaxNesting) {
    out += "...";
    return;
  }
  switch (v.kind()) {
    case Value::Kind::kString:
      out += PyStrRepr(v.string_value());
      return;
    case Value::Kind::kList: {
      const ListData& list = v.list();
      out += list.is_tuple ? "(" : "[";
      AppendItemsRepr(list.items, depth, out);
      if (list.is_tuple && list.items.size() == 1) out += ",";
      out += list.is_tuple ? ")" : "]";
      return;
    }
    case Value::Kind::kDict:
      AppendDictRepr(v.dict(), depth, out);
      return;
    case Value::Kind::kNamespace:
      out += "<Namespace ";
      AppendDictRepr(v.ns().attrs, depth, out);
      out += ">";
      return;
    default:
      out += ToString(v);
  }
}

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string& out) {
  out.push_back('"');
  for (char32_t c : DecodeUtf8(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    char buf[16];
    if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
      if (c >= 0x10000) {
        char32_t u = c - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 | (u >> 10)),
                      static_cast<unsigned>(0xDC00 | (u & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      }
      out += buf;
    } else {
      AppendUtf8(c, out);
    }
  }
  out.push_back('"');
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return PyFloatRepr(d);
}

absl::Status AppendJson(const Value& v, const JsonOptions& options, int depth, std::string& out);

void AppendNewline(const JsonOptions& options, int depth, std::string& out) {
  out.push_back('\n');
  for (int i = 0; i < depth; ++i) out += options.indent;
}

absl::Status AppendJsonList(const std::vector<Value>& items, const JsonOptions& options, int depth,
                            std::string& out) {
  if (items.empty()) {
    out += "[]";
    return absl::OkStatus();
  }
  out += "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += options.item_separator;
    if (options.has_indent) AppendNewline(options, depth + 1, out);
    absl::Status status = AppendJson(items[i], options, depth + 1, out);
    if (!status.ok()) return status;
  }
  if (options.has_indent) AppendNewline(options, depth, out);
  out += "]";
  return absl::OkStatus();
}

absl::Status AppendJsonDict(const DictData& dict, const JsonOptions& options, int depth,
                            std::string& out) {
  if (dict.items.empty()) {
    out += "{}";
    return absl::OkStatus();
  }
  std::vector<const std::pair<std::string, Value>*> entries;
  for (const auto& entry : dict.items) entries.push_back(&entry);
  if (options.sort_keys) {
    std::stable_sort(entries.begin(), entries.end(),
                     [](const auto* a, const auto* b) { return a->first < b->first; });
  }
  out += "{";
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += options.item_separator;
    if (options.has_indent) AppendNewline(options, depth + 1, out);
    AppendJsonString(entries[i]->first, options.ensure_ascii, out);
    out += options.key_separator;
    absl::Status status = AppendJson(entries[i]->second, options, depth + 1, out);
    if (!status.ok()) return status;
  }
  if (options.has_indent) AppendNewline(options, depth, out);
  out += "}";
  return absl::OkStatus();
}

absl::Status AppendJson(const Value& v, const JsonOptions& options, int depth, std::string& out) {
  if (out.size() > kMaxTextBytes) {
    return absl::ResourceExhaustedError("tojson: the JSON text is too long");
  }
  if (depth > kMaxNesting) {
    return absl::InvalidArgumentError("tojson: value is nested too deeply (circular reference?)");
  }
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      out += v.bool_value() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      out += std::to_string(v.int_value());
      return absl::OkStatus();
    case Value::Kind::kFloat:
      out += JsonFloat(v.float_value());
      return absl::OkStatus();
    case Value::Kind::kString:
      AppendJsonString(v.string_value(), options.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList:
      return AppendJsonList(v.list().items, options, depth, out);
    case Value::Kind::kDict:
      return AppendJsonDict(v.dict(), options, depth, out);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
  }
}

}  // namespace

const Value* DictData::Find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void DictData::Set(std::string key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

namespace {
Weight AddWeight(Weight total, Weight more) {
  constexpr Weight kCap = Weight{1} << 60;
  return total > kCap - more ? kCap : total + more;
}
}  // namespace

Value Value::List(std::vector<Value> items, bool is_tuple) {
  auto data = std::make_shared<ListData>();
  data->items = std::move(items);
  data->is_tuple = is_tuple;
  for (const Value& item : data->items) data->weight = AddWeight(data->weight, item.weight());
  return Value(std::shared_ptr<const ListData>(std::move(data)));
}

Value Value::Dict(DictData dict) {
  dict.weight = 1;
  for (const auto& entry : dict.items) dict.weight = AddWeight(dict.weight, entry.second.weight());
  return Value(std::shared_ptr<const DictData>(std::make_shared<DictData>(std::move(dict))));
}

Weight Value::weight() const {
  if (is_list()) return list().weight;
  if (is_dict()) return dict().weight;
  return 1;
}

Value Value::Namespace(DictData attrs) {
  auto data = std::make_shared<NamespaceData>();
  data->attrs = std::move(attrs);
  return Value(std::move(data));
}

Value Value::Function(std::string name,
                      std::function<absl::StatusOr<Value>(Evaluator&, const CallArgs&)> fn) {
  auto data = std::make_shared<Callable>();
  data->name = std::move(name);
  data->fn = std::move(fn);
  return Value(std::shared_ptr<const Callable>(std::move(data)));
}

double Value::AsDouble() const {
  if (is_float()) return float_value();
  if (is_bool()) return bool_value() ? 1.0 : 0.0;
  return static_cast<double>(int_value());
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.bool_value();
    case Value::Kind::kInt:
      return v.int_value() != 0;
    case Value::Kind::kFloat:
      return v.float_value() != 0.0;
    case Value::Kind::kString:
      return !v.string_value().empty();
    case Value::Kind::kList:
      return !v.list().items.empty();
    case Value::Kind::kDict:
      return !v.dict().items.empty();
    default:
      return true;
  }
}

std::string ToString(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.bool_value() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.int_value());
    case Value::Kind::kFloat:
      return PyFloatRepr(v.float_value());
    case Value::Kind::kString:
      return v.string_value();
    case Value::Kind::kCallable:
      return "<function " + v.callable().name + ">";
    default: {
      std::string out;
      AppendRepr(v, 0, out);
      return out;
    }
  }
}

std::string Repr(const Value& v) {
  std::string out;
  AppendRepr(v, 0, out);
  return out;
}

bool Equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.AsDouble() == b.AsDouble();
    auto as_int = [](const Value& v) {
      return v.is_bool() ? int64_t{v.bool_value()} : v.int_value();
    };
    return as_int(a) == as_int(b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.string_value() == b.string_value();
    case Value::Kind::kList: {
      const auto& x = a.list().items;
      const auto& y = b.list().items;
      if (x.size() != y.size() || a.list().is_tuple != b.list().is_tuple) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!Equals(x[i], y[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const auto& x = a.dict();
      const auto& y = b.dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [key, value] : x.items) {
        const Value* other = y.Find(key);
        if (other == nullptr || !Equals(value, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
      return &a.ns() == &b.ns();
    case Value::Kind::kCallable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return v.list().is_tuple ? "tuple" : "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kCallable:
      return "function";
  }
  return "object";
}

absl::StatusOr<int> Compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      double x = a.AsDouble();
      double y = b.AsDouble();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    int64_t x = a.is_bool() ? a.bool_value() : a.int_value();
    int64_t y = b.is_bool() ? b.bool_value() : b.int_value();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.string_value().compare(b.string_value());  // UTF-8 byte order = code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_list() && b.is_list() && a.list().is_tuple == b.list().is_tuple) {
    const auto& x = a.list().items;
    const auto& y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (Equals(x[i], y[i])) continue;
      return Compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '",
                                                 TypeName(a), "' and '", TypeName(b), "'"));
}

absl::StatusOr<std::string> ToJson(const Value& v, const JsonOptions& options) {
  std::string out;
  absl::Status status = AppendJson(v, options, 0, out);
  if (!status.ok()) return status;
  return out;
}

}  // namespace spillway::engine::chat::internal
