#include "engine/chat/internal/parser.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat/internal/builtins.h"
#include "engine/chat/internal/lexer.h"

namespace spillway::engine::chat::internal {
namespace {

using EndTags = std::set<std::string, std::less<>>;

ExprPtr MakeExpr(Expr::Kind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Ast>> Run() {
    auto ast = std::make_unique<Ast>();
    SPW_ASSIGN_OR_RETURN(ast->body, ParseStatements({}));
    if (Cur().kind != TokenKind::kEof) return Error(Cur(), "unexpected tag");
    SPW_RETURN_IF_ERROR(CheckNames(ast->body, /*soft=*/false));
    return ast;
  }

  // jinja2 fails at compile time on an unknown filter or test unless it sits in a "soft" frame:
  // inside an if statement or inline if, but not in a loop, macro or block set nested there.
  static absl::Status CheckNames(const StmtList& body, bool soft) {
    for (const auto& stmt : body) {
      SPW_RETURN_IF_ERROR(CheckNames(*stmt, soft));
    }
    return absl::OkStatus();
  }

  static absl::Status CheckNames(const Stmt& stmt, bool soft) {
    if (stmt.kind == Stmt::Kind::kIf) soft = true;
    for (const auto& cond : stmt.conditions) SPW_RETURN_IF_ERROR(CheckNames(*cond, soft));
    for (const auto& branch : stmt.bodies) SPW_RETURN_IF_ERROR(CheckNames(branch, soft));
    if (stmt.expr != nullptr) SPW_RETURN_IF_ERROR(CheckNames(*stmt.expr, soft));
    bool inner_soft = stmt.kind == Stmt::Kind::kIf && soft;
    if (stmt.condition != nullptr) SPW_RETURN_IF_ERROR(CheckNames(*stmt.condition, false));
    SPW_RETURN_IF_ERROR(CheckNames(stmt.body, inner_soft));
    SPW_RETURN_IF_ERROR(CheckNames(stmt.else_body, inner_soft));
    for (const auto& param : stmt.params) {
      if (param.default_value != nullptr) {
        SPW_RETURN_IF_ERROR(CheckNames(*param.default_value, false));
      }
    }
    return absl::OkStatus();
  }

  static absl::Status CheckNames(const Expr& expr, bool soft) {
    if (expr.kind == Expr::Kind::kCondExpr) soft = true;
    if (!soft && expr.kind == Expr::Kind::kFilter && !IsKnownFilter(expr.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", expr.line, ": no filter named '", expr.name, "'"));
    }
    if (!soft && expr.kind == Expr::Kind::kTest && !IsKnownTest(expr.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", expr.line, ": no test named '", expr.name, "'"));
    }
    for (const auto& arg : expr.args) {
      if (arg != nullptr) SPW_RETURN_IF_ERROR(CheckNames(*arg, soft));
    }
    for (const auto& [key, arg] : expr.kwargs) SPW_RETURN_IF_ERROR(CheckNames(*arg, soft));
    return absl::OkStatus();
  }

 private:
  // RAII depth counter that bounds recursion.
  class DepthGuard {
   public:
    explicit DepthGuard(int& depth) : depth_(depth) { ++depth_; }
    ~DepthGuard() { --depth_; }
    bool exceeded() const { return depth_ > kMaxParseDepth; }

   private:
    int& depth_;
  };

  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void Advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return Cur().kind == TokenKind::kOperator && Cur().text == op;
  }
  bool IsName(std::string_view name) const {
    return Cur().kind == TokenKind::kName && Cur().text == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Advance();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Advance();
    return true;
  }

  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEof:
        return "end of template";
      case TokenKind::kData:
        return "template text";
      case TokenKind::kBlockEnd:
        return "end of statement block";
      case TokenKind::kVariableEnd:
        return "end of print statement";
      case TokenKind::kString:
        return "string literal";
      default:
        return absl::StrCat("'", t.text, "'");
    }
  }

  absl::Status Error(const Token& t, const std::string& message) const {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", t.line, ", column ", t.column, ": ", message));
  }
  absl::Status Expected(const std::string& what) const {
    return Error(Cur(), absl::StrCat("expected ", what, ", got ", Describe(Cur())));
  }
  absl::Status ExpectOp(const std::string& op) {
    if (!SkipOp(op)) return Expected(absl::StrCat("'", op, "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().kind != TokenKind::kBlockEnd) return Expected("end of statement block");
    Advance();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().kind != TokenKind::kName) return Expected("a name");
    std::string name = Cur().text;
    Advance();
    return name;
  }

  // Statements until a `{% tag %}` whose tag is in `end_tags` (left unconsumed) or the end.
  absl::StatusOr<StmtList> ParseStatements(const EndTags& end_tags) {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error(Cur(), "blocks are nested too deeply");
    StmtList body;
    while (Cur().kind != TokenKind::kEof) {
      const Token& t = Cur();
      if (t.kind == TokenKind::kData) {
        auto stmt = std::make_unique<Stmt>();
        stmt->kind = Stmt::Kind::kText;
        stmt->line = t.line;
        stmt->text = t.text;
        body.push_back(std::move(stmt));
        Advance();
      } else if (t.kind == TokenKind::kVariableBegin) {
        Advance();
        auto stmt = std::make_unique<Stmt>();
        stmt->kind = Stmt::Kind::kOutput;
        stmt->line = t.line;
        SPW_ASSIGN_OR_RETURN(stmt->expr, ParseTuple(true));
        if (Cur().kind != TokenKind::kVariableEnd) return Expected("end of print statement");
        Advance();
        body.push_back(std::move(stmt));
      } else if (t.kind == TokenKind::kBlockBegin) {
        const Token& tag = Peek();
        if (tag.kind == TokenKind::kName && end_tags.count(tag.text) > 0) return body;
        Advance();
        SPW_RETURN_IF_ERROR(ParseBlock(body));
      } else {
        return Error(t, absl::StrCat("unexpected ", Describe(t)));
      }
    }
    if (!end_tags.empty()) {
      std::string names;
      for (const auto& tag : end_tags) absl::StrAppend(&names, names.empty() ? "" : " or ", tag);
      return Error(Cur(), absl::StrCat("unexpected end of template, expected ", names));
    }
    return body;
  }

  // After `{%`: one block statement, appended to `body`.
  absl::Status ParseBlock(StmtList& body) {
    const Token& tag = Cur();
    if (tag.kind != TokenKind::kName) return Expected("a statement name");
    std::string name = tag.text;
    int line = tag.line;
    Advance();
    auto stmt = std::make_unique<Stmt>();
    stmt->line = line;
    if (name == "if") {
      SPW_RETURN_IF_ERROR(ParseIf(*stmt));
    } else if (name == "for") {
      SPW_RETURN_IF_ERROR(ParseFor(*stmt));
    } else if (name == "set") {
      SPW_RETURN_IF_ERROR(ParseSet(*stmt));
    } else if (name == "macro") {
      SPW_RETURN_IF_ERROR(ParseMacro(*stmt));
    } else if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) return Error(tag, absl::StrCat("'", name, "' outside of a loop"));
      stmt->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      SPW_RETURN_IF_ERROR(ExpectBlockEnd());
    } else if (name == "generation") {
      // transformers' {% generation %} marks assistant text; rendering it is a no-op.
      SPW_RETURN_IF_ERROR(ExpectBlockEnd());
      SPW_ASSIGN_OR_RETURN(StmtList inner, ParseStatements({"endgeneration"}));
      SPW_RETURN_IF_ERROR(ParseEndTag("endgeneration"));
      for (auto& s : inner) body.push_back(std::move(s));
      return absl::OkStatus();
    } else {
      return Error(tag, absl::StrCat("unknown or unsupported tag '", name, "'"));
    }
    body.push_back(std::move(stmt));
    return absl::OkStatus();
  }

  // Consumes `{% name %}`. REQUIRES: Cur() is the kBlockBegin of that tag.
  absl::Status ParseEndTag(const std::string& name) {
    Advance();
    if (!SkipName(name)) return Expected(absl::StrCat("'", name, "'"));
    return ExpectBlockEnd();
  }

  absl::Status ParseIf(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kIf;
    while (true) {
      SPW_ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(true));
      SPW_RETURN_IF_ERROR(ExpectBlockEnd());
      SPW_ASSIGN_OR_RETURN(StmtList branch, ParseStatements({"elif", "else", "endif"}));
      stmt.conditions.push_back(std::move(cond));
      stmt.bodies.push_back(std::move(branch));
      Advance();  // {%
      std::string tag = Cur().text;
      Advance();
      if (tag == "elif") continue;
      if (tag == "else") {
        SPW_RETURN_IF_ERROR(ExpectBlockEnd());
        SPW_ASSIGN_OR_RETURN(stmt.else_body, ParseStatements({"endif"}));
        Advance();
        Advance();
      }
      return ExpectBlockEnd();
    }
  }

  absl::StatusOr<std::vector<std::string>> ParseTargets() {
    std::vector<std::string> names;
    bool parens = SkipOp("(");
    do {
      if (parens && IsOp(")")) break;
      SPW_ASSIGN_OR_RETURN(std::string name, ExpectName());
      names.push_back(std::move(name));
    } while (SkipOp(","));
    if (parens) SPW_RETURN_IF_ERROR(ExpectOp(")"));
    return names;
  }

  absl::Status ParseFor(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kFor;
    SPW_ASSIGN_OR_RETURN(stmt.targets, ParseTargets());
    if (!SkipName("in")) return Expected("'in'");
    SPW_ASSIGN_OR_RETURN(stmt.expr, ParseTuple(false));
    if (SkipName("if")) {
      SPW_ASSIGN_OR_RETURN(stmt.condition, ParseExpression(true));
    }
    if (IsName("recursive")) return Error(Cur(), "recursive loops are not supported");
    SPW_RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    absl::StatusOr<StmtList> loop_body = ParseStatements({"else", "endfor"});
    --loop_depth_;
    if (!loop_body.ok()) return loop_body.status();
    stmt.body = std::move(*loop_body);
    Advance();  // {%
    bool has_else = IsName("else");
    Advance();
    SPW_RETURN_IF_ERROR(ExpectBlockEnd());
    if (!has_else) return absl::OkStatus();
    SPW_ASSIGN_OR_RETURN(stmt.else_body, ParseStatements({"endfor"}));
    return ParseEndTag("endfor");
  }

  absl::Status ParseSet(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kSet;
    SPW_ASSIGN_OR_RETURN(std::string first, ExpectName());
    stmt.targets.push_back(std::move(first));
    if (SkipOp(".")) {
      SPW_ASSIGN_OR_RETURN(stmt.attr, ExpectName());
    } else {
      while (SkipOp(",")) {
        SPW_ASSIGN_OR_RETURN(std::string name, ExpectName());
        stmt.targets.push_back(std::move(name));
      }
    }
    if (SkipOp("=")) {
      SPW_ASSIGN_OR_RETURN(stmt.expr, ParseTuple(true));
      return ExpectBlockEnd();
    }
    if (!stmt.attr.empty() || stmt.targets.size() != 1) return Expected("'='");
    SPW_RETURN_IF_ERROR(ExpectBlockEnd());
    stmt.block_set = true;
    SPW_ASSIGN_OR_RETURN(stmt.body, ParseStatements({"endset"}));
    return ParseEndTag("endset");
  }

  absl::Status ParseMacro(Stmt& stmt) {
    stmt.kind = Stmt::Kind::kMacro;
    SPW_ASSIGN_OR_RETURN(stmt.name, ExpectName());
    SPW_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (!stmt.params.empty()) SPW_RETURN_IF_ERROR(ExpectOp(","));
      MacroParam param;
      SPW_ASSIGN_OR_RETURN(param.name, ExpectName());
      if (SkipOp("=")) {
        SPW_ASSIGN_OR_RETURN(param.default_value, ParseExpression(true));
      }
      stmt.params.push_back(std::move(param));
    }
    Advance();
    SPW_RETURN_IF_ERROR(ExpectBlockEnd());
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    absl::StatusOr<StmtList> macro_body = ParseStatements({"endmacro"});
    loop_depth_ = saved_loop_depth;
    if (!macro_body.ok()) return macro_body.status();
    stmt.body = std::move(*macro_body);
    return ParseEndTag("endmacro");
  }

  // ---- Expressions, lowest precedence first (jinja2's parser.py). ----

  // An expression, or an implicit tuple `a, b`.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr) {
    int line = Cur().line;
    SPW_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(with_condexpr));
    if (!IsOp(",")) return first;
    auto tuple = MakeExpr(Expr::Kind::kTuple, line);
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Cur().kind == TokenKind::kBlockEnd || Cur().kind == TokenKind::kVariableEnd ||
          IsOp(")") || IsName("if")) {
        break;
      }
      SPW_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(with_condexpr));
      tuple->args.push_back(std::move(item));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error(Cur(), "expression is nested too deeply");
    if (!with_condexpr) return ParseOr();
    SPW_ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      int line = Cur().line;
      Advance();
      auto cond = MakeExpr(Expr::Kind::kCondExpr, line);
      SPW_ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(expr));
      ExprPtr otherwise;
      if (SkipName("else")) {
        SPW_ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      cond->args.push_back(std::move(otherwise));
      SPW_ASSIGN_OR_RETURN(expr, Finish(std::move(cond)));
    }
    return expr;
  }

  // Sets e->depth from its children and enforces kMaxExprDepth.
  absl::StatusOr<ExprPtr> Finish(ExprPtr e) {
    int depth = 0;
    for (const auto& arg : e->args) {
      if (arg != nullptr) depth = std::max(depth, arg->depth);
    }
    for (const auto& [key, arg] : e->kwargs) depth = std::max(depth, arg->depth);
    e->depth = depth + 1;
    if (e->depth > kMaxExprDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", e->line, ": expression is nested too deeply"));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> MakeBinary(std::string op, ExprPtr left, ExprPtr right, int line) {
    auto e = MakeExpr(Expr::Kind::kBinary, line);
    e->name = std::move(op);
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return Finish(std::move(e));
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      SPW_ASSIGN_OR_RETURN(left, MakeBinary("or", std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      SPW_ASSIGN_OR_RETURN(left, MakeBinary("and", std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error(Cur(), "expression is nested too deeply");
    if (!IsName("not")) return ParseCompare();
    auto e = MakeExpr(Expr::Kind::kUnary, Cur().line);
    Advance();
    e->name = "not";
    SPW_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
    e->args.push_back(std::move(operand));
    return Finish(std::move(e));
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    int line = Cur().line;
    SPW_ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (Cur().kind == TokenKind::kOperator &&
          (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" || Cur().text == "<=" ||
           Cur().text == ">" || Cur().text == ">=")) {
        op = Cur().text;
        Advance();
      } else if (IsName("in")) {
        op = "in";
        Advance();
      } else if (IsName("not") && Peek().kind == TokenKind::kName && Peek().text == "in") {
        op = "notin";
        Advance();
        Advance();
      } else {
        break;
      }
      if (cmp == nullptr) {
        cmp = MakeExpr(Expr::Kind::kCompare, line);
        cmp->args.push_back(std::move(first));
      }
      SPW_ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      cmp->ops.push_back(std::move(op));
      cmp->args.push_back(std::move(operand));
    }
    if (cmp == nullptr) return first;
    return Finish(std::move(cmp));
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = Cur().text;
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      SPW_ASSIGN_OR_RETURN(left, MakeBinary(op, std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      SPW_ASSIGN_OR_RETURN(left, MakeBinary("~", std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Cur().text;
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      SPW_ASSIGN_OR_RETURN(left, MakeBinary(op, std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    SPW_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      int line = Cur().line;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      SPW_ASSIGN_OR_RETURN(left, MakeBinary("**", std::move(left), std::move(right), line));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error(Cur(), "expression is nested too deeply");
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = MakeExpr(Expr::Kind::kUnary, Cur().line);
      node->name = Cur().text;
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->args.push_back(std::move(operand));
      SPW_ASSIGN_OR_RETURN(node, Finish(std::move(node)));
    } else {
      SPW_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    SPW_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      SPW_ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary();
  absl::StatusOr<ExprPtr> ParseCollection(std::string_view close, Expr::Kind kind);
  absl::StatusOr<ExprPtr> ParseDict();
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node);
  absl::Status ParseCallArgs(Expr& call);
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node);

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

absl::StatusOr<ExprPtr> Parser::ParsePrimary() {
  const Token& t = Cur();
  int line = t.line;
  if (t.kind == TokenKind::kName) {
    auto e = MakeExpr(Expr::Kind::kLiteral, line);
    if (t.text == "true" || t.text == "True") {
      e->literal = Value::Bool(true);
    } else if (t.text == "false" || t.text == "False") {
      e->literal = Value::Bool(false);
    } else if (t.text == "none" || t.text == "None") {
      e->literal = Value::MakeNone();
    } else {
      e->kind = Expr::Kind::kName;
      e->name = t.text;
    }
    Advance();
    return e;
  }
  if (t.kind == TokenKind::kString) {
    std::string text;
    while (Cur().kind == TokenKind::kString) {  // adjacent literals concatenate
      text += Cur().text;
      Advance();
    }
    auto e = MakeExpr(Expr::Kind::kLiteral, line);
    e->literal = Value::String(std::move(text));
    return e;
  }
  if (t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat) {
    auto e = MakeExpr(Expr::Kind::kLiteral, line);
    e->literal =
        t.kind == TokenKind::kInteger ? Value::Int(t.int_value) : Value::Float(t.float_value);
    Advance();
    return e;
  }
  if (SkipOp("(")) {
    if (SkipOp(")")) return MakeExpr(Expr::Kind::kTuple, line);
    SPW_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(true));
    if (SkipOp(")")) return first;  // parenthesised expression
    auto tuple = MakeExpr(Expr::Kind::kTuple, line);
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (IsOp(")")) break;
      SPW_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
      tuple->args.push_back(std::move(item));
    }
    SPW_RETURN_IF_ERROR(ExpectOp(")"));
    return Finish(std::move(tuple));
  }
  if (SkipOp("[")) return ParseCollection("]", Expr::Kind::kList);
  if (SkipOp("{")) return ParseDict();
  return Error(t, absl::StrCat("unexpected ", Describe(t)));
}

absl::StatusOr<ExprPtr> Parser::ParseCollection(std::string_view close, Expr::Kind kind) {
  auto e = MakeExpr(kind, Cur().line);
  while (!IsOp(close)) {
    if (!e->args.empty()) SPW_RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp(close)) break;  // trailing comma
    SPW_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
    e->args.push_back(std::move(item));
  }
  Advance();
  return Finish(std::move(e));
}

absl::StatusOr<ExprPtr> Parser::ParseDict() {
  auto e = MakeExpr(Expr::Kind::kDict, Cur().line);
  while (!IsOp("}")) {
    if (!e->args.empty()) SPW_RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp("}")) break;
    SPW_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
    SPW_RETURN_IF_ERROR(ExpectOp(":"));
    SPW_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
    e->args.push_back(std::move(key));
    e->args.push_back(std::move(value));
  }
  Advance();
  return Finish(std::move(e));
}

absl::StatusOr<ExprPtr> Parser::ParsePostfix(ExprPtr node) {
  while (true) {
    int line = Cur().line;
    if (SkipOp(".")) {
      if (Cur().kind == TokenKind::kInteger) {  // foo.0 is foo[0]
        auto index = MakeExpr(Expr::Kind::kLiteral, line);
        index->literal = Value::Int(Cur().int_value);
        Advance();
        auto e = MakeExpr(Expr::Kind::kGetItem, line);
        e->args.push_back(std::move(node));
        e->args.push_back(std::move(index));
        SPW_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
        continue;
      }
      auto e = MakeExpr(Expr::Kind::kGetAttr, line);
      SPW_ASSIGN_OR_RETURN(e->name, ExpectName());
      e->args.push_back(std::move(node));
      SPW_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
    } else if (SkipOp("[")) {
      SPW_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
    } else if (IsOp("(")) {
      auto call = MakeExpr(Expr::Kind::kCall, line);
      call->args.push_back(std::move(node));
      SPW_RETURN_IF_ERROR(ParseCallArgs(*call));
      SPW_ASSIGN_OR_RETURN(node, Finish(std::move(call)));
    } else {
      return node;
    }
  }
}

// After `[`: an index or a slice, up to and including `]`.
absl::StatusOr<ExprPtr> Parser::ParseSubscript(ExprPtr node) {
  int line = Cur().line;
  ExprPtr parts[3];
  int num_colons = 0;
  for (int i = 0; i < 3; ++i) {
    if (!IsOp(":") && !IsOp("]")) {
      SPW_ASSIGN_OR_RETURN(parts[i], ParseExpression(true));
    }
    if (i < 2 && SkipOp(":")) {
      ++num_colons;
      continue;
    }
    break;
  }
  SPW_RETURN_IF_ERROR(ExpectOp("]"));
  if (num_colons == 0) {
    if (parts[0] == nullptr) return Error(Cur(), "expected an index inside '[]'");
    auto e = MakeExpr(Expr::Kind::kGetItem, line);
    e->args.push_back(std::move(node));
    e->args.push_back(std::move(parts[0]));
    return Finish(std::move(e));
  }
  auto e = MakeExpr(Expr::Kind::kSlice, line);
  e->args.push_back(std::move(node));
  for (auto& part : parts) e->args.push_back(std::move(part));
  return Finish(std::move(e));
}

// At `(`: positional and keyword arguments up to and including `)`.
absl::Status Parser::ParseCallArgs(Expr& call) {
  SPW_RETURN_IF_ERROR(ExpectOp("("));
  bool first = true;
  while (!IsOp(")")) {
    if (!first) SPW_RETURN_IF_ERROR(ExpectOp(","));
    first = false;
    if (IsOp(")")) break;
    if (Cur().kind == TokenKind::kName && Peek().kind == TokenKind::kOperator &&
        Peek().text == "=") {
      std::string key = Cur().text;
      Advance();
      Advance();
      SPW_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      call.kwargs.emplace_back(std::move(key), std::move(value));
    } else {
      if (!call.kwargs.empty()) return Error(Cur(), "positional argument after keyword argument");
      SPW_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
      call.args.push_back(std::move(value));
    }
  }
  Advance();
  return absl::OkStatus();
}

absl::StatusOr<ExprPtr> Parser::ParseFilterExpr(ExprPtr node) {
  while (true) {
    int line = Cur().line;
    if (SkipOp("|")) {
      auto e = MakeExpr(Expr::Kind::kFilter, line);
      SPW_ASSIGN_OR_RETURN(e->name, ExpectName());
      e->args.push_back(std::move(node));
      if (IsOp("(")) SPW_RETURN_IF_ERROR(ParseCallArgs(*e));
      SPW_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
    } else if (IsName("is")) {
      Advance();
      SPW_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
    } else if (IsOp("(")) {
      auto call = MakeExpr(Expr::Kind::kCall, line);
      call->args.push_back(std::move(node));
      SPW_RETURN_IF_ERROR(ParseCallArgs(*call));
      SPW_ASSIGN_OR_RETURN(node, Finish(std::move(call)));
    } else {
      return node;
    }
  }
}

// After `is`: [not] name [args].
absl::StatusOr<ExprPtr> Parser::ParseTest(ExprPtr node) {
  auto e = MakeExpr(Expr::Kind::kTest, Cur().line);
  e->negated = SkipName("not");
  SPW_ASSIGN_OR_RETURN(e->name, ExpectName());
  e->args.push_back(std::move(node));
  if (IsOp("(")) {
    SPW_RETURN_IF_ERROR(ParseCallArgs(*e));
    return Finish(std::move(e));
  }
  const Token& t = Cur();
  bool starts_arg = t.kind == TokenKind::kName || t.kind == TokenKind::kString ||
                    t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat || IsOp("[") ||
                    IsOp("{");
  if (starts_arg && !IsName("else") && !IsName("or") && !IsName("and")) {
    if (IsName("is")) return Error(t, "you cannot chain multiple tests with 'is'");
    SPW_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
    SPW_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
    e->args.push_back(std::move(arg));
  }
  return Finish(std::move(e));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ast>> ParseTemplate(std::string_view source) {
  SPW_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace spillway::engine::chat::internal
