// Evaluator: renders a parsed chat template (ast.h) against a set of variables with jinja2's
// runtime semantics (scoping of `set` in loops, Undefined, loop.*, macros, break/continue),
// under hard limits so that untrusted templates cannot exhaust memory, stack or time.
// One Evaluator renders once, on one thread; the Ast it reads may be shared.
#pragma once

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat/internal/ast.h"
#include "engine/chat/internal/value.h"

namespace spillway::engine::chat::internal {

struct RenderLimits {
  int64_t max_output_bytes = int64_t{16} << 20;  // also bounds every intermediate string/list
  int64_t max_steps = 1'000'000;                 // statements, loop iterations and calls
  int max_call_depth = 64;                       // nested macro calls
  Weight max_value_weight = 1'000'000;           // flattened size of one list or dict
};

class Evaluator {
 public:
  // `now` is the time strftime_now() formats; std::nullopt uses the local time when called.
  Evaluator(const Ast& ast, RenderLimits limits, std::optional<std::tm> now);

  // Render executes the template with `variables` bound at the top level. Runtime errors come
  // back as InvalidArgument("line N: ..."); raise_exception(msg) comes back as
  // InvalidArgument(msg) exactly.
  absl::StatusOr<std::string> Render(std::vector<std::pair<std::string, Value>> variables);

  // ---- Used by the built-in filters, tests and functions (builtins.h). ----
  absl::StatusOr<Value> Call(const Value& callee, const CallArgs& args);
  // Records that raise_exception() was called, so its message is returned unchanged.
  absl::Status Raise(std::string message);
  // Remembers a namespace made during this render; Render empties them all at the end so that
  // a namespace that holds itself (`{% set ns.me = ns %}`) is not leaked.
  void TrackNamespace(const Value& ns) { namespaces_.push_back(ns); }
  // Counts one unit of work against max_steps.
  absl::Status Tick();
  // Fails when a value of `bytes` would exceed max_output_bytes.
  absl::Status CheckSize(size_t bytes) const;
  // Fails when `v` is a list or dict heavier than max_value_weight.
  absl::Status CheckWeight(const Value& v) const;
  const RenderLimits& limits() const { return limits_; }
  const std::optional<std::tm>& now() const { return now_; }
  // True once raise_exception() was called.
  bool raised() const { return raised_; }

 private:
  using Frame = std::vector<std::pair<std::string, Value>>;
  enum class Flow { kNormal, kBreak, kContinue };

  absl::StatusOr<Flow> ExecBody(const StmtList& body);
  absl::StatusOr<Flow> Exec(const Stmt& stmt);
  absl::StatusOr<Flow> ExecIf(const Stmt& stmt);
  absl::StatusOr<Flow> ExecFor(const Stmt& stmt);
  absl::Status ExecSet(const Stmt& stmt);
  absl::Status Assign(const std::vector<std::string>& targets, const Value& value);
  absl::StatusOr<std::string> Capture(const StmtList& body);
  absl::Status Emit(std::string_view text);
  absl::StatusOr<Value> CallMacro(const Stmt& macro, const CallArgs& args);

  absl::StatusOr<Value> Eval(const Expr& expr);
  absl::StatusOr<Value> EvalCollection(const Expr& expr);
  absl::StatusOr<Value> EvalBinary(const Expr& expr);
  absl::StatusOr<Value> EvalCompare(const Expr& expr);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& expr, size_t first_arg);
  Value Lookup(const std::string& name) const;

  const Ast& ast_;
  RenderLimits limits_;
  std::optional<std::tm> now_;
  std::vector<Frame> frames_;  // frames_[0] holds the variables and top-level sets
  std::string out_;
  std::vector<Value> namespaces_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  bool raised_ = false;
  std::string raised_message_;
};

}  // namespace spillway::engine::chat::internal
