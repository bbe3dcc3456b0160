// GetAttr, GetItem, slicing, iteration, membership, Python methods and global functions.
#include <algorithm>
#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/internal/builtins.h"
#include "engine/chat/internal/builtins_util.h"
#include "engine/chat/internal/evaluator.h"
#include "engine/chat/internal/text.h"

namespace spillway::engine::chat::internal {
namespace {

// Most items split() or iterating a string may produce (bounds memory for huge strings).
constexpr int64_t kMaxItems = 1'000'000;

absl::Status TooManyItems() {
  return absl::ResourceExhaustedError(
      absl::StrCat("template made a sequence of more than ", kMaxItems, " items"));
}

// jinja2's object_type_repr, used in Undefined messages.
std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  return absl::StrCat(TypeName(v), " object");
}

Value MissingAttr(const Value& obj, const std::string& name) {
  return Value::MakeUndefined(
      absl::StrCat("'", ObjectTypeRepr(obj), "' has no attribute '", name, "'"));
}

using Method = absl::StatusOr<Value> (*)(const Value& self, const CallArgs& args);

Value Bind(const Value& self, const std::string& name, Method method) {
  return Value::Function(
      name, [self, method](Evaluator&, const CallArgs& args) { return method(self, args); });
}

// ---- str methods ----

absl::StatusOr<Value> StrStrip(const Value& self, const CallArgs& args, bool left, bool right) {
  const Value* chars = Arg(args, 0, "chars");
  if (chars != nullptr && !chars->is_none()) {
    SPW_ASSIGN_OR_RETURN(std::string set, StringArg(*chars, "strip"));
    return Value::String(PyStrip(self.string_value(), &set, left, right));
  }
  return Value::String(PyStrip(self.string_value(), nullptr, left, right));
}

absl::StatusOr<Value> StrSplit(const Value& self, const CallArgs& args) {
  const Value* sep = Arg(args, 0, "sep");
  const Value* maxsplit = Arg(args, 1, "maxsplit");
  int64_t limit = -1;
  if (maxsplit != nullptr) {
    SPW_ASSIGN_OR_RETURN(limit, IntArg(*maxsplit, "split"));
  }
  std::vector<std::string> parts;
  int64_t bounded = limit < 0 || limit > kMaxItems ? kMaxItems : limit;
  if (sep != nullptr && !sep->is_none()) {
    SPW_ASSIGN_OR_RETURN(std::string s, StringArg(*sep, "split"));
    if (s.empty()) return absl::InvalidArgumentError("empty separator");
    parts = PySplit(self.string_value(), &s, bounded);
  } else {
    parts = PySplit(self.string_value(), nullptr, bounded);
  }
  if (static_cast<int64_t>(parts.size()) > kMaxItems) return TooManyItems();
  std::vector<Value> items;
  for (auto& p : parts) items.push_back(Value::String(std::move(p)));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> StrAffix(const Value& self, const CallArgs& args, bool prefix) {
  const Value* affix = Arg(args, 0, prefix ? "prefix" : "suffix");
  if (affix == nullptr) return absl::InvalidArgumentError("startswith/endswith needs an argument");
  std::vector<Value> options;
  if (affix->is_list() && affix->list().is_tuple) {
    options = affix->list().items;
  } else {
    options.push_back(*affix);
  }
  const std::string& s = self.string_value();
  for (const Value& option : options) {
    SPW_ASSIGN_OR_RETURN(std::string a, StringArg(option, prefix ? "startswith" : "endswith"));
    bool hit = a.size() <= s.size() && (prefix ? s.compare(0, a.size(), a) == 0
                                               : s.compare(s.size() - a.size(), a.size(), a) == 0);
    if (hit) return Value::Bool(true);
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> StrReplace(const Value& self, const CallArgs& args) {
  const Value* from = Arg(args, 0, "old");
  const Value* to = Arg(args, 1, "new");
  const Value* count = Arg(args, 2, "count");
  if (from == nullptr || to == nullptr)
    return absl::InvalidArgumentError("replace needs 2 arguments");
  SPW_ASSIGN_OR_RETURN(std::string f, StringArg(*from, "replace"));
  SPW_ASSIGN_OR_RETURN(std::string t, StringArg(*to, "replace"));
  int64_t n = -1;
  if (count != nullptr) {
    SPW_ASSIGN_OR_RETURN(n, IntArg(*count, "replace"));
  }
  std::string out = PyReplace(self.string_value(), f, t, n);
  return Value::String(std::move(out));
}

absl::StatusOr<Value> StrFindOrCount(const Value& self, const CallArgs& args, bool count) {
  const Value* sub = Arg(args, 0, "sub");
  if (sub == nullptr) return absl::InvalidArgumentError("find/count needs an argument");
  SPW_ASSIGN_OR_RETURN(std::string needle, StringArg(*sub, count ? "count" : "find"));
  const std::string& s = self.string_value();
  if (!count) {
    size_t pos = s.find(needle);
    return Value::Int(pos == std::string::npos ? -1 : CodePointCount(s.substr(0, pos)));
  }
  if (needle.empty()) return Value::Int(CodePointCount(s) + 1);
  int64_t n = 0;
  for (size_t pos = s.find(needle); pos != std::string::npos;
       pos = s.find(needle, pos + needle.size())) {
    ++n;
  }
  return Value::Int(n);
}

absl::StatusOr<Value> StrJoin(const Value& self, const CallArgs& args) {
  const Value* iterable = Arg(args, 0, "iterable");
  if (iterable == nullptr) return absl::InvalidArgumentError("join needs an argument");
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*iterable));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence item ", i, ": expected str instance, ", TypeName(items[i]), " found"));
    }
    if (i > 0) out += self.string_value();
    out += items[i].string_value();
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> StrPredicate(const Value& self, const std::string& name) {
  std::vector<char32_t> cps = DecodeUtf8(self.string_value());
  if (cps.empty()) return Value::Bool(false);
  bool all = true;
  for (char32_t c : cps) {
    bool digit = c >= '0' && c <= '9';
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (name == "isdigit") all = all && digit;
    if (name == "isalpha") all = all && alpha;
    if (name == "isalnum") all = all && (alpha || digit);
    if (name == "isspace") all = all && IsPyWhitespace(c);
  }
  return Value::Bool(all);
}

std::optional<Value> StrMethod(const Value& self, const std::string& name) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool left = name != "rstrip";
    bool right = name != "lstrip";
    return Value::Function(name, [self, left, right](Evaluator&, const CallArgs& args) {
      return StrStrip(self, args, left, right);
    });
  }
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return Value::Function(name, [self, prefix](Evaluator&, const CallArgs& args) {
      return StrAffix(self, args, prefix);
    });
  }
  if (name == "find" || name == "count") {
    bool count = name == "count";
    return Value::Function(name, [self, count](Evaluator&, const CallArgs& args) {
      return StrFindOrCount(self, args, count);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace") {
    return Value::Function(
        name, [self, name](Evaluator&, const CallArgs&) { return StrPredicate(self, name); });
  }
  if (name == "split") return Bind(self, name, StrSplit);
  if (name == "replace") return Bind(self, name, StrReplace);
  if (name == "join") return Bind(self, name, StrJoin);
  using Transform = std::string (*)(std::string_view);
  Transform transform = name == "upper"        ? PyUpper
                        : name == "lower"      ? PyLower
                        : name == "title"      ? PyTitle
                        : name == "capitalize" ? PyCapitalize
                                               : nullptr;
  if (transform != nullptr) {
    return Value::Function(name, [self, transform](Evaluator&, const CallArgs&) {
      return absl::StatusOr<Value>(Value::String(transform(self.string_value())));
    });
  }
  return std::nullopt;
}

// ---- dict and list methods ----

absl::StatusOr<Value> DictItems(const Value& self, const CallArgs&) {
  std::vector<Value> items;
  for (const auto& [key, value] : self.dict().items) {
    items.push_back(Value::List({Value::String(key), value}, /*is_tuple=*/true));
  }
  return Value::List(std::move(items));
}

absl::StatusOr<Value> DictKeys(const Value& self, const CallArgs&) {
  std::vector<Value> items;
  for (const auto& entry : self.dict().items) items.push_back(Value::String(entry.first));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> DictValues(const Value& self, const CallArgs&) {
  std::vector<Value> items;
  for (const auto& entry : self.dict().items) items.push_back(entry.second);
  return Value::List(std::move(items));
}

absl::StatusOr<Value> DictGet(const Value& self, const CallArgs& args) {
  const Value* key = Arg(args, 0, "key");
  const Value* fallback = Arg(args, 1, "default");
  if (key == nullptr) return absl::InvalidArgumentError("get expected at least 1 argument");
  if (key->is_string()) {
    if (const Value* found = self.dict().Find(key->string_value())) return *found;
  }
  return fallback != nullptr ? *fallback : Value::MakeNone();
}

absl::StatusOr<Value> ListIndexOrCount(const Value& self, const CallArgs& args, bool count) {
  const Value* needle = Arg(args, 0, "value");
  if (needle == nullptr) return absl::InvalidArgumentError("index/count needs an argument");
  int64_t n = 0;
  const auto& items = self.list().items;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!Equals(items[i], *needle)) continue;
    if (!count) return Value::Int(static_cast<int64_t>(i));
    ++n;
  }
  if (!count) return absl::InvalidArgumentError(absl::StrCat(Repr(*needle), " is not in list"));
  return Value::Int(n);
}

bool IsMutatingMethod(const std::string& name) {
  static const char* const kNames[] = {"append", "extend",     "insert",  "pop",  "remove", "clear",
                                       "update", "setdefault", "popitem", "sort", "reverse"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

std::optional<Value> ContainerMethod(const Value& self, const std::string& name) {
  if (self.is_dict()) {
    if (name == "items") return Bind(self, name, DictItems);
    if (name == "keys") return Bind(self, name, DictKeys);
    if (name == "values") return Bind(self, name, DictValues);
    if (name == "get") return Bind(self, name, DictGet);
  }
  if (self.is_list() && (name == "index" || name == "count")) {
    bool count = name == "count";
    return Value::Function(name, [self, count](Evaluator&, const CallArgs& args) {
      return ListIndexOrCount(self, args, count);
    });
  }
  if ((self.is_dict() || self.is_list()) && IsMutatingMethod(name)) {
    std::string message =
        absl::StrCat("access to attribute '", name, "' of '", TypeName(self), "' object is unsafe");
    return Value::Function(name, [message](Evaluator&, const CallArgs&) {
      return absl::StatusOr<Value>(absl::InvalidArgumentError(message));
    });
  }
  return std::nullopt;
}

// ---- global functions ----

absl::StatusOr<Value> Range(Evaluator& ev, const CallArgs& args) {
  std::vector<int64_t> bounds;
  for (const Value& v : args.positional) {
    SPW_ASSIGN_OR_RETURN(int64_t i, IntArg(v, "range"));
    bounds.push_back(i);
  }
  if (bounds.empty() || bounds.size() > 3) {
    return absl::InvalidArgumentError("range expected 1 to 3 integer arguments");
  }
  int64_t start = bounds.size() == 1 ? 0 : bounds[0];
  int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
  int64_t step = bounds.size() == 3 ? bounds[2] : 1;
  if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox MAX_RANGE
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(items.size()) >= kMaxRange) {
      return absl::InvalidArgumentError(
          "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    items.push_back(Value::Int(i));
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  SPW_RETURN_IF_ERROR(ev.Tick());
  return Value::List(std::move(items));
}

absl::StatusOr<Value> MakeDictLike(const CallArgs& args, bool is_namespace) {
  DictData dict;
  if (args.positional.size() > 1) return absl::InvalidArgumentError("expected at most 1 argument");
  if (!args.positional.empty()) {
    if (!args.positional[0].is_dict()) {
      return absl::InvalidArgumentError("expected a mapping as the positional argument");
    }
    dict = args.positional[0].dict();
  }
  for (const auto& [key, value] : args.keyword) dict.Set(key, value);
  return is_namespace ? Value::Namespace(std::move(dict)) : Value::Dict(std::move(dict));
}

absl::StatusOr<Value> StrftimeNow(Evaluator& ev, const CallArgs& args) {
  const Value* format = Arg(args, 0, "format");
  if (format == nullptr) return absl::InvalidArgumentError("strftime_now needs a format");
  SPW_ASSIGN_OR_RETURN(std::string fmt, StringArg(*format, "strftime_now"));
  std::tm tm{};
  if (ev.now().has_value()) {
    tm = *ev.now();
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  if (fmt.size() > 256) return absl::InvalidArgumentError("strftime_now format is too long");
  char buf[1024];
  size_t n = fmt.empty() ? 0 : std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
  return Value::String(std::string(buf, n));
}

}  // namespace

absl::Status UndefinedError(const Value& v) {
  return absl::InvalidArgumentError(v.undefined_hint().empty() ? "value is undefined"
                                                               : v.undefined_hint());
}

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.is_string()) {
    if (std::optional<Value> method = StrMethod(obj, name)) return *method;
  }
  if (std::optional<Value> method = ContainerMethod(obj, name)) return *method;
  if (obj.is_dict()) {
    if (const Value* found = obj.dict().Find(name)) return *found;
  }
  if (obj.is_namespace()) {
    if (const Value* found = obj.ns().attrs.Find(name)) return *found;
  }
  return MissingAttr(obj, name);
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.is_dict() && key.is_string()) {
    if (const Value* found = obj.dict().Find(key.string_value())) return *found;
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t index = key.is_bool() ? key.bool_value() : key.int_value();
    if (obj.is_list()) {
      const auto& items = obj.list().items;
      int64_t size = static_cast<int64_t>(items.size());
      if (index < 0) index += size;
      if (index >= 0 && index < size) return items[index];
    } else {
      std::vector<char32_t> cps = DecodeUtf8(obj.string_value());
      int64_t size = static_cast<int64_t>(cps.size());
      if (index < 0) index += size;
      if (index >= 0 && index < size) return Value::String(EncodeUtf8(cps, index, index + 1));
    }
    return Value::MakeUndefined(absl::StrCat(ObjectTypeRepr(obj), " has no element ", Repr(key)));
  }
  if (key.is_string()) return GetAttr(obj, key.string_value());
  return Value::MakeUndefined(absl::StrCat(ObjectTypeRepr(obj), " has no element ", Repr(key)));
}

absl::StatusOr<Value> SliceValue(const Value& obj, const Value* start, const Value* stop,
                                 const Value* step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (!obj.is_list() && !obj.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
  auto bound = [](const Value* v, const char* what) -> absl::StatusOr<std::optional<int64_t>> {
    if (v == nullptr || v->is_none()) return std::optional<int64_t>();
    SPW_ASSIGN_OR_RETURN(int64_t i, IntArg(*v, what));
    return std::optional<int64_t>(i);
  };
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> b, bound(start, "slice"));
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> e, bound(stop, "slice"));
  SPW_ASSIGN_OR_RETURN(std::optional<int64_t> s, bound(step, "slice"));
  int64_t st = s.value_or(1);
  if (st == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  std::vector<char32_t> cps;
  if (obj.is_string()) cps = DecodeUtf8(obj.string_value());
  int64_t size = obj.is_string() ? static_cast<int64_t>(cps.size())
                                 : static_cast<int64_t>(obj.list().items.size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v.has_value()) return fallback;
    int64_t i = *v;
    if (i < 0) {
      i += size;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= size) {
      i = st < 0 ? size - 1 : size;
    }
    return i;
  };
  int64_t first = adjust(b, st < 0 ? size - 1 : 0);
  int64_t last = adjust(e, st < 0 ? -1 : size);
  std::vector<int64_t> indices;
  for (int64_t i = first; st > 0 ? i < last : i > last; i += st) indices.push_back(i);
  if (obj.is_string()) {
    std::string out;
    for (int64_t i : indices) AppendUtf8(cps[i], out);
    return Value::String(std::move(out));
  }
  std::vector<Value> items;
  for (int64_t i : indices) items.push_back(obj.list().items[i]);
  return Value::List(std::move(items), obj.list().is_tuple);
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kList:
      return v.list().items;
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& entry : v.dict().items) keys.push_back(Value::String(entry.first));
      return keys;
    }
    case Value::Kind::kString: {
      if (CodePointCount(v.string_value()) > kMaxItems) return TooManyItems();
      std::vector<Value> chars;
      std::string one;
      for (char32_t c : DecodeUtf8(v.string_value())) {
        one.clear();
        AppendUtf8(c, one);
        chars.push_back(Value::String(one));
      }
      return chars;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.string_value().find(item.string_value()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.list().items) {
        if (Equals(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return item.is_string() && container.dict().Find(item.string_value()) != nullptr;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
  }
}

std::optional<Value> LookupGlobal(const std::string& name) {
  if (name == "range") return Value::Function(name, Range);
  if (name == "namespace" || name == "dict") {
    bool is_namespace = name == "namespace";
    return Value::Function(
        name, [is_namespace](Evaluator& ev, const CallArgs& args) -> absl::StatusOr<Value> {
          absl::StatusOr<Value> made = MakeDictLike(args, is_namespace);
          if (made.ok() && is_namespace) ev.TrackNamespace(*made);
          if (made.ok()) SPW_RETURN_IF_ERROR(ev.CheckWeight(*made));
          return made;
        });
  }
  if (name == "raise_exception") {
    return Value::Function(name, [](Evaluator& ev, const CallArgs& args) -> absl::StatusOr<Value> {
      const Value* message = Arg(args, 0, "message");
      return ev.Raise(message != nullptr ? ToString(*message) : "");
    });
  }
  if (name == "strftime_now") return Value::Function(name, StrftimeNow);
  return std::nullopt;
}

}  // namespace spillway::engine::chat::internal
