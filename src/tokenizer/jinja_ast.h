// The parsed form of a chat template: expression and statement trees that jinja_parser builds and
// jinja_eval walks. One struct per tree level with a kind tag; each kind uses the fields its comment names.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace anvil::jinja {

enum class ExprKind {
  kLiteral,   // literal
  kName,      // name
  kList,      // children: items
  kTuple,     // children: items
  kDict,      // children: key0, value0, key1, value1, ...
  kGetAttr,   // children[0].name
  kGetItem,   // children[0][children[1]]
  kSlice,     // children[0][children[1]:children[2]:children[3]] (null children are omitted bounds)
  kCall,      // children[0](children[1..], kwargs)
  kFilter,    // children[0] | name(children[1..], kwargs)
  kTest,      // children[0] is [not] name(children[1..], kwargs)
  kNeg,       // -children[0]
  kPos,       // +children[0]
  kNot,       // not children[0]
  kBinary,    // children[0] op children[1]: + - * / // % ** ~
  kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ... (chained)
  kAnd,       // children[0] and children[1]
  kOr,        // children[0] or children[1]
  kCondExpr,  // children[0] if children[1] else children[2] (children[2] may be null)
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 1;
  int depth = 1;  // height of the tree below, bounded by the parser
  Value literal;
  std::string name;      // kName, kGetAttr, kFilter, kTest; the operator for kBinary
  bool negated = false;  // kTest: "is not"
  std::vector<std::unique_ptr<Expr>> children;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  std::vector<std::string> ops;  // kCompare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
};
using ExprPtr = std::unique_ptr<Expr>;

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // branches: (condition or null for else, body)
  kFor,       // for targets in expr [if filter]: body [else: else_body]
  kSet,       // set targets = expr, or set targets[0].attr = expr (namespace attribute)
  kSetBlock,  // set targets[0] %}body{% endset
  kMacro,     // macro name(params = defaults): body
  kWith,      // with targets = values: body
  kBlock,     // a body in its own output position ({% generation %} from transformers)
  kBreak,
  kContinue,
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 1;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  std::vector<std::pair<ExprPtr, StmtList>> branches;
  StmtList body;
  StmtList else_body;
  std::string name;                 // kMacro
  std::vector<std::string> params;  // kMacro
  std::vector<ExprPtr> defaults;    // kMacro: one per param, null when it has none; kWith: the values
  bool uses_loop = false;           // kFor: the body mentions `loop`, so the renderer must build it
};

struct Template {
  StmtList body;
};

}  // namespace anvil::jinja
