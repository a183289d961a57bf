// Template values and their Python semantics: str()/repr()/json.dumps text forms, equality, ordering and
// truthiness, and the bounded-depth construction of lists and dicts.
#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace anvil::jinja {

void fail(std::string message) {
  throw RenderError{std::move(message)};
}

// ---- construction -------------------------------------------------------------------------------------

Value Value::undefined(std::string name_hint) {
  Value v;
  if (!name_hint.empty()) v.str_ = std::make_shared<const std::string>(std::move(name_hint));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = ValueKind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = ValueKind::kBool;
  v.int_ = b ? 1 : 0;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = ValueKind::kInt;
  v.int_ = i;
  return v;
}

Value Value::floating(double f) {
  Value v;
  v.kind_ = ValueKind::kFloat;
  v.float_ = f;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = ValueKind::kString;
  v.str_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::list(std::vector<Value> items) {
  return make_list(std::move(items), false);
}
Value Value::tuple(std::vector<Value> items) {
  return make_list(std::move(items), true);
}

Value Value::list_object(std::shared_ptr<List> list) {
  Value v;
  v.kind_ = ValueKind::kList;
  v.list_ = std::move(list);
  return v;
}

Value Value::dict(std::shared_ptr<Dict> dict) {
  Value v;
  v.kind_ = ValueKind::kDict;
  v.dict_ = std::move(dict);
  return v;
}

Value Value::namespace_object(std::shared_ptr<Dict> attrs) {
  Value v;
  v.kind_ = ValueKind::kNamespace;
  v.dict_ = std::move(attrs);
  return v;
}

Value Value::callable(std::shared_ptr<const Callable> fn) {
  Value v;
  v.kind_ = ValueKind::kCallable;
  v.callable_ = std::move(fn);
  return v;
}

const std::string& Value::undefined_name() const {
  static const std::string kEmpty;
  return kind_ == ValueKind::kUndefined && str_ ? *str_ : kEmpty;
}

int Value::depth() const {
  switch (kind_) {
    case ValueKind::kList:
      return list_->depth;
    case ValueKind::kDict:
    case ValueKind::kNamespace:
      return dict_->depth;
    default:
      return 1;
  }
}

Value make_list(std::vector<Value> items, bool is_tuple) {
  auto list = std::make_shared<List>();
  int depth = 1;
  for (const Value& item : items) depth = std::max(depth, item.depth() + 1);
  if (depth > kMaxValueDepth) fail("value nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
  list->items = std::move(items);
  list->is_tuple = is_tuple;
  list->depth = depth;
  return Value::list_object(std::move(list));
}

Value make_dict(std::vector<std::pair<std::string, Value>> entries) {
  auto dict = std::make_shared<Dict>();
  for (auto& [key, value] : entries) dict->set(std::move(key), std::move(value));
  return Value::dict(std::move(dict));
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& entry : entries) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  const int value_depth = value.depth() + 1;
  if (value_depth > kMaxValueDepth) fail("value nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
  depth = std::max(depth, value_depth);
  for (auto& entry : entries) {
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

// ---- Python semantics ---------------------------------------------------------------------------------

const char* type_name(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "Undefined";
    case ValueKind::kNone:
      return "NoneType";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kFloat:
      return "float";
    case ValueKind::kString:
      return "str";
    case ValueKind::kList:
      return v.as_list().is_tuple ? "tuple" : "list";
    case ValueKind::kDict:
      return "dict";
    case ValueKind::kNamespace:
      return "Namespace";
    case ValueKind::kCallable:
      return "function";
  }
  return "object";
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return false;
    case ValueKind::kBool:
    case ValueKind::kInt:
      return v.as_int() != 0;
    case ValueKind::kFloat:
      return v.as_float() != 0.0;
    case ValueKind::kString:
      return !v.as_string().empty();
    case ValueKind::kList:
      return !v.as_list().items.empty();
    case ValueKind::kDict:
      return !v.as_dict().entries.empty();
    case ValueKind::kNamespace:
    case ValueKind::kCallable:
      return true;
  }
  return false;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return true;
    case ValueKind::kString:
      return a.as_string() == b.as_string();
    case ValueKind::kList: {
      const List& x = a.as_list();
      const List& y = b.as_list();
      if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!equals(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case ValueKind::kDict: {
      const Dict& x = a.as_dict();
      const Dict& y = b.as_dict();
      if (x.entries.size() != y.entries.size()) return false;
      for (const auto& [key, value] : x.entries) {
        const Value* other = y.find(key);
        if (other == nullptr || !equals(value, *other)) return false;
      }
      return true;
    }
    case ValueKind::kNamespace:
      return &a.namespace_attrs() == &b.namespace_attrs();
    case ValueKind::kCallable:
      return a.callable_ptr() == b.callable_ptr();
    default:
      return false;
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_float() < b.as_float();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  fail(std::string("'<' not supported between instances of '") + type_name(a) + "' and '" + type_name(b) + "'");
}

// ---- text forms ---------------------------------------------------------------------------------------

std::string format_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(result.ptr - buf));
  // sci is "[-]d[.ddd]e[+-]XX": split into sign, digits and the decimal exponent.
  const bool negative = sci.front() == '-';
  const size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0))) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = 0;
  std::from_chars(sci.data() + e_pos + (sci[e_pos + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exponent);
  std::string out = negative ? "-" : "";
  // Python's repr switches to exponent form when the decimal point would sit before the 4th leading zero or
  // after the 16th digit.
  if (exponent < -4 || exponent >= 16) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char exp_buf[16];
    std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp_buf;
  }
  if (exponent < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exponent - 1), '0');
    return out + digits;
  }
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_digits) {
    out += digits;
    out.append(int_digits - digits.size(), '0');
    return out + ".0";
  }
  return out + digits.substr(0, int_digits) + "." + digits.substr(int_digits);
}

namespace {

// Characters Python's repr() escapes because str.isprintable() is false for them. Exact for ASCII and
// Latin-1 and for the common Unicode space, separator and format characters; other unprintable code points
// (unassigned, private use beyond the BMP block) are printed as they are.
bool repr_escapes(uint32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) return true;
  if (cp == 0x061C || cp == 0x1680 || cp == 0x180E || cp == 0x3000 || cp == 0xFEFF) return true;
  if ((cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F)) {
    return true;
  }
  if ((cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB)) return true;
  return false;
}

void append_hex(uint32_t value, int width, std::string& out) {
  static const char kHex[] = "0123456789abcdef";
  for (int shift = (width - 1) * 4; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 0xF];
}

std::string repr_string(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t length = 0;
    const uint32_t cp = decode_code_point(s, pos, &length);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (repr_escapes(cp)) {
      if (cp < 0x100) {
        out += "\\x";
        append_hex(cp, 2, out);
      } else {
        out += "\\u";
        append_hex(cp, 4, out);
      }
    } else {
      out.append(s.substr(pos, length));
    }
    pos += length;
  }
  out += quote;
  return out;
}

void append_repr(const Value& v, std::string& out);

void append_dict_repr(const Dict& dict, std::string& out) {
  out += '{';
  bool first = true;
  for (const auto& [key, value] : dict.entries) {
    if (!first) out += ", ";
    first = false;
    out += repr_string(key);
    out += ": ";
    append_repr(value, out);
  }
  out += '}';
}

void append_repr(const Value& v, std::string& out) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      out += "Undefined";
      return;
    case ValueKind::kString:
      out += repr_string(v.as_string());
      return;
    case ValueKind::kList: {
      const List& list = v.as_list();
      out += list.is_tuple ? '(' : '[';
      for (size_t i = 0; i < list.items.size(); ++i) {
        if (i > 0) out += ", ";
        append_repr(list.items[i], out);
      }
      if (list.is_tuple && list.items.size() == 1) out += ',';
      out += list.is_tuple ? ')' : ']';
      return;
    }
    case ValueKind::kDict:
      append_dict_repr(v.as_dict(), out);
      return;
    default:
      out += to_str(v);
      return;
  }
}

void append_json_string(std::string_view s, bool ensure_ascii, std::string& out) {
  out += '"';
  size_t pos = 0;
  while (pos < s.size()) {
    size_t length = 0;
    const uint32_t cp = decode_code_point(s, pos, &length);
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
          if (cp >= 0x10000) {
            const uint32_t v = cp - 0x10000;
            out += "\\u";
            append_hex(0xD800 + (v >> 10), 4, out);
            out += "\\u";
            append_hex(0xDC00 + (v & 0x3FF), 4, out);
          } else {
            out += "\\u";
            append_hex(cp, 4, out);
          }
        } else {
          out.append(s.substr(pos, length));
        }
    }
    pos += length;
  }
  out += '"';
}

void append_newline_indent(const JsonOptions& options, int level, std::string& out) {
  out += '\n';
  for (int i = 0; i < level; ++i) out += *options.indent;
}

void append_json(const Value& v, const JsonOptions& options, int level, std::string& out) {
  switch (v.kind()) {
    case ValueKind::kNone:
      out += "null";
      return;
    case ValueKind::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case ValueKind::kInt:
      out += std::to_string(v.as_int());
      return;
    case ValueKind::kFloat: {
      const double f = v.as_float();
      if (std::isnan(f)) {
        out += "NaN";
      } else if (std::isinf(f)) {
        out += f < 0 ? "-Infinity" : "Infinity";
      } else {
        out += format_float(f);
      }
      return;
    }
    case ValueKind::kString:
      append_json_string(v.as_string(), options.ensure_ascii, out);
      return;
    case ValueKind::kList: {
      const auto& items = v.as_list().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += options.item_separator;
        if (options.indent) append_newline_indent(options, level + 1, out);
        append_json(items[i], options, level + 1, out);
      }
      if (options.indent) append_newline_indent(options, level, out);
      out += ']';
      return;
    }
    case ValueKind::kDict: {
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : v.as_dict().entries) entries.push_back(&entry);
      if (entries.empty()) {
        out += "{}";
        return;
      }
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(), [](auto* x, auto* y) { return x->first < y->first; });
      }
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) out += options.item_separator;
        if (options.indent) append_newline_indent(options, level + 1, out);
        append_json_string(entries[i]->first, options.ensure_ascii, out);
        out += options.key_separator;
        append_json(entries[i]->second, options, level + 1, out);
      }
      if (options.indent) append_newline_indent(options, level, out);
      out += '}';
      return;
    }
    default:
      fail(std::string("tojson: object of type '") + type_name(v) + "' is not JSON serializable");
  }
}

}  // namespace

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "";
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return v.as_bool() ? "True" : "False";
    case ValueKind::kInt:
      return std::to_string(v.as_int());
    case ValueKind::kFloat:
      return format_float(v.as_float());
    case ValueKind::kString:
      return v.as_string();
    case ValueKind::kList:
    case ValueKind::kDict:
      return to_repr(v);
    case ValueKind::kNamespace: {
      std::string out = "<Namespace ";
      append_dict_repr(v.namespace_attrs(), out);
      return out + ">";
    }
    case ValueKind::kCallable:
      return "<function " + v.as_callable().name + ">";
  }
  return "";
}

std::string to_repr(const Value& v) {
  std::string out;
  append_repr(v, out);
  return out;
}

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  append_json(v, options, 0, out);
  return out;
}

}  // namespace anvil::jinja
