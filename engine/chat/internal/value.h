// Value: the dynamic value type of the chat-template interpreter, modelled on the Python
// objects jinja2 templates see (None, bool, int, float, str, list/tuple, dict, jinja2's
// Undefined and namespace, callables). Lists and dicts are immutable once built and shared
// between copies; a namespace is the one mutable object (`{% set ns.x = ... %}`).
// Not thread-safe to mutate; a rendered template owns all its values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::engine::chat::internal {

class Value;
class Evaluator;

// jinja2's default Undefined. `hint` is the message of the error raised when the value is used
// in a way that needs a real value, e.g. "'foo' is undefined".
struct Undefined {
  std::string hint;
};
struct None {};

// Values a list or dict holds when flattened (itself, its items, their items, ...): shared
// sub-lists count once per reference, so it bounds the work of printing or comparing it.
using Weight = int64_t;

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;  // only changes how the value prints: (1, 2) rather than [1, 2]
  Weight weight = 1;
};

// An insertion-ordered str -> Value map (Python dicts keep insertion order).
struct DictData {
  std::vector<std::pair<std::string, Value>> items;
  Weight weight = 1;  // set by Value::Dict
  const Value* Find(std::string_view key) const;
  void Set(std::string key, Value value);
};

// jinja2's namespace(): the only mutable object.
struct NamespaceData {
  DictData attrs;
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A built-in function, a bound method (`content.strip`) or a macro.
struct Callable {
  std::string name;
  std::function<absl::StatusOr<Value>(Evaluator&, const CallArgs&)> fn;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() : data_(Undefined{}) {}
  static Value MakeUndefined(std::string hint) { return Value(Undefined{std::move(hint)}); }
  static Value MakeNone() { return Value(None{}); }
  static Value Bool(bool b) { return Value(b); }
  static Value Int(int64_t i) { return Value(i); }
  static Value Float(double d) { return Value(d); }
  static Value String(std::string s) { return Value(std::move(s)); }
  static Value List(std::vector<Value> items, bool is_tuple = false);
  static Value Dict(DictData dict);
  static Value Namespace(DictData attrs);
  static Value Function(std::string name,
                        std::function<absl::StatusOr<Value>(Evaluator&, const CallArgs&)> fn);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  // int, float and bool, as Python's numbers.Number.
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  // REQUIRES: the matching is_*().
  const std::string& undefined_hint() const { return std::get<Undefined>(data_).hint; }
  bool bool_value() const { return std::get<bool>(data_); }
  int64_t int_value() const { return std::get<int64_t>(data_); }
  double float_value() const { return std::get<double>(data_); }
  const std::string& string_value() const { return std::get<std::string>(data_); }
  const ListData& list() const { return *std::get<std::shared_ptr<const ListData>>(data_); }
  const DictData& dict() const { return *std::get<std::shared_ptr<const DictData>>(data_); }
  NamespaceData& ns() const { return *std::get<std::shared_ptr<NamespaceData>>(data_); }
  const Callable& callable() const { return *std::get<std::shared_ptr<const Callable>>(data_); }
  // See Weight; 1 for anything but lists and dicts.
  Weight weight() const;
  // int, bool (as 0/1) or float as a double. REQUIRES: is_number().
  double AsDouble() const;

 private:
  using Storage = std::variant<Undefined, None, bool, int64_t, double, std::string,
                               std::shared_ptr<const ListData>, std::shared_ptr<const DictData>,
                               std::shared_ptr<NamespaceData>, std::shared_ptr<const Callable>>;
  template <typename T>
  explicit Value(T v) : data_(std::move(v)) {}

  Storage data_;
};

// Longest text Repr, ToString and ToJson produce; longer results are cut short (Repr) or fail
// (ToJson), so that printing a value that references itself stays bounded.
inline constexpr size_t kMaxTextBytes = size_t{16} << 20;

// Python truthiness; Undefined is false.
bool Truthy(const Value& v);
// Python's str(v); Undefined prints as "".
std::string ToString(const Value& v);
// Python's repr(v), used for items of printed lists and dicts.
std::string Repr(const Value& v);
// Python's ==, with jinja2's rule that two Undefined values are equal.
bool Equals(const Value& a, const Value& b);
// Python type name for messages: "str", "int", "list", "dict", "NoneType", ...
std::string TypeName(const Value& v);
// Python's < ordering as -1/0/1. Fails (InvalidArgument) for unorderable types.
absl::StatusOr<int> Compare(const Value& a, const Value& b);

struct JsonOptions {
  bool ensure_ascii = false;
  std::string indent;  // used only when has_indent
  bool has_indent = false;
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// Python's json.dumps(v, ...) with `options`; fails for values JSON cannot hold (Undefined,
// callables) and for nesting deeper than 128.
absl::StatusOr<std::string> ToJson(const Value& v, const JsonOptions& options);

}  // namespace spillway::engine::chat::internal
