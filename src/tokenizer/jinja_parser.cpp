// Recursive-descent parser mirroring jinja2/parser.py: statements (for, if, set, macro, with, print,
// generation, break, continue), expressions with jinja2's precedence (condexpr < or < and < not < compare <
// +,- < ~ < *,/,//,% < ** < unary < postfix/filters/tests), and parse-time checks of every name it can check.
#include "tokenizer/jinja_parser.h"

#include <algorithm>
#include <initializer_list>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_lexer.h"

namespace anvil::jinja {
namespace {

// Tags jinja2 knows that this renderer does not implement.
constexpr std::string_view kUnsupportedTags[] = {"include", "extends", "import",     "from", "block",
                                                 "call",    "filter",  "autoescape", "do",   "raw"};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  std::shared_ptr<const Template> run() {
    auto tmpl = std::make_shared<Template>();
    tmpl->body = parse_body({}, nullptr, "", 0);
    return tmpl;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(size_t n = 1) const { return tokens_[std::min(pos_ + n, tokens_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  static bool is_op(const Token& t, std::string_view op) { return t.kind == TokenKind::kOperator && t.text == op; }
  static bool is_name(const Token& t, std::string_view n) { return t.kind == TokenKind::kName && t.text == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(cur(), op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(cur(), n)) return false;
    advance();
    return true;
  }

  [[noreturn]] void error(int line, const std::string& message) const {
    fail("chat template line " + std::to_string(line) + ": " + message);
  }
  [[noreturn]] void error(const std::string& message) const { error(cur().line, message); }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TokenKind::kEof:
        return "end of template";
      case TokenKind::kBlockEnd:
        return "'%}'";
      case TokenKind::kVariableEnd:
        return "'}}'";
      case TokenKind::kData:
        return "template text";
      case TokenKind::kString:
        return "a string";
      default:
        return "'" + t.text + "'";
    }
  }

  void expect_op(std::string_view op) {
    if (!skip_op(op)) error("expected '" + std::string(op) + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::kName) error("expected a name, got " + describe(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::kBlockEnd) error("expected '%}', got " + describe(cur()));
    advance();
  }

  struct DepthGuard {
    DepthGuard(Parser& p) : parser(p) {
      if (++parser.nesting_ > kMaxParseNesting) {
        parser.error("template nested deeper than " + std::to_string(kMaxParseNesting) + " levels");
      }
    }
    ~DepthGuard() { --parser.nesting_; }
    Parser& parser;
  };

  ExprPtr node(ExprKind kind, int line, std::vector<ExprPtr> children = {}) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    e->children = std::move(children);
    finish(*e);
    return e;
  }
  void finish(Expr& e) {
    int depth = 1;
    for (const auto& c : e.children) {
      if (c) depth = std::max(depth, c->depth + 1);
    }
    for (const auto& kw : e.kwargs) depth = std::max(depth, kw.second->depth + 1);
    if (depth > kMaxExprDepth) error(e.line, "expression nested deeper than " + std::to_string(kMaxExprDepth));
    e.depth = depth;
  }

  // ---- statements ----

  // Parses until a block tag named in `end_tags` (consumed, its name stored in `found`) or the end.
  StmtList parse_body(std::initializer_list<std::string_view> end_tags, std::string* found, std::string_view opener,
                      int opener_line) {
    StmtList body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::kEof) {
        if (end_tags.size() == 0) return body;
        error(opener_line, "'" + std::string(opener) + "' block is never closed (expected '" +
                               std::string(*end_tags.begin()) + "')");
      }
      if (t.kind == TokenKind::kData) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        advance();
      } else if (t.kind == TokenKind::kVariableBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = t.line;
        advance();
        s->expr = parse_tuple(false, true, {});
        if (cur().kind != TokenKind::kVariableEnd) error("expected '}}', got " + describe(cur()));
        advance();
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::kBlockBegin) {
        advance();
        const Token& tag = cur();
        if (tag.kind != TokenKind::kName) error("expected a tag name after '{%', got " + describe(tag));
        if (std::find(end_tags.begin(), end_tags.end(), tag.text) != end_tags.end()) {
          *found = tag.text;
          advance();
          return body;
        }
        body.push_back(parse_statement());
      } else {
        error("unexpected " + describe(t));
      }
    }
  }

  StmtPtr parse_statement() {
    DepthGuard guard(*this);
    const Token tag = cur();
    const std::string& n = tag.text;
    advance();
    auto s = std::make_unique<Stmt>();
    s->line = tag.line;
    if (n == "for") {
      parse_for(*s);
    } else if (n == "if") {
      parse_if(*s);
    } else if (n == "set") {
      parse_set(*s);
    } else if (n == "macro") {
      parse_macro(*s);
    } else if (n == "with") {
      parse_with(*s);
    } else if (n == "print") {
      s->kind = StmtKind::kOutput;
      s->expr = parse_tuple(false, true, {});
      expect_block_end();
    } else if (n == "generation") {
      s->kind = StmtKind::kBlock;
      expect_block_end();
      std::string found;
      s->body = parse_body({"endgeneration"}, &found, "generation", tag.line);
      expect_block_end();
    } else if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) error(tag.line, "'" + n + "' outside of a for loop");
      s->kind = n == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      expect_block_end();
    } else if (std::find(std::begin(kUnsupportedTags), std::end(kUnsupportedTags), n) != std::end(kUnsupportedTags)) {
      error(tag.line, "unsupported tag '" + n + "'");
    } else if (n.rfind("end", 0) == 0 || n == "else" || n == "elif") {
      error(tag.line, "unexpected '" + n + "' (no open block it could close)");
    } else {
      error(tag.line, "unknown tag '" + n + "'");
    }
    return s;
  }

  // Assignment targets: names, or `ns.attr` when `allow_namespace`; "(a, b)" and "a, b" unpack.
  void parse_targets(Stmt& s, bool allow_namespace, std::string_view end_name) {
    const bool parens = skip_op("(");
    while (true) {
      const int line = cur().line;
      std::string n = expect_name();
      if (allow_namespace && !parens && skip_op(".")) {
        s.attr = expect_name();
        if (!s.targets.empty() || is_op(cur(), ",")) error(line, "cannot unpack into a namespace attribute");
      }
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None") {
        error(line, "cannot assign to '" + n + "'");
      }
      s.targets.push_back(std::move(n));
      if (!skip_op(",")) break;
      if (parens ? is_op(cur(), ")") : (is_name(cur(), end_name) || is_op(cur(), "="))) break;
    }
    if (parens) expect_op(")");
  }

  void parse_for(Stmt& s) {
    s.kind = StmtKind::kFor;
    parse_targets(s, false, "in");
    if (!skip_name("in")) error("expected 'in' in a for loop, got " + describe(cur()));
    s.expr = parse_tuple(false, false, {"recursive", "if"});
    if (skip_name("if")) s.filter = parse_expression(true);
    if (is_name(cur(), "recursive")) error("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    const int loop_refs_before = loop_refs_;
    std::string found;
    s.body = parse_body({"endfor", "else"}, &found, "for", s.line);
    s.uses_loop = loop_refs_ != loop_refs_before;
    --loop_depth_;
    if (found == "else") {
      expect_block_end();
      s.else_body = parse_body({"endfor"}, &found, "for", s.line);
    }
    expect_block_end();
  }

  void parse_if(Stmt& s) {
    s.kind = StmtKind::kIf;
    ExprPtr cond = parse_tuple(false, false, {});
    while (true) {
      expect_block_end();
      std::string found;
      StmtList body = parse_body({"elif", "else", "endif"}, &found, "if", s.line);
      s.branches.emplace_back(std::move(cond), std::move(body));
      if (found == "elif") {
        cond = parse_tuple(false, false, {});
        continue;
      }
      if (found == "else") {
        expect_block_end();
        StmtList else_body = parse_body({"endif"}, &found, "if", s.line);
        s.branches.emplace_back(nullptr, std::move(else_body));
      }
      expect_block_end();
      return;
    }
  }

  void parse_set(Stmt& s) {
    parse_targets(s, true, "");
    if (skip_op("=")) {
      s.kind = StmtKind::kSet;
      s.expr = parse_tuple(false, true, {});
      expect_block_end();
      return;
    }
    if (is_op(cur(), "|")) error("filters on a '{% set %}' block are not supported");
    if (s.targets.size() != 1 || !s.attr.empty()) error(s.line, "a '{% set %}' block assigns to one name");
    s.kind = StmtKind::kSetBlock;
    expect_block_end();
    std::string found;
    s.body = parse_body({"endset"}, &found, "set", s.line);
    expect_block_end();
  }

  void parse_macro(Stmt& s) {
    s.kind = StmtKind::kMacro;
    s.name = expect_name();
    expect_op("(");
    while (!is_op(cur(), ")")) {
      if (!s.params.empty()) expect_op(",");
      if (is_op(cur(), ")")) break;
      s.params.push_back(expect_name());
      s.defaults.push_back(skip_op("=") ? parse_expression(true) : nullptr);
    }
    expect_op(")");
    expect_block_end();
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string found;
    s.body = parse_body({"endmacro"}, &found, "macro", s.line);
    loop_depth_ = saved_loop_depth;
    expect_block_end();
  }

  void parse_with(Stmt& s) {
    s.kind = StmtKind::kWith;
    while (cur().kind != TokenKind::kBlockEnd) {
      if (!s.targets.empty()) expect_op(",");
      s.targets.push_back(expect_name());
      expect_op("=");
      s.defaults.push_back(parse_expression(true));
    }
    expect_block_end();
    std::string found;
    s.body = parse_body({"endwith"}, &found, "with", s.line);
    expect_block_end();
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<std::string_view> extra_end) const {
    const Token& t = cur();
    if (t.kind == TokenKind::kVariableEnd || t.kind == TokenKind::kBlockEnd || is_op(t, ")")) return true;
    if (t.kind != TokenKind::kName) return false;
    return std::find(extra_end.begin(), extra_end.end(), t.text) != extra_end.end();
  }

  ExprPtr parse_tuple(bool explicit_parens, bool with_condexpr, std::initializer_list<std::string_view> extra_end) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (!is_op(cur(), ",")) break;
      is_tuple = true;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) error("expected an expression, got " + describe(cur()));
    }
    return node(ExprKind::kTuple, line, std::move(items));
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    DepthGuard guard(*this);
    const int line = cur().line;
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      ExprPtr cond = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      std::vector<ExprPtr> children;
      children.push_back(std::move(expr));
      children.push_back(std::move(cond));
      children.push_back(std::move(otherwise));
      expr = node(ExprKind::kCondExpr, line, std::move(children));
    }
    return expr;
  }

  ExprPtr binary(ExprKind kind, int line, ExprPtr a, ExprPtr b, std::string op = {}) {
    std::vector<ExprPtr> children;
    children.push_back(std::move(a));
    children.push_back(std::move(b));
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    e->name = std::move(op);
    e->children = std::move(children);
    finish(*e);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name(cur(), "or")) {
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kOr, line, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name(cur(), "and")) {
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kAnd, line, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name(cur(), "not")) {
      DepthGuard guard(*this);
      const int line = cur().line;
      advance();
      std::vector<ExprPtr> children;
      children.push_back(parse_not());
      return node(ExprKind::kNot, line, std::move(children));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    std::vector<ExprPtr> children;
    std::vector<std::string> ops;
    while (true) {
      const Token& t = cur();
      if (t.kind == TokenKind::kOperator &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
        ops.push_back(t.text);
        advance();
      } else if (is_name(t, "in")) {
        ops.push_back("in");
        advance();
      } else if (is_name(t, "not") && is_name(peek(), "in")) {
        ops.push_back("notin");
        advance();
        advance();
      } else {
        break;
      }
      children.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    children.insert(children.begin(), std::move(first));
    auto e = node(ExprKind::kCompare, line, std::move(children));
    e->ops = std::move(ops);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op(cur(), "+") || is_op(cur(), "-")) {
      const std::string op = cur().text;
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kBinary, line, std::move(left), parse_concat(), op);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op(cur(), "~")) {
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kBinary, line, std::move(left), parse_math2(), "~");
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op(cur(), "*") || is_op(cur(), "/") || is_op(cur(), "//") || is_op(cur(), "%")) {
      const std::string op = cur().text;
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kBinary, line, std::move(left), parse_pow(), op);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op(cur(), "**")) {
      const int line = cur().line;
      advance();
      left = binary(ExprKind::kBinary, line, std::move(left), parse_unary(true), "**");
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    const int line = cur().line;
    ExprPtr e;
    if (is_op(cur(), "-") || is_op(cur(), "+")) {
      const ExprKind kind = cur().text == "-" ? ExprKind::kNeg : ExprKind::kPos;
      advance();
      std::vector<ExprPtr> children;
      children.push_back(parse_unary(false));
      e = node(kind, line, std::move(children));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token t = cur();
    if (t.kind == TokenKind::kName) {
      advance();
      auto e = node(ExprKind::kLiteral, t.line);
      if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
        e->literal = Value::boolean(t.text == "true" || t.text == "True");
      } else if (t.text == "none" || t.text == "None") {
        e->literal = Value::none();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.text;
        if (t.text == "loop") ++loop_refs_;
      }
      return e;
    }
    if (t.kind == TokenKind::kString) {
      std::string text;
      while (cur().kind == TokenKind::kString) {
        text += cur().text;
        advance();
      }
      auto e = node(ExprKind::kLiteral, t.line);
      e->literal = Value::string(std::move(text));
      return e;
    }
    if (t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat) {
      advance();
      auto e = node(ExprKind::kLiteral, t.line);
      e->literal = t.kind == TokenKind::kInteger ? Value::integer(t.int_value) : Value::floating(t.float_value);
      return e;
    }
    if (is_op(t, "(")) {
      advance();
      ExprPtr e = parse_tuple(true, true, {});
      expect_op(")");
      return e;
    }
    if (is_op(t, "[")) {
      advance();
      std::vector<ExprPtr> items;
      while (!is_op(cur(), "]")) {
        if (!items.empty()) expect_op(",");
        if (is_op(cur(), "]")) break;
        items.push_back(parse_expression(true));
      }
      expect_op("]");
      return node(ExprKind::kList, t.line, std::move(items));
    }
    if (is_op(t, "{")) {
      advance();
      std::vector<ExprPtr> items;
      while (!is_op(cur(), "}")) {
        if (!items.empty()) expect_op(",");
        if (is_op(cur(), "}")) break;
        items.push_back(parse_expression(true));
        expect_op(":");
        items.push_back(parse_expression(true));
      }
      expect_op("}");
      return node(ExprKind::kDict, t.line, std::move(items));
    }
    error("unexpected " + describe(t) + " in an expression");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(cur(), ".") || is_op(cur(), "[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op(cur(), "(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op(cur(), "|")) {
        e = parse_filter(std::move(e));
      } else if (is_name(cur(), "is")) {
        e = parse_test(std::move(e));
      } else if (is_op(cur(), "(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr e) {
    const int line = cur().line;
    if (skip_op(".")) {
      const Token t = cur();
      advance();
      if (t.kind == TokenKind::kName) {
        std::vector<ExprPtr> children;
        children.push_back(std::move(e));
        auto g = node(ExprKind::kGetAttr, line, std::move(children));
        g->name = t.text;
        return g;
      }
      if (t.kind != TokenKind::kInteger) error(t.line, "expected a name or a number after '.'");
      auto index = node(ExprKind::kLiteral, t.line);
      index->literal = Value::integer(t.int_value);
      std::vector<ExprPtr> children;
      children.push_back(std::move(e));
      children.push_back(std::move(index));
      return node(ExprKind::kGetItem, line, std::move(children));
    }
    expect_op("[");
    std::vector<ExprPtr> args;
    while (!is_op(cur(), "]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    ExprPtr key;
    if (args.size() == 1) {  // x[] looks up the empty tuple, as in jinja2
      key = std::move(args[0]);
    } else {
      for (const ExprPtr& arg : args) {
        if (arg->kind == ExprKind::kSlice) error(line, "slices inside a tuple subscript are not supported");
      }
      key = node(ExprKind::kTuple, line, std::move(args));
    }
    if (key->kind == ExprKind::kSlice) {
      key->children.insert(key->children.begin(), std::move(e));
      finish(*key);
      return key;
    }
    std::vector<ExprPtr> children;
    children.push_back(std::move(e));
    children.push_back(std::move(key));
    return node(ExprKind::kGetItem, line, std::move(children));
  }

  // One subscript: an expression, or a slice start:stop:step (returned as a kSlice without its object).
  ExprPtr parse_subscribed() {
    const int line = cur().line;
    ExprPtr start;
    if (!is_op(cur(), ":")) {
      start = parse_expression(true);
      if (!is_op(cur(), ":")) return start;
    }
    advance();  // the ':'
    auto bound_end = [&] { return is_op(cur(), "]") || is_op(cur(), ",") || is_op(cur(), ":"); };
    ExprPtr stop = bound_end() ? nullptr : parse_expression(true);
    ExprPtr step;
    if (skip_op(":")) step = (is_op(cur(), "]") || is_op(cur(), ",")) ? nullptr : parse_expression(true);
    std::vector<ExprPtr> children;
    children.push_back(std::move(start));
    children.push_back(std::move(stop));
    children.push_back(std::move(step));
    return node(ExprKind::kSlice, line, std::move(children));
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool need_comma = false;
    while (!is_op(cur(), ")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(cur(), ")")) break;
      }
      if (is_op(cur(), "*") || is_op(cur(), "**")) error("'*args' and '**kwargs' in calls are not supported");
      if (cur().kind == TokenKind::kName && is_op(peek(), "=")) {
        std::string key = cur().text;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) error("a positional argument follows a keyword argument");
        e.children.push_back(parse_expression(true));
      }
      need_comma = true;
    }
    expect_op(")");
    finish(e);
  }

  ExprPtr parse_call(ExprPtr callee) {
    const int line = cur().line;
    if (callee->kind == ExprKind::kGetAttr && !is_supported_method(callee->name)) {
      error(line, "unsupported method '" + callee->name + "'");
    }
    if (callee->kind == ExprKind::kName && is_unsupported_global(callee->name)) {
      error(line, "unsupported function '" + callee->name + "'");
    }
    std::vector<ExprPtr> children;
    children.push_back(std::move(callee));
    auto e = node(ExprKind::kCall, line, std::move(children));
    parse_call_args(*e);
    return e;
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (skip_op(".")) {
      n += '.';
      n += expect_name();
    }
    return n;
  }

  ExprPtr parse_filter(ExprPtr operand) {
    const int line = cur().line;
    advance();  // '|'
    std::string n = dotted_name();
    if (!is_supported_filter(n)) error(line, "unsupported filter '" + n + "'");
    std::vector<ExprPtr> children;
    children.push_back(std::move(operand));
    auto e = node(ExprKind::kFilter, line, std::move(children));
    e->name = std::move(n);
    if (is_op(cur(), "(")) parse_call_args(*e);
    return e;
  }

  ExprPtr parse_test(ExprPtr operand) {
    const int line = cur().line;
    advance();  // 'is'
    const bool negated = skip_name("not");
    std::string n = dotted_name();
    if (!is_supported_test(n)) error(line, "unsupported test '" + n + "'");
    std::vector<ExprPtr> children;
    children.push_back(std::move(operand));
    auto e = node(ExprKind::kTest, line, std::move(children));
    e->name = std::move(n);
    e->negated = negated;
    const Token& t = cur();
    if (is_op(t, "(")) {
      parse_call_args(*e);
    } else if ((t.kind == TokenKind::kName || t.kind == TokenKind::kString || t.kind == TokenKind::kInteger ||
                t.kind == TokenKind::kFloat || is_op(t, "[") || is_op(t, "{")) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
      if (is_name(t, "is")) error("tests cannot be chained with 'is'");
      e->children.push_back(parse_postfix(parse_primary()));
      finish(*e);
    }
    return e;
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int nesting_ = 0;
  int loop_depth_ = 0;
  int loop_refs_ = 0;  // how many times the name `loop` has been parsed so far
};

}  // namespace

Expected<std::shared_ptr<const Template>> parse_template(std::string_view source) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<Token> tokens, tokenize(source, LexOptions{}));
  try {
    Parser parser(std::move(tokens));
    return parser.run();
  } catch (const RenderError& e) {
    return invalid_argument(e.message);
  }
}

}  // namespace anvil::jinja
