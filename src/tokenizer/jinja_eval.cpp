// The tree-walking renderer behind ChatTemplate::render. Scopes are a stack of small variable lists; a macro
// call starts a frame that sees its own scopes and the scopes enclosing its definition (a closure, as in
// jinja2), but not its caller's.
#include "tokenizer/jinja_eval.h"

#include <algorithm>
#include <new>

namespace anvil::jinja {
namespace {

// NOTE: nesting is already bounded by the parser (kMaxExprDepth, kMaxParseNesting); this bound covers what
// macro recursion adds on top, keeping the C++ stack well under 1 MiB even in sanitizer builds.
constexpr int kMaxRenderDepth = 600;

enum class Flow { kNormal, kBreak, kContinue };

using Scope = std::vector<std::pair<std::string, Value>>;

class Renderer {
 public:
  Renderer(const RenderLimits& limits) : limits_(limits) { sizes_.max_string_bytes = limits.max_output_bytes; }

  std::string run(const Template& tmpl, Scope variables) {
    scopes_.push_back(std::move(variables));
    std::string out;
    out_ = &out;
    exec_body(tmpl.body);
    return out;
  }

  int line() const { return line_; }

 private:
  struct DepthGuard {
    explicit DepthGuard(Renderer& r) : renderer(r) {
      if (++renderer.depth_ > kMaxRenderDepth)
        fail("template recursion deeper than " + std::to_string(kMaxRenderDepth));
    }
    ~DepthGuard() { --renderer.depth_; }
    Renderer& renderer;
  };

  void step(int line) {
    line_ = line;
    if (++steps_ > limits_.max_steps) {
      fail("render step limit of " + std::to_string(limits_.max_steps) + " exceeded (does the template loop forever?)");
    }
  }

  // Work proportional to the size of what an operation reads or builds, counted against the step limit so
  // that a loop over large strings or lists is bounded in time, not only in iterations.
  void charge(const Value& v) {
    int64_t cost = 0;
    if (v.is_string()) cost = static_cast<int64_t>(v.as_string().size() / 256);
    if (v.is_list()) cost = static_cast<int64_t>(v.as_list().items.size() / 8);
    if (v.is_dict()) cost = static_cast<int64_t>(v.as_dict().entries.size() / 8);
    steps_ += cost;
    if (steps_ > limits_.max_steps) step(line_);
  }
  Value charged(Value v) {
    charge(v);
    return v;
  }

  void emit(std::string_view s) {
    out_->append(s);
    if (out_->size() > limits_.max_output_bytes) {
      fail("rendered output longer than the limit of " + std::to_string(limits_.max_output_bytes) + " bytes");
    }
  }

  // ---- variables ----

  Value lookup(const std::string& name) const {
    for (size_t i = scopes_.size(); i-- > frame_base_;) {
      for (const auto& [key, value] : scopes_[i]) {
        if (key == name) return value;
      }
    }
    for (size_t i = std::min(outer_depth_, frame_base_); i-- > 0;) {
      for (const auto& [key, value] : scopes_[i]) {
        if (key == name) return value;
      }
    }
    if (is_supported_global(name)) {
      auto fn = std::make_shared<Callable>();
      fn->kind = Callable::Kind::kGlobal;
      fn->name = name;
      return Value::callable(std::move(fn));
    }
    return Value::undefined("'" + name + "' is undefined");
  }

  void assign(const std::string& name, Value value) {
    Scope& scope = scopes_.back();
    for (auto& [key, existing] : scope) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    scope.emplace_back(name, std::move(value));
  }

  void assign_targets(const std::vector<std::string>& targets, const Value& value) {
    if (targets.size() == 1) {
      assign(targets[0], value);
      return;
    }
    const std::vector<Value> items = iterate(value);
    if (items.size() != targets.size()) {
      fail("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) +
           " names");
    }
    for (size_t i = 0; i < targets.size(); ++i) assign(targets[i], items[i]);
  }

  // ---- statements ----

  Flow exec_body(const StmtList& body) {
    for (const StmtPtr& s : body) {
      const Flow flow = exec(*s);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  std::string capture(const StmtList& body) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    exec_body(body);
    out_ = saved;
    return buffer;
  }

  Flow exec(const Stmt& s) {
    DepthGuard guard(*this);
    step(s.line);
    switch (s.kind) {
      case StmtKind::kText:
        emit(s.text);
        return Flow::kNormal;
      case StmtKind::kOutput:
        emit(to_str(eval(*s.expr)));
        return Flow::kNormal;
      case StmtKind::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (!cond || truthy(eval(*cond))) return exec_body(body);
        }
        return Flow::kNormal;
      case StmtKind::kFor:
        return exec_for(s);
      case StmtKind::kSet:
        exec_set(s);
        return Flow::kNormal;
      case StmtKind::kSetBlock:
        assign(s.targets[0], Value::string(capture(s.body)));
        return Flow::kNormal;
      case StmtKind::kMacro: {
        auto fn = std::make_shared<Callable>();
        fn->kind = Callable::Kind::kMacro;
        fn->name = s.name;
        fn->macro = &s;
        fn->scope_depth = scopes_.size();
        assign(s.name, Value::callable(std::move(fn)));
        return Flow::kNormal;
      }
      case StmtKind::kWith: {
        std::vector<Value> values;
        for (const ExprPtr& e : s.defaults) values.push_back(eval(*e));
        scopes_.emplace_back();
        for (size_t i = 0; i < s.targets.size(); ++i) assign(s.targets[i], values[i]);
        const Flow flow = exec_body(s.body);
        scopes_.pop_back();
        return flow;
      }
      case StmtKind::kBlock:
        return exec_body(s.body);
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  void exec_set(const Stmt& s) {
    Value value = eval(*s.expr);
    if (s.attr.empty()) {
      assign_targets(s.targets, value);
      return;
    }
    const Value target = lookup(s.targets[0]);
    if (target.kind() != ValueKind::kNamespace) {
      fail("cannot assign attribute '" + s.attr + "' on '" + s.targets[0] + "', which is not a namespace");
    }
    if (value.kind() == ValueKind::kNamespace) fail("a namespace cannot hold another namespace");
    target.namespace_attrs().set(s.attr, std::move(value));
  }

  Flow exec_for(const Stmt& s) {
    std::vector<Value> items = iterate(eval(*s.expr));
    // One scope serves the whole loop and is emptied before each iteration: every iteration starts fresh,
    // as in jinja2, without allocating a scope per iteration.
    scopes_.emplace_back();
    if (s.filter) {
      std::vector<Value> kept;
      for (Value& item : items) {
        step(s.line);
        scopes_.back().clear();
        assign_targets(s.targets, item);
        if (truthy(eval(*s.filter))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    Flow flow = Flow::kNormal;
    const auto length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      step(s.line);
      scopes_.back().clear();
      assign_targets(s.targets, items[static_cast<size_t>(i)]);
      if (s.uses_loop) assign("loop", make_loop(items, i));
      if (exec_body(s.body) == Flow::kBreak) break;
    }
    if (length == 0 && !s.else_body.empty()) {
      scopes_.back().clear();
      flow = exec_body(s.else_body);
    }
    scopes_.pop_back();
    return flow;
  }

  static Value make_loop(const std::vector<Value>& items, int64_t i) {
    const auto length = static_cast<int64_t>(items.size());
    auto loop = std::make_shared<Dict>();
    loop->set("index", Value::integer(i + 1));
    loop->set("index0", Value::integer(i));
    loop->set("revindex", Value::integer(length - i));
    loop->set("revindex0", Value::integer(length - i - 1));
    loop->set("first", Value::boolean(i == 0));
    loop->set("last", Value::boolean(i == length - 1));
    loop->set("length", Value::integer(length));
    loop->set("depth", Value::integer(1));
    loop->set("depth0", Value::integer(0));
    if (i > 0) loop->set("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < length) loop->set("nextitem", items[static_cast<size_t>(i + 1)]);
    return Value::dict(std::move(loop));
  }

  // ---- expressions ----

  CallArgs eval_args(const Expr& e, size_t first) {
    CallArgs call;
    for (size_t i = first; i < e.children.size(); ++i) call.args.push_back(eval(*e.children[i]));
    for (const auto& [key, value] : e.kwargs) call.kwargs.emplace_back(key, eval(*value));
    return call;
  }

  Value eval_or_undefined(const ExprPtr& e) { return e ? eval(*e) : Value(); }

  Value eval(const Expr& e) {
    DepthGuard guard(*this);
    step(e.line);
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName:
        return lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        std::vector<Value> items;
        for (const ExprPtr& c : e.children) items.push_back(eval(*c));
        return make_list(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        auto dict = std::make_shared<Dict>();
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          const Value key = eval(*e.children[i]);
          if (!key.is_string()) fail(std::string("dict keys must be strings, not ") + type_name(key));
          dict->set(key.as_string(), eval(*e.children[i + 1]));
        }
        return Value::dict(std::move(dict));
      }
      case ExprKind::kGetAttr:
        return get_attribute(eval(*e.children[0]), e.name);
      case ExprKind::kGetItem: {
        const Value obj = eval(*e.children[0]);
        return get_item(obj, eval(*e.children[1]));
      }
      case ExprKind::kSlice: {
        const Value obj = eval(*e.children[0]);
        return get_slice(obj, eval_or_undefined(e.children[1]), eval_or_undefined(e.children[2]),
                         eval_or_undefined(e.children[3]));
      }
      case ExprKind::kCall:
        return eval_call(e);
      case ExprKind::kFilter: {
        const Value input = eval(*e.children[0]);
        charge(input);
        return charged(apply_filter(e.name, input, eval_args(e, 1), sizes_));
      }
      case ExprKind::kTest: {
        const Value input = eval(*e.children[0]);
        charge(input);
        return Value::boolean(apply_test(e.name, input, eval_args(e, 1)) != e.negated);
      }
      case ExprKind::kNeg:
        return negate(eval(*e.children[0]));
      case ExprKind::kPos: {
        Value v = eval(*e.children[0]);
        if (!v.is_number()) fail(std::string("bad operand type for unary +: '") + type_name(v) + "'");
        return v.kind() == ValueKind::kBool ? Value::integer(v.as_int()) : v;
      }
      case ExprKind::kNot:
        return Value::boolean(!truthy(eval(*e.children[0])));
      case ExprKind::kBinary: {
        const Value a = eval(*e.children[0]);
        return charged(binary_op(e.name, a, eval(*e.children[1]), sizes_));
      }
      case ExprKind::kCompare:
        return Value::boolean(eval_compare(e));
      case ExprKind::kAnd: {
        Value a = eval(*e.children[0]);
        return truthy(a) ? eval(*e.children[1]) : a;
      }
      case ExprKind::kOr: {
        Value a = eval(*e.children[0]);
        return truthy(a) ? a : eval(*e.children[1]);
      }
      case ExprKind::kCondExpr:
        if (truthy(eval(*e.children[1]))) return eval(*e.children[0]);
        return eval_or_undefined(e.children[2]);
    }
    return Value();
  }

  bool eval_compare(const Expr& e) {
    Value left = eval(*e.children[0]);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = eval(*e.children[i + 1]);
      charge(left);
      charge(right);
      const std::string& op = e.ops[i];
      if (op != "==" && op != "!=" && op != "in" && op != "notin") {
        // Python's undefined raises on ordering comparisons.
        for (const Value* v : {&left, &right}) {
          if (v->is_undefined()) fail(v->undefined_name().empty() ? "a value is undefined" : v->undefined_name());
        }
      }
      bool result = false;
      if (op == "==") {
        result = equals(left, right);
      } else if (op == "!=") {
        result = !equals(left, right);
      } else if (op == "<") {
        result = less_than(left, right);
      } else if (op == "<=") {
        result = equals(left, right) || less_than(left, right);
      } else if (op == ">") {
        result = less_than(right, left);
      } else if (op == ">=") {
        result = equals(left, right) || less_than(right, left);
      } else if (op == "in") {
        result = contains(right, left);
      } else {
        result = !contains(right, left);
      }
      if (!result) return false;
      left = std::move(right);
    }
    return true;
  }

  Value eval_call(const Expr& e) {
    const Value callee = eval(*e.children[0]);
    CallArgs call = eval_args(e, 1);
    if (callee.is_undefined()) {
      const std::string& reason = callee.undefined_name();
      fail(reason.empty() ? "call of an undefined value" : reason);
    }
    if (callee.kind() != ValueKind::kCallable) fail(std::string("'") + type_name(callee) + "' object is not callable");
    const Callable& fn = callee.as_callable();
    charge(fn.receiver);
    for (const Value& arg : call.args) charge(arg);
    switch (fn.kind) {
      case Callable::Kind::kGlobal:
        return charged(call_global(fn.name, call, sizes_));
      case Callable::Kind::kMethod:
        return charged(call_method(fn.receiver, fn.name, call, sizes_));
      case Callable::Kind::kMacro:
        return call_macro(*static_cast<const Stmt*>(fn.macro), fn.scope_depth, call);
    }
    return Value();
  }

  Value call_macro(const Stmt& m, size_t scope_depth, const CallArgs& call) {
    if (macro_depth_ >= limits_.max_macro_depth) {
      fail("macro calls nested deeper than " + std::to_string(limits_.max_macro_depth));
    }
    if (call.args.size() > m.params.size()) {
      fail("macro '" + m.name + "' takes at most " + std::to_string(m.params.size()) + " argument(s)");
    }
    std::vector<bool> given(m.params.size(), false);
    std::vector<Value> values(m.params.size());
    for (size_t i = 0; i < call.args.size(); ++i) {
      values[i] = call.args[i];
      given[i] = true;
    }
    for (const auto& [key, value] : call.kwargs) {
      size_t i = 0;
      while (i < m.params.size() && m.params[i] != key) ++i;
      if (i == m.params.size()) fail("macro '" + m.name + "' has no parameter named '" + key + "'");
      values[i] = value;
      given[i] = true;
    }
    const size_t saved_base = frame_base_;
    const size_t saved_outer = outer_depth_;
    std::string* saved_out = out_;
    std::string buffer;
    ++macro_depth_;
    outer_depth_ = std::min(scope_depth, scopes_.size());
    scopes_.emplace_back();
    frame_base_ = scopes_.size() - 1;
    out_ = &buffer;
    for (size_t i = 0; i < m.params.size(); ++i) {
      assign(m.params[i], given[i] ? values[i] : (m.defaults[i] ? eval(*m.defaults[i]) : Value()));
    }
    exec_body(m.body);
    scopes_.pop_back();
    frame_base_ = saved_base;
    outer_depth_ = saved_outer;
    out_ = saved_out;
    --macro_depth_;
    return Value::string(std::move(buffer));
  }

  RenderLimits limits_;
  Limits sizes_;
  std::vector<Scope> scopes_;
  size_t frame_base_ = 0;   // the first scope of the current macro frame (0 outside macros)
  size_t outer_depth_ = 0;  // scopes [0, outer_depth_) enclosing the current macro's definition
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  int depth_ = 0;
  int macro_depth_ = 0;
  int line_ = 1;
};

}  // namespace

Expected<std::string> render_template(const Template& tmpl, std::vector<std::pair<std::string, Value>> variables,
                                      const RenderLimits& limits) {
  Renderer renderer(limits);
  try {
    return renderer.run(tmpl, std::move(variables));
  } catch (const RenderError& e) {
    return invalid_argument("chat template line " + std::to_string(renderer.line()) + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return resource_exhausted("chat template: out of memory while rendering");
  }
}

}  // namespace anvil::jinja
