// Syntax tree of a parsed chat template: expression and statement nodes produced by the parser
// (parser.h) and walked by the evaluator (evaluator.h). Immutable after parsing, so one tree
// may be rendered from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat/internal/value.h"

namespace spillway::engine::chat::internal {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // args = items
    kTuple,     // args = items
    kDict,      // args = key0, value0, key1, value1, ...
    kGetAttr,   // args[0].name
    kGetItem,   // args[0][args[1]]
    kSlice,     // args[0][args[1]:args[2]:args[3]]; missing parts are nullptr
    kCall,      // args[0](args[1:], kwargs)
    kFilter,    // args[0] | name(args[1:], kwargs)
    kTest,      // args[0] is [not] name(args[1:], kwargs); negated
    kUnary,     // name in {"-", "+", "not"} applied to args[0]
    kBinary,    // args[0] name args[1]; name in {+ - * / // % ** ~ and or}
    kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ...; ops in {== != < <= > >= in notin}
    kCondExpr,  // args[1] if args[0] else args[2]; args[2] may be nullptr
  };

  Kind kind;
  int line = 0;
  int depth = 1;  // height of this subtree; the parser bounds it (kMaxExprDepth)
  std::string name;
  Value literal;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

struct Stmt;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // nullptr when the parameter has no default
};

struct Stmt {
  enum class Kind {
    kText,    // text
    kOutput,  // {{ expr }}
    kIf,      // conditions[i] -> bodies[i]; else_body
    kFor,     // for targets in expr [if condition]: body; else_body
    kSet,     // set targets = expr; or set target.attr = expr; or block set (body)
    kMacro,   // macro name(params): body
    kBreak,
    kContinue,
  };

  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;                 // kFor filter
  std::vector<ExprPtr> conditions;   // kIf
  std::vector<StmtList> bodies;      // kIf
  StmtList body;                     // kFor, kMacro, block kSet
  StmtList else_body;                // kIf, kFor
  std::vector<std::string> targets;  // kFor / kSet names (several when unpacking)
  std::string attr;                  // kSet: `set targets[0].attr = ...`
  std::string name;                  // kMacro
  std::vector<MacroParam> params;    // kMacro
  bool block_set = false;            // kSet: {% set x %}...{% endset %}
};

struct Ast {
  StmtList body;
};

}  // namespace spillway::engine::chat::internal
