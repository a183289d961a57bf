// The values a chat template computes with, modelled on the Python objects Jinja2 sees: undefined, None, bool,
// int, float, str, list/tuple, dict, namespace and callables. Their text forms (str(), repr(), json.dumps as
// transformers configures it) and Python's equality, ordering and truthiness rules live here, so the renderer
// can match Python's jinja2 byte for byte. Strings are UTF-8 and are indexed by code point, as Python does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja_unicode.h"

namespace anvil::jinja {

// A template error found while rendering. Thrown inside the renderer only and turned into a Status at the
// ChatTemplate boundary (see chat_template.cpp); it never escapes the library.
struct RenderError {
  std::string message;
};
[[noreturn]] void fail(std::string message);

enum class ValueKind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

class Value;
struct List;
struct Dict;
struct Callable;

class Value {
 public:
  Value() = default;  // undefined
  static Value undefined(std::string name_hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value list(std::vector<Value> items);
  static Value tuple(std::vector<Value> items);
  static Value list_object(std::shared_ptr<List> list);
  static Value dict(std::shared_ptr<Dict> dict);
  static Value namespace_object(std::shared_ptr<Dict> attrs);
  static Value callable(std::shared_ptr<const Callable> fn);

  ValueKind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == ValueKind::kUndefined; }
  bool is_none() const { return kind_ == ValueKind::kNone; }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_list() const { return kind_ == ValueKind::kList; }
  bool is_dict() const { return kind_ == ValueKind::kDict; }
  // int or bool (Python's bool is an int).
  bool is_integral() const { return kind_ == ValueKind::kInt || kind_ == ValueKind::kBool; }
  bool is_number() const { return is_integral() || kind_ == ValueKind::kFloat; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_float() const { return kind_ == ValueKind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return *str_; }
  const List& as_list() const { return *list_; }
  const Dict& as_dict() const { return *dict_; }
  Dict& namespace_attrs() const { return *dict_; }
  const Callable& as_callable() const { return *callable_; }
  const std::shared_ptr<const Callable>& callable_ptr() const { return callable_; }
  // The name an undefined value was looked up under ("" if unknown), for error messages.
  const std::string& undefined_name() const;

  // Nesting depth of containers (1 for scalars), bounded so that printing and comparing cannot overflow the stack.
  int depth() const;

 private:
  ValueKind kind_ = ValueKind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::shared_ptr<const std::string> str_;  // kString; the name hint for kUndefined
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;  // kDict, kNamespace
  std::shared_ptr<const Callable> callable_;
};

// The deepest nesting of lists, dicts and namespaces a value may have.
inline constexpr int kMaxValueDepth = 64;

struct List {
  std::vector<Value> items;
  bool is_tuple = false;
  int depth = 1;
};

// A Python dict with string keys, in insertion order (templates print and serialize dicts in that order).
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  int depth = 1;

  const Value* find(std::string_view key) const;
  // Inserts or replaces, keeping the first insertion's position.
  void set(std::string key, Value value);
};

// Something a template can call: a global function, a macro, or a method bound to its receiver.
struct Callable {
  enum class Kind { kGlobal, kMacro, kMethod };
  Kind kind = Kind::kGlobal;
  std::string name;
  const void* macro = nullptr;  // the macro's statement node (kMacro)
  size_t scope_depth = 0;       // kMacro: how many enclosing scopes it sees (it is a closure over them)
  Value receiver;               // kMethod
};

// Builds a list/dict value, failing when the result would nest deeper than kMaxValueDepth.
Value make_list(std::vector<Value> items, bool is_tuple = false);
Value make_dict(std::vector<std::pair<std::string, Value>> entries);

// Python's type name of a value ("str", "int", "list", ...), for error messages.
const char* type_name(const Value& v);

// Python's bool(v); undefined is false.
bool truthy(const Value& v);
// Python's ==, recursing into containers. Undefined equals only undefined.
bool equals(const Value& a, const Value& b);
// Python's a < b for numbers, strings and sequences; fails with a TypeError-like message otherwise.
bool less_than(const Value& a, const Value& b);

// str(v) as Jinja2 prints it: undefined is "", None is "None", strings are themselves, containers use repr().
std::string to_str(const Value& v);
// repr(v).
std::string to_repr(const Value& v);

struct JsonOptions {
  bool ensure_ascii = false;          // transformers' tojson default
  std::optional<std::string> indent;  // the indent unit; none means a single line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// json.dumps(v, ...) with Python's formatting; fails for values JSON cannot hold (undefined, callables).
std::string to_json(const Value& v, const JsonOptions& options);
// Python's repr() of a float ("1.0", "1e+16", "1.5e-05", "inf", "nan").
std::string format_float(double f);

}  // namespace anvil::jinja
