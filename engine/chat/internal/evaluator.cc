#include "engine/chat/internal/evaluator.h"

#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/internal/builtins.h"

namespace spillway::engine::chat::internal {
namespace {

absl::Status TypeError(const std::string& op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported operand type(s) for ", op, ": '",
                                                 TypeName(a), "' and '", TypeName(b), "'"));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t FloorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

int64_t IntOf(const Value& v) { return v.is_bool() ? int64_t{v.bool_value()} : v.int_value(); }

absl::StatusOr<Value> IntArithmetic(std::string_view op, int64_t x, int64_t y) {
  int64_t r = 0;
  bool overflow = false;
  if (op == "+") {
    overflow = __builtin_add_overflow(x, y, &r);
  } else if (op == "-") {
    overflow = __builtin_sub_overflow(x, y, &r);
  } else if (op == "*") {
    overflow = __builtin_mul_overflow(x, y, &r);
  } else if (op == "//" || op == "%") {
    if (y == 0) return absl::InvalidArgumentError("integer division or modulo by zero");
    if (x == std::numeric_limits<int64_t>::min() && y == -1) {
      overflow = op == "//";
    } else {
      r = op == "//" ? FloorDiv(x, y) : FloorMod(x, y);
    }
  } else if (op == "**") {
    if (y < 0) return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
    r = 1;
    for (int64_t i = 0; i < y && !overflow; ++i) {
      overflow = __builtin_mul_overflow(r, x, &r);
      if (r == 0 || r == 1) break;
    }
    if (!overflow && x == -1) r = (y % 2 == 0) ? 1 : -1;
  }
  if (overflow) return absl::InvalidArgumentError("integer overflow");
  return Value::Int(r);
}

absl::StatusOr<Value> FloatArithmetic(std::string_view op, double x, double y) {
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "**") return Value::Float(std::pow(x, y));
  if (y == 0) return absl::InvalidArgumentError("float division by zero");
  if (op == "/") return Value::Float(x / y);
  double mod = std::fmod(x, y);
  if (mod != 0 && ((mod < 0) != (y < 0))) mod += y;
  if (op == "%") return Value::Float(mod);
  // Python's float floor division, computed from the modulo as CPython's float_divmod does.
  double div = (x - mod) / y;
  double floor_div = std::floor(div);
  if (div - floor_div > 0.5) floor_div += 1.0;
  return Value::Float(floor_div);
}

}  // namespace

Evaluator::Evaluator(const Ast& ast, RenderLimits limits, std::optional<std::tm> now)
    : ast_(ast), limits_(limits), now_(now) {}

absl::StatusOr<std::string> Evaluator::Render(
    std::vector<std::pair<std::string, Value>> variables) {
  frames_.clear();
  frames_.push_back(std::move(variables));
  out_.clear();
  absl::StatusOr<Flow> flow = ExecBody(ast_.body);
  for (const Value& ns : namespaces_) ns.ns().attrs.items.clear();
  namespaces_.clear();
  frames_.clear();
  if (!flow.ok()) {
    if (raised_) return absl::InvalidArgumentError(raised_message_);
    return flow.status();
  }
  return std::move(out_);
}

absl::Status Evaluator::Raise(std::string message) {
  raised_ = true;
  raised_message_ = std::move(message);
  return absl::InvalidArgumentError(raised_message_);
}

absl::Status Evaluator::Tick() {
  if (++steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError(
        absl::StrCat("template rendering exceeded ", limits_.max_steps, " steps"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::CheckSize(size_t bytes) const {
  if (static_cast<int64_t>(bytes) > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "template rendering exceeded the size limit of ", limits_.max_output_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::CheckWeight(const Value& v) const {
  if (v.weight() > limits_.max_value_weight) {
    return absl::ResourceExhaustedError(absl::StrCat("template built a list or dict of more than ",
                                                     limits_.max_value_weight, " values"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::Emit(std::string_view text) {
  SPW_RETURN_IF_ERROR(CheckSize(out_.size() + text.size()));
  out_.append(text);
  return absl::OkStatus();
}

absl::StatusOr<Evaluator::Flow> Evaluator::ExecBody(const StmtList& body) {
  for (const auto& stmt : body) {
    absl::StatusOr<Flow> flow = Exec(*stmt);
    if (!flow.ok()) {
      const absl::Status& s = flow.status();
      if (raised_ || absl::StartsWith(s.message(), "line ")) return s;
      return absl::Status(s.code(), absl::StrCat("line ", stmt->line, ": ", s.message()));
    }
    if (*flow != Flow::kNormal) return *flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Evaluator::Flow> Evaluator::Exec(const Stmt& stmt) {
  SPW_RETURN_IF_ERROR(Tick());
  switch (stmt.kind) {
    case Stmt::Kind::kText:
      SPW_RETURN_IF_ERROR(Emit(stmt.text));
      return Flow::kNormal;
    case Stmt::Kind::kOutput: {
      SPW_ASSIGN_OR_RETURN(Value v, Eval(*stmt.expr));
      SPW_RETURN_IF_ERROR(Emit(ToString(v)));
      return Flow::kNormal;
    }
    case Stmt::Kind::kIf:
      return ExecIf(stmt);
    case Stmt::Kind::kFor:
      return ExecFor(stmt);
    case Stmt::Kind::kSet:
      SPW_RETURN_IF_ERROR(ExecSet(stmt));
      return Flow::kNormal;
    case Stmt::Kind::kMacro: {
      const Stmt* macro = &stmt;
      frames_.back().emplace_back(
          stmt.name, Value::Function(stmt.name, [macro](Evaluator& ev, const CallArgs& args) {
            return ev.CallMacro(*macro, args);
          }));
      return Flow::kNormal;
    }
    case Stmt::Kind::kBreak:
      return Flow::kBreak;
    case Stmt::Kind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

absl::StatusOr<Evaluator::Flow> Evaluator::ExecIf(const Stmt& stmt) {
  for (size_t i = 0; i < stmt.conditions.size(); ++i) {
    SPW_ASSIGN_OR_RETURN(Value cond, Eval(*stmt.conditions[i]));
    if (Truthy(cond)) return ExecBody(stmt.bodies[i]);
  }
  return ExecBody(stmt.else_body);
}

absl::StatusOr<Evaluator::Flow> Evaluator::ExecFor(const Stmt& stmt) {
  SPW_ASSIGN_OR_RETURN(Value iterable, Eval(*stmt.expr));
  SPW_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
  if (stmt.condition != nullptr) {
    std::vector<Value> kept;
    for (Value& item : items) {
      SPW_RETURN_IF_ERROR(Tick());
      frames_.emplace_back();
      absl::Status bound = Assign(stmt.targets, item);
      absl::StatusOr<Value> keep =
          bound.ok() ? Eval(*stmt.condition) : absl::StatusOr<Value>(bound);
      frames_.pop_back();
      if (!keep.ok()) return keep.status();
      if (Truthy(*keep)) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return ExecBody(stmt.else_body);
  const int64_t length = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < length; ++i) {
    SPW_RETURN_IF_ERROR(Tick());
    DictData loop;
    loop.Set("index", Value::Int(i + 1));
    loop.Set("index0", Value::Int(i));
    loop.Set("revindex", Value::Int(length - i));
    loop.Set("revindex0", Value::Int(length - i - 1));
    loop.Set("first", Value::Bool(i == 0));
    loop.Set("last", Value::Bool(i == length - 1));
    loop.Set("length", Value::Int(length));
    loop.Set("depth", Value::Int(1));
    loop.Set("depth0", Value::Int(0));
    if (i > 0) loop.Set("previtem", items[i - 1]);
    if (i + 1 < length) loop.Set("nextitem", items[i + 1]);
    loop.Set(
        "cycle", Value::Function("cycle", [i](Evaluator&, const CallArgs& args) {
          if (args.positional.empty()) {
            return absl::StatusOr<Value>(absl::InvalidArgumentError("no items for cycling given"));
          }
          return absl::StatusOr<Value>(args.positional[i % args.positional.size()]);
        }));
    frames_.emplace_back();
    frames_.back().emplace_back("loop", Value::Dict(std::move(loop)));
    absl::Status bound = Assign(stmt.targets, items[i]);
    absl::StatusOr<Flow> flow = bound.ok() ? ExecBody(stmt.body) : absl::StatusOr<Flow>(bound);
    frames_.pop_back();
    if (!flow.ok()) return flow.status();
    if (*flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

absl::Status Evaluator::Assign(const std::vector<std::string>& targets, const Value& value) {
  Frame& frame = frames_.back();
  auto set = [&frame](const std::string& name, Value v) {
    for (auto& [key, existing] : frame) {
      if (key == name) {
        existing = std::move(v);
        return;
      }
    }
    frame.emplace_back(name, std::move(v));
  };
  if (targets.size() == 1) {
    set(targets[0], value);
    return absl::OkStatus();
  }
  SPW_ASSIGN_OR_RETURN(std::vector<Value> parts, Iterate(value));
  if (value.is_undefined()) return UndefinedError(value);
  if (parts.size() != targets.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(parts.size() < targets.size() ? "not enough" : "too many",
                     " values to unpack (expected ", targets.size(), ", got ", parts.size(), ")"));
  }
  for (size_t i = 0; i < targets.size(); ++i) set(targets[i], std::move(parts[i]));
  return absl::OkStatus();
}

absl::Status Evaluator::ExecSet(const Stmt& stmt) {
  Value value;
  if (stmt.block_set) {
    SPW_ASSIGN_OR_RETURN(std::string text, Capture(stmt.body));
    value = Value::String(std::move(text));
  } else {
    SPW_ASSIGN_OR_RETURN(value, Eval(*stmt.expr));
  }
  if (stmt.attr.empty()) return Assign(stmt.targets, value);
  Value target = Lookup(stmt.targets[0]);
  if (!target.is_namespace()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot assign attribute '", stmt.attr,
                                                   "' on non-namespace object '", stmt.targets[0],
                                                   "'"));
  }
  target.ns().attrs.Set(stmt.attr, std::move(value));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Evaluator::Capture(const StmtList& body) {
  std::string saved = std::move(out_);
  out_.clear();
  absl::StatusOr<Flow> flow = ExecBody(body);
  std::string captured = std::move(out_);
  out_ = std::move(saved);
  if (!flow.ok()) return flow.status();
  return captured;
}

absl::StatusOr<Value> Evaluator::CallMacro(const Stmt& macro, const CallArgs& args) {
  if (call_depth_ >= limits_.max_call_depth) {
    return absl::ResourceExhaustedError(
        absl::StrCat("macro calls nested deeper than ", limits_.max_call_depth));
  }
  if (args.positional.size() > macro.params.size()) {
    return absl::InvalidArgumentError(absl::StrCat("macro '", macro.name, "' takes not more than ",
                                                   macro.params.size(), " argument(s)"));
  }
  // A macro sees the top-level variables and its own parameters, not the caller's locals.
  std::vector<Frame> saved = std::move(frames_);
  frames_.clear();
  frames_.push_back(saved.front());
  frames_.emplace_back();
  absl::Status status;
  for (size_t i = 0; i < macro.params.size() && status.ok(); ++i) {
    const MacroParam& param = macro.params[i];
    Value v = Value::MakeUndefined(absl::StrCat("'", param.name, "' is undefined"));
    if (i < args.positional.size()) {
      v = args.positional[i];
    } else {
      bool found = false;
      for (const auto& [key, kw] : args.keyword) {
        if (key == param.name) {
          v = kw;
          found = true;
        }
      }
      if (!found && param.default_value != nullptr) {
        absl::StatusOr<Value> def = Eval(*param.default_value);
        if (!def.ok()) status = def.status();
        if (def.ok()) v = std::move(*def);
      }
    }
    frames_.back().emplace_back(param.name, std::move(v));
  }
  ++call_depth_;
  absl::StatusOr<std::string> text =
      status.ok() ? Capture(macro.body) : absl::StatusOr<std::string>(status);
  --call_depth_;
  saved.front() = std::move(frames_.front());
  frames_ = std::move(saved);
  if (!text.ok()) return text.status();
  return Value::String(std::move(*text));
}

absl::StatusOr<Value> Evaluator::Call(const Value& callee, const CallArgs& args) {
  SPW_RETURN_IF_ERROR(Tick());
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", TypeName(callee), "' object is not callable"));
  }
  return callee.callable().fn(*this, args);
}

Value Evaluator::Lookup(const std::string& name) const {
  for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
    for (auto it = frame->rbegin(); it != frame->rend(); ++it) {
      if (it->first == name) return it->second;
    }
  }
  if (std::optional<Value> global = LookupGlobal(name)) return *global;
  return Value::MakeUndefined(absl::StrCat("'", name, "' is undefined"));
}

absl::StatusOr<CallArgs> Evaluator::EvalArgs(const Expr& expr, size_t first_arg) {
  CallArgs args;
  for (size_t i = first_arg; i < expr.args.size(); ++i) {
    SPW_ASSIGN_OR_RETURN(Value v, Eval(*expr.args[i]));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [key, arg] : expr.kwargs) {
    SPW_ASSIGN_OR_RETURN(Value v, Eval(*arg));
    args.keyword.emplace_back(key, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Evaluator::Eval(const Expr& expr) {
  switch (expr.kind) {
    case Expr::Kind::kLiteral:
      return expr.literal;
    case Expr::Kind::kName:
      return Lookup(expr.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple:
    case Expr::Kind::kDict:
      return EvalCollection(expr);
    case Expr::Kind::kGetAttr: {
      SPW_ASSIGN_OR_RETURN(Value obj, Eval(*expr.args[0]));
      return GetAttr(obj, expr.name);
    }
    case Expr::Kind::kGetItem: {
      SPW_ASSIGN_OR_RETURN(Value obj, Eval(*expr.args[0]));
      SPW_ASSIGN_OR_RETURN(Value key, Eval(*expr.args[1]));
      return GetItem(obj, key);
    }
    case Expr::Kind::kSlice: {
      SPW_ASSIGN_OR_RETURN(Value obj, Eval(*expr.args[0]));
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (expr.args[i + 1] != nullptr) {
          SPW_ASSIGN_OR_RETURN(parts[i], Eval(*expr.args[i + 1]));
        }
      }
      return SliceValue(obj, expr.args[1] ? &parts[0] : nullptr, expr.args[2] ? &parts[1] : nullptr,
                        expr.args[3] ? &parts[2] : nullptr);
    }
    case Expr::Kind::kCall: {
      SPW_ASSIGN_OR_RETURN(Value callee, Eval(*expr.args[0]));
      SPW_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      return Call(callee, args);
    }
    case Expr::Kind::kFilter: {
      SPW_ASSIGN_OR_RETURN(Value value, Eval(*expr.args[0]));
      SPW_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      SPW_RETURN_IF_ERROR(Tick());
      return ApplyFilter(*this, expr.name, value, args);
    }
    case Expr::Kind::kTest: {
      SPW_ASSIGN_OR_RETURN(Value value, Eval(*expr.args[0]));
      SPW_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(expr, 1));
      SPW_ASSIGN_OR_RETURN(bool result, ApplyTest(*this, expr.name, value, args));
      return Value::Bool(result != expr.negated);
    }
    case Expr::Kind::kUnary: {
      SPW_ASSIGN_OR_RETURN(Value v, Eval(*expr.args[0]));
      if (expr.name == "not") return Value::Bool(!Truthy(v));
      if (v.is_undefined()) return UndefinedError(v);
      if (!v.is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad operand type for unary ", expr.name, ": '", TypeName(v), "'"));
      }
      if (expr.name == "+") return v.is_bool() ? Value::Int(IntOf(v)) : v;
      if (v.is_float()) return Value::Float(-v.float_value());
      return IntArithmetic("-", 0, IntOf(v));
    }
    case Expr::Kind::kBinary:
      return EvalBinary(expr);
    case Expr::Kind::kCompare:
      return EvalCompare(expr);
    case Expr::Kind::kCondExpr: {
      SPW_ASSIGN_OR_RETURN(Value cond, Eval(*expr.args[0]));
      if (Truthy(cond)) return Eval(*expr.args[1]);
      if (expr.args[2] != nullptr) return Eval(*expr.args[2]);
      return Value::MakeUndefined(
          "the inline if-expression evaluated to false and no else section was defined");
    }
  }
  return absl::InternalError("unknown expression kind");
}

absl::StatusOr<Value> Evaluator::EvalCollection(const Expr& expr) {
  SPW_RETURN_IF_ERROR(Tick());
  if (expr.kind == Expr::Kind::kDict) {
    DictData dict;
    for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
      SPW_ASSIGN_OR_RETURN(Value key, Eval(*expr.args[i]));
      SPW_ASSIGN_OR_RETURN(Value value, Eval(*expr.args[i + 1]));
      if (!key.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("dict keys must be strings here, got '", TypeName(key), "'"));
      }
      dict.Set(key.string_value(), std::move(value));
    }
    Value result = Value::Dict(std::move(dict));
    SPW_RETURN_IF_ERROR(CheckWeight(result));
    return result;
  }
  std::vector<Value> items;
  for (const auto& arg : expr.args) {
    SPW_ASSIGN_OR_RETURN(Value v, Eval(*arg));
    items.push_back(std::move(v));
  }
  Value result = Value::List(std::move(items), expr.kind == Expr::Kind::kTuple);
  SPW_RETURN_IF_ERROR(CheckWeight(result));
  return result;
}

absl::StatusOr<Value> Evaluator::EvalBinary(const Expr& expr) {
  const std::string& op = expr.name;
  SPW_ASSIGN_OR_RETURN(Value a, Eval(*expr.args[0]));
  if (op == "and") return Truthy(a) ? Eval(*expr.args[1]) : a;
  if (op == "or") return Truthy(a) ? a : Eval(*expr.args[1]);
  SPW_ASSIGN_OR_RETURN(Value b, Eval(*expr.args[1]));
  if (op == "~") {
    std::string left = ToString(a);
    std::string right = ToString(b);
    SPW_RETURN_IF_ERROR(CheckSize(left.size() + right.size()));
    return Value::String(left + right);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    if (op == "/") {
      if (b.AsDouble() == 0) return absl::InvalidArgumentError("division by zero");
      return Value::Float(a.AsDouble() / b.AsDouble());
    }
    if (a.is_float() || b.is_float()) return FloatArithmetic(op, a.AsDouble(), b.AsDouble());
    return IntArithmetic(op, IntOf(a), IntOf(b));
  }
  if (op == "+" && a.is_string() && b.is_string()) {
    SPW_RETURN_IF_ERROR(CheckSize(a.string_value().size() + b.string_value().size()));
    return Value::String(a.string_value() + b.string_value());
  }
  if (op == "+" && a.is_list() && b.is_list() && a.list().is_tuple == b.list().is_tuple) {
    SPW_RETURN_IF_ERROR(CheckSize(a.list().items.size() + b.list().items.size()));
    std::vector<Value> items = a.list().items;
    items.insert(items.end(), b.list().items.begin(), b.list().items.end());
    Value result = Value::List(std::move(items), a.list().is_tuple);
    SPW_RETURN_IF_ERROR(CheckWeight(result));
    return result;
  }
  if (op == "*" && (a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) {
    int64_t times = std::max<int64_t>(0, IntOf(b));
    size_t unit = a.is_string() ? a.string_value().size() : a.list().items.size();
    if (unit > 0 && times > limits_.max_output_bytes / static_cast<int64_t>(unit)) {
      return CheckSize(static_cast<size_t>(limits_.max_output_bytes) + 1);
    }
    if (a.is_list() && times > limits_.max_value_weight / a.weight()) {
      return CheckWeight(Value::List(std::vector<Value>(2, a)));  // fails: too heavy
    }
    if (a.is_string()) {
      std::string s;
      for (int64_t i = 0; i < times; ++i) s += a.string_value();
      return Value::String(std::move(s));
    }
    std::vector<Value> items;
    for (int64_t i = 0; i < times; ++i) {
      items.insert(items.end(), a.list().items.begin(), a.list().items.end());
    }
    Value result = Value::List(std::move(items), a.list().is_tuple);
    SPW_RETURN_IF_ERROR(CheckWeight(result));
    return result;
  }
  if (op == "+" && a.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("can only concatenate str (not \"", TypeName(b), "\") to str"));
  }
  return TypeError(op, a, b);
}

absl::StatusOr<Value> Evaluator::EvalCompare(const Expr& expr) {
  SPW_ASSIGN_OR_RETURN(Value left, Eval(*expr.args[0]));
  for (size_t i = 0; i < expr.ops.size(); ++i) {
    SPW_ASSIGN_OR_RETURN(Value right, Eval(*expr.args[i + 1]));
    const std::string& op = expr.ops[i];
    bool result = false;
    if (op == "==" || op == "!=") {
      result = Equals(left, right) == (op == "==");
    } else if (op == "in" || op == "notin") {
      SPW_ASSIGN_OR_RETURN(bool found, Contains(right, left));
      result = found == (op == "in");
    } else {
      if (left.is_undefined()) return UndefinedError(left);
      if (right.is_undefined()) return UndefinedError(right);
      absl::StatusOr<int> c = Compare(left, right);
      if (!c.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", op, "' not supported between '", TypeName(left), "' and '", TypeName(right), "'"));
      }
      result = op == "<" ? *c < 0 : op == "<=" ? *c <= 0 : op == ">" ? *c > 0 : *c >= 0;
    }
    if (!result) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

}  // namespace spillway::engine::chat::internal
