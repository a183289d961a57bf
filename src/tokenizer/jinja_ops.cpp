// Operators, attribute and item access, slicing, iteration, methods of str/dict/list and the global
// functions, with the semantics Python and jinja2's sandbox give them (jinja2 tries getattr before getitem
// for `a.b` and the reverse for `a[b]`; missing things are undefined rather than errors).
#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_params.h"

namespace anvil::jinja {
namespace {

constexpr std::string_view kStrMethods[] = {
    "capitalize",   "casefold",   "center",    "count",       "encode",    "endswith",     "expandtabs",   "find",
    "format",       "format_map", "index",     "isalnum",     "isalpha",   "isascii",      "isdecimal",    "isdigit",
    "isidentifier", "islower",    "isnumeric", "isprintable", "isspace",   "istitle",      "isupper",      "join",
    "ljust",        "lower",      "lstrip",    "maketrans",   "partition", "removeprefix", "removesuffix", "replace",
    "rfind",        "rindex",     "rjust",     "rpartition",  "rsplit",    "rstrip",       "split",        "splitlines",
    "startswith",   "strip",      "swapcase",  "title",       "translate", "upper",        "zfill"};
constexpr std::string_view kDictMethods[] = {"clear", "copy",    "fromkeys",   "get",    "items", "keys",
                                             "pop",   "popitem", "setdefault", "update", "values"};
constexpr std::string_view kListMethods[] = {"append", "clear", "copy",   "count",   "extend", "index",
                                             "insert", "pop",   "remove", "reverse", "sort"};
// What call_method implements; the parser rejects calls to any other method name.
constexpr std::string_view kSupportedMethods[] = {
    "strip",   "lstrip",  "rstrip",     "split",   "rsplit", "splitlines", "startswith", "endswith", "upper",
    "lower",   "title",   "capitalize", "replace", "find",   "count",      "join",       "isdigit",  "isalpha",
    "isalnum", "isspace", "isupper",    "islower", "items",  "keys",       "values",     "get",      "index"};

template <size_t N>
bool contains_name(const std::string_view (&names)[N], std::string_view name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

Value bound_method(const Value& receiver, std::string_view name) {
  auto fn = std::make_shared<Callable>();
  fn->kind = Callable::Kind::kMethod;
  fn->name = std::string(name);
  fn->receiver = receiver;
  return Value::callable(std::move(fn));
}

[[noreturn]] void fail_undefined(const Value& v) {
  const std::string& name = v.undefined_name();
  fail(name.empty() ? "a value is undefined" : name);
}

std::string object_name(const Value& v) {
  return std::string("'") + type_name(v) + " object'";
}

void check_overflow(bool overflow) {
  if (overflow) fail("integer overflow (integers are limited to 64 bits)");
}

// Python's floor division and modulo for integers.
int64_t floor_div(int64_t a, int64_t b) {
  if (a == std::numeric_limits<int64_t>::min() && b == -1) fail("integer overflow (integers are limited to 64 bits)");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t floor_mod(int64_t a, int64_t b) {
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

Value repeat_string(const std::string& s, int64_t times, const Limits& limits) {
  if (times <= 0 || s.empty()) return Value::string("");
  if (static_cast<uint64_t>(times) > limits.max_string_bytes / s.size())
    check_string_size(limits.max_string_bytes + 1, limits);
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(times));
  for (int64_t i = 0; i < times; ++i) out += s;
  return Value::string(std::move(out));
}

Value repeat_list(const List& list, int64_t times, const Limits& limits) {
  if (times <= 0 || list.items.empty()) return make_list({}, list.is_tuple);
  if (static_cast<uint64_t>(times) > limits.max_list_items / list.items.size()) {
    fail("list longer than " + std::to_string(limits.max_list_items) + " items");
  }
  std::vector<Value> items;
  for (int64_t i = 0; i < times; ++i) items.insert(items.end(), list.items.begin(), list.items.end());
  return make_list(std::move(items), list.is_tuple);
}

// Python's PySlice_AdjustIndices: the indices a slice selects from a sequence of `length` items.
std::vector<size_t> slice_indices(int64_t length, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto bound = [](const Value& v, int64_t fallback) -> int64_t {
    if (v.is_undefined() || v.is_none()) return fallback;
    if (!v.is_integral()) fail("slice indices must be integers or None");
    return v.as_int();
  };
  const int64_t step = bound(step_v, 1);
  if (step == 0) fail("slice step cannot be zero");
  const int64_t lower = step < 0 ? -1 : 0;
  const int64_t upper = step < 0 ? length - 1 : length;
  auto adjust = [&](const Value& v, int64_t fallback) {
    if (v.is_undefined() || v.is_none()) return fallback;
    int64_t i = bound(v, fallback);
    if (i < 0) {
      i = i < -length ? lower : i + length;
      return std::max(i, lower);
    }
    return std::min(i, upper);
  };
  const int64_t start = adjust(start_v, step < 0 ? upper : lower);
  const int64_t stop = adjust(stop_v, step < 0 ? lower : upper);
  std::vector<size_t> indices;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) indices.push_back(static_cast<size_t>(i));
  } else {
    for (int64_t i = start; i > stop; i += step) indices.push_back(static_cast<size_t>(i));
  }
  return indices;
}

std::vector<std::string> split_whitespace(const std::string& s, int64_t max_split, bool from_right) {
  std::vector<std::pair<size_t, size_t>> words;  // byte ranges
  const std::vector<size_t> offsets = code_point_offsets(s);
  size_t length = 0;
  size_t i = 0;
  const size_t n = offsets.size() - 1;
  while (i < n) {
    while (i < n && is_py_space(decode_code_point(s, offsets[i], &length))) ++i;
    if (i == n) break;
    size_t j = i;
    while (j < n && !is_py_space(decode_code_point(s, offsets[j], &length))) ++j;
    words.emplace_back(offsets[i], offsets[j]);
    i = j;
  }
  std::vector<std::string> out;
  if (max_split < 0 || static_cast<size_t>(max_split) + 1 >= words.size()) {
    for (auto [b, e] : words) out.push_back(s.substr(b, e - b));
    return out;
  }
  // Splits beyond max_split leave the rest (with its inner whitespace, stripped at the outer end) whole.
  const size_t keep = static_cast<size_t>(max_split);
  if (!from_right) {
    for (size_t k = 0; k < keep; ++k) out.push_back(s.substr(words[k].first, words[k].second - words[k].first));
    out.push_back(s.substr(words[keep].first, words.back().second - words[keep].first));
  } else {
    const size_t first_whole = words.size() - keep - 1;
    out.push_back(s.substr(words[0].first, words[first_whole].second - words[0].first));
    for (size_t k = first_whole + 1; k < words.size(); ++k) {
      out.push_back(s.substr(words[k].first, words[k].second - words[k].first));
    }
  }
  return out;
}

std::vector<std::string> split_on(const std::string& s, const std::string& sep, int64_t max_split, bool from_right) {
  if (sep.empty()) fail("empty separator");
  std::vector<size_t> cuts;
  if (!from_right) {
    for (size_t pos = s.find(sep);
         pos != std::string::npos && (max_split < 0 || cuts.size() < static_cast<size_t>(max_split));
         pos = s.find(sep, pos + sep.size())) {
      cuts.push_back(pos);
    }
  } else {
    size_t end = s.size();
    while (end >= sep.size() && (max_split < 0 || cuts.size() < static_cast<size_t>(max_split))) {
      const size_t pos = s.rfind(sep, end - sep.size());
      if (pos == std::string::npos) break;
      cuts.insert(cuts.begin(), pos);
      end = pos;
    }
  }
  std::vector<std::string> out;
  size_t begin = 0;
  for (size_t cut : cuts) {
    out.push_back(s.substr(begin, cut - begin));
    begin = cut + sep.size();
  }
  out.push_back(s.substr(begin));
  return out;
}

Value strings_to_list(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  for (const auto& p : parts) items.push_back(Value::string(p));
  return make_list(std::move(items));
}

bool is_line_break(uint32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D || cp == 0x1E || cp == 0x85 ||
         cp == 0x2028 || cp == 0x2029;
}

Value splitlines(const std::string& s, bool keep_ends) {
  std::vector<std::string> lines;
  size_t begin = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t length = 0;
    const uint32_t cp = decode_code_point(s, pos, &length);
    if (!is_line_break(cp)) {
      pos += length;
      continue;
    }
    size_t end = pos + length;
    if (cp == '\r' && end < s.size() && s[end] == '\n') ++end;
    lines.push_back(s.substr(begin, (keep_ends ? end : pos) - begin));
    begin = pos = end;
  }
  if (begin < s.size()) lines.push_back(s.substr(begin));
  return strings_to_list(lines);
}

bool ascii_all(const std::string& s, bool (*pred)(char)) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), pred);
}

bool matches_affix(const std::string& s, const Value& affix, bool prefix, const char* method) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) fail(std::string(method) + " arg must be str or a tuple of str, not " + type_name(a));
    const std::string& p = a.as_string();
    if (p.size() > s.size()) return false;
    return prefix ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
  };
  if (affix.is_list()) {
    return std::any_of(affix.as_list().items.begin(), affix.as_list().items.end(), one);
  }
  return one(affix);
}

Value string_method(const std::string& s, std::string_view name, const CallArgs& call, const Limits& limits) {
  const std::string what = "str." + std::string(name) + "()";
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Params p(what, call, {"chars"});
    std::optional<std::string> chars;
    if (p.given(0) && !p.get(0).is_none()) chars = p.string(0);
    return Value::string(py_strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    Params p(what, call, {"sep", "maxsplit"});
    const int64_t max_split = p.given(1) ? p.integer(1) : -1;
    if (!p.given(0) || p.get(0).is_none()) return strings_to_list(split_whitespace(s, max_split, name == "rsplit"));
    return strings_to_list(split_on(s, p.string(0), max_split, name == "rsplit"));
  }
  if (name == "splitlines") {
    Params p(what, call, {"keepends"});
    return splitlines(s, p.given(0) && truthy(p.get(0)));
  }
  if (name == "startswith" || name == "endswith") {
    Params p(what, call, {"prefix"});
    if (!p.given(0)) fail(what + " takes exactly one argument");
    return Value::boolean(matches_affix(s, p.get(0), name == "startswith", what.c_str()));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    Params p(what, call, {});
    if (name == "upper") return Value::string(py_upper(s));
    if (name == "lower") return Value::string(py_lower(s));
    return Value::string(name == "title" ? py_title(s) : py_capitalize(s));
  }
  if (name == "replace") {
    Params p(what, call, {"old", "new", "count"});
    CallArgs args;
    args.args = {p.get(0), p.get(1)};
    if (p.given(2)) args.args.push_back(p.get(2));
    if (!p.given(0) || !p.given(1)) fail(what + " takes at least 2 arguments");
    if (!p.get(0).is_string() || !p.get(1).is_string()) fail(what + " arguments must be str");
    return apply_filter("replace", Value::string(s), args, limits);
  }
  if (name == "find") {
    Params p(what, call, {"sub"});
    const size_t pos = s.find(p.string(0));
    if (pos == std::string::npos) return Value::integer(-1);
    return Value::integer(static_cast<int64_t>(code_point_count(std::string_view(s).substr(0, pos))));
  }
  if (name == "count") {
    Params p(what, call, {"sub"});
    const std::string sub = p.string(0);
    if (sub.empty()) return Value::integer(static_cast<int64_t>(code_point_count(s)) + 1);
    int64_t count = 0;
    for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++count;
    return Value::integer(count);
  }
  if (name == "join") {
    Params p(what, call, {"iterable"});
    std::string out;
    bool first = true;
    for (const Value& item : iterate(p.get(0))) {
      if (!item.is_string()) fail(what + ": sequence item must be str, not " + type_name(item));
      if (!first) out += s;
      first = false;
      out += item.as_string();
      check_string_size(out.size(), limits);
    }
    return Value::string(std::move(out));
  }
  Params p(what, call, {});
  if (name == "isdigit") return Value::boolean(ascii_all(s, [](char c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha") {
    return Value::boolean(ascii_all(s, [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }));
  }
  if (name == "isalnum") {
    return Value::boolean(ascii_all(
        s, [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }));
  }
  if (name == "isspace") {
    return Value::boolean(!s.empty() && py_strip(s, std::nullopt, true, false).empty());
  }
  if (name == "isupper" || name == "islower") {
    bool has_cased = false;
    for (char c : s) {
      const bool upper = c >= 'A' && c <= 'Z';
      const bool lower = c >= 'a' && c <= 'z';
      if ((name == "isupper" && lower) || (name == "islower" && upper)) return Value::boolean(false);
      has_cased = has_cased || upper || lower;
    }
    return Value::boolean(has_cased);
  }
  fail("unsupported method " + what);
}

}  // namespace

bool is_hashable(const Value& v) {
  if (v.is_dict() || v.kind() == ValueKind::kNamespace) return v.kind() == ValueKind::kNamespace;
  if (!v.is_list()) return true;
  if (!v.as_list().is_tuple) return false;
  return std::all_of(v.as_list().items.begin(), v.as_list().items.end(), is_hashable);
}

void check_string_size(size_t bytes, const Limits& limits) {
  if (bytes > limits.max_string_bytes) {
    fail("string longer than the limit of " + std::to_string(limits.max_string_bytes) + " bytes");
  }
}

bool is_supported_method(std::string_view name) {
  return contains_name(kSupportedMethods, name);
}

bool is_supported_global(std::string_view name) {
  return name == "raise_exception" || name == "namespace" || name == "range" || name == "dict" ||
         name == "strftime_now";
}

bool is_unsupported_global(std::string_view name) {
  return name == "cycler" || name == "joiner" || name == "lipsum";
}

Value get_attribute(const Value& obj, std::string_view name) {
  const std::string missing = object_name(obj) + " has no attribute '" + std::string(name) + "'";
  switch (obj.kind()) {
    case ValueKind::kUndefined:
      fail_undefined(obj);
    case ValueKind::kDict: {
      if (contains_name(kDictMethods, name)) return bound_method(obj, name);
      const Value* v = obj.as_dict().find(name);
      return v ? *v : Value::undefined(missing);
    }
    case ValueKind::kNamespace: {
      const Value* v = obj.namespace_attrs().find(name);
      return v ? *v : Value::undefined(missing);
    }
    case ValueKind::kString:
      return contains_name(kStrMethods, name) ? bound_method(obj, name) : Value::undefined(missing);
    case ValueKind::kList:
      if (obj.as_list().is_tuple && (name == "count" || name == "index")) return bound_method(obj, name);
      if (!obj.as_list().is_tuple && contains_name(kListMethods, name)) return bound_method(obj, name);
      return Value::undefined(missing);
    default:
      return Value::undefined(missing);
  }
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  const std::string missing = object_name(obj) + " has no element " + to_repr(key);
  if (obj.is_dict() || obj.kind() == ValueKind::kNamespace) {
    if (!key.is_string()) return Value::undefined(missing);
    const Dict& d = obj.is_dict() ? obj.as_dict() : obj.namespace_attrs();
    if (const Value* v = d.find(key.as_string())) return *v;
    return obj.is_dict() ? get_attribute(obj, key.as_string()) : Value::undefined(missing);
  }
  if ((obj.is_list() || obj.is_string()) && key.is_integral()) {
    int64_t index = key.as_int();
    if (obj.is_list()) {
      const auto& items = obj.as_list().items;
      const auto size = static_cast<int64_t>(items.size());
      if (index < 0) index += size;
      if (index < 0 || index >= size) return Value::undefined(missing);
      return items[static_cast<size_t>(index)];
    }
    const std::vector<size_t> offsets = code_point_offsets(obj.as_string());
    const auto size = static_cast<int64_t>(offsets.size()) - 1;
    if (index < 0) index += size;
    if (index < 0 || index >= size) return Value::undefined(missing);
    const auto i = static_cast<size_t>(index);
    return Value::string(obj.as_string().substr(offsets[i], offsets[i + 1] - offsets[i]));
  }
  if (key.is_string()) return get_attribute(obj, key.as_string());
  return Value::undefined(missing);
}

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) fail_undefined(obj);
  if (obj.is_list()) {
    const auto& items = obj.as_list().items;
    std::vector<Value> out;
    for (size_t i : slice_indices(static_cast<int64_t>(items.size()), start, stop, step)) out.push_back(items[i]);
    return make_list(std::move(out), obj.as_list().is_tuple);
  }
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    const std::vector<size_t> offsets = code_point_offsets(s);
    std::string out;
    for (size_t i : slice_indices(static_cast<int64_t>(offsets.size()) - 1, start, stop, step)) {
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    }
    return Value::string(std::move(out));
  }
  // jinja2 compiles slices to plain Python subscription, so anything else raises.
  if (obj.is_dict()) fail("unhashable type: 'slice'");
  fail(std::string("'") + type_name(obj) + "' object is not subscriptable");
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return {};
    case ValueKind::kList:
      return v.as_list().items;
    case ValueKind::kDict: {
      std::vector<Value> keys;
      for (const auto& entry : v.as_dict().entries) keys.push_back(Value::string(entry.first));
      return keys;
    }
    case ValueKind::kString: {
      std::vector<Value> chars;
      const std::string& s = v.as_string();
      const std::vector<size_t> offsets = code_point_offsets(s);
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        chars.push_back(Value::string(s.substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      return chars;
    }
    default:
      fail(std::string("'") + type_name(v) + "' object is not iterable");
  }
}

bool contains(const Value& container, const Value& needle) {
  switch (container.kind()) {
    case ValueKind::kUndefined:
      return false;
    case ValueKind::kString:
      if (!needle.is_string()) {
        fail(std::string("'in <string>' requires string as left operand, not ") + type_name(needle));
      }
      return container.as_string().find(needle.as_string()) != std::string::npos;
    case ValueKind::kList:
      return std::any_of(container.as_list().items.begin(), container.as_list().items.end(),
                         [&](const Value& item) { return equals(item, needle); });
    case ValueKind::kDict:
      if (!is_hashable(needle)) fail(std::string("unhashable type: '") + type_name(needle) + "'");
      return needle.is_string() && container.as_dict().find(needle.as_string()) != nullptr;
    default:
      fail(std::string("argument of type '") + type_name(container) + "' is not iterable");
  }
}

Value negate(const Value& v) {
  if (v.is_integral()) {
    check_overflow(v.as_int() == std::numeric_limits<int64_t>::min());
    return Value::integer(-v.as_int());
  }
  if (v.kind() == ValueKind::kFloat) return Value::floating(-v.as_float());
  if (v.is_undefined()) fail_undefined(v);
  fail(std::string("bad operand type for unary -: '") + type_name(v) + "'");
}

Value binary_op(std::string_view op, const Value& a, const Value& b, const Limits& limits) {
  if (op == "~") {
    std::string out = to_str(a);
    out += to_str(b);
    check_string_size(out.size(), limits);
    return Value::string(std::move(out));
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool ints = a.is_integral() && b.is_integral();
  const bool numbers = a.is_number() && b.is_number();
  int64_t r = 0;
  if (op == "+") {
    if (ints) {
      check_overflow(__builtin_add_overflow(a.as_int(), b.as_int(), &r));
      return Value::integer(r);
    }
    if (numbers) return Value::floating(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) {
      check_string_size(a.as_string().size() + b.as_string().size(), limits);
      return Value::string(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
      if (a.as_list().items.size() + b.as_list().items.size() > limits.max_list_items) {
        fail("list longer than " + std::to_string(limits.max_list_items) + " items");
      }
      std::vector<Value> items = a.as_list().items;
      items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
      return make_list(std::move(items), a.as_list().is_tuple);
    }
  } else if (op == "-") {
    if (ints) {
      check_overflow(__builtin_sub_overflow(a.as_int(), b.as_int(), &r));
      return Value::integer(r);
    }
    if (numbers) return Value::floating(a.as_float() - b.as_float());
  } else if (op == "*") {
    if (ints) {
      check_overflow(__builtin_mul_overflow(a.as_int(), b.as_int(), &r));
      return Value::integer(r);
    }
    if (numbers) return Value::floating(a.as_float() * b.as_float());
    if (a.is_string() && b.is_integral()) return repeat_string(a.as_string(), b.as_int(), limits);
    if (b.is_string() && a.is_integral()) return repeat_string(b.as_string(), a.as_int(), limits);
    if (a.is_list() && b.is_integral()) return repeat_list(a.as_list(), b.as_int(), limits);
    if (b.is_list() && a.is_integral()) return repeat_list(b.as_list(), a.as_int(), limits);
  } else if (op == "/" || op == "//" || op == "%") {
    if (numbers) {
      if (b.as_float() == 0.0) fail(op == "%" ? "integer modulo by zero" : "division by zero");
      if (op == "/") return Value::floating(a.as_float() / b.as_float());
      if (ints)
        return Value::integer(op == "//" ? floor_div(a.as_int(), b.as_int()) : floor_mod(a.as_int(), b.as_int()));
      // CPython's float_divmod.
      const double x = a.as_float();
      const double y = b.as_float();
      double mod = std::fmod(x, y);
      double div = (x - mod) / y;
      if (mod != 0.0) {
        if ((y < 0) != (mod < 0)) {
          mod += y;
          div -= 1.0;
        }
      } else {
        mod = std::copysign(0.0, y);
      }
      if (op == "%") return Value::floating(mod);
      double floor_div_result = std::copysign(0.0, x / y);
      if (div != 0.0) {
        floor_div_result = std::floor(div);
        if (div - floor_div_result > 0.5) floor_div_result += 1.0;
      }
      return Value::floating(floor_div_result);
    }
    if (op == "%" && a.is_string()) fail("string formatting with '%' is not supported");
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t result = 1;
      int64_t base = a.as_int();
      for (int64_t e = b.as_int(); e > 0; e >>= 1) {
        if (e & 1) check_overflow(__builtin_mul_overflow(result, base, &result));
        if (e > 1) check_overflow(__builtin_mul_overflow(base, base, &base));
      }
      return Value::integer(result);
    }
    if (numbers) {
      if (a.as_float() == 0.0 && b.as_float() < 0) fail("zero cannot be raised to a negative power");
      return Value::floating(std::pow(a.as_float(), b.as_float()));
    }
  }
  fail("unsupported operand type(s) for " + std::string(op) + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

Value call_method(const Value& receiver, std::string_view name, const CallArgs& call, const Limits& limits) {
  if (receiver.is_string()) return string_method(receiver.as_string(), name, call, limits);
  const std::string what = std::string(type_name(receiver)) + "." + std::string(name) + "()";
  if (receiver.is_dict()) {
    const Dict& d = receiver.as_dict();
    if (name == "get") {
      Params p(what, call, {"key", "default"});
      if (!p.given(0)) fail(what + " takes at least one argument");
      const Value* v = p.get(0).is_string() ? d.find(p.get(0).as_string()) : nullptr;
      return v ? *v : (p.given(1) ? p.get(1) : Value::none());
    }
    Params p(what, call, {});
    std::vector<Value> out;
    for (const auto& [key, value] : d.entries) {
      if (name == "items") {
        out.push_back(make_list({Value::string(key), value}, true));
      } else if (name == "keys") {
        out.push_back(Value::string(key));
      } else if (name == "values") {
        out.push_back(value);
      } else {
        fail("unsupported method " + what);
      }
    }
    return make_list(std::move(out));
  }
  if (receiver.is_list() && (name == "index" || name == "count")) {
    Params p(what, call, {"value"});
    const auto& items = receiver.as_list().items;
    int64_t count = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!equals(items[i], p.get(0))) continue;
      if (name == "index") return Value::integer(static_cast<int64_t>(i));
      ++count;
    }
    if (name == "index") fail(what + ": value is not in the list");
    return Value::integer(count);
  }
  fail("unsupported method " + what);
}

Value call_global(std::string_view name, const CallArgs& call, const Limits& limits) {
  if (name == "raise_exception") {
    Params p("raise_exception()", call, {"message"});
    fail("raise_exception: " + to_str(p.get(0)));
  }
  if (name == "namespace" || name == "dict") {
    auto attrs = std::make_shared<Dict>();
    if (call.args.size() > 1) fail(std::string(name) + "() takes at most one positional argument");
    if (call.args.size() == 1) {
      if (!call.args[0].is_dict()) fail(std::string(name) + "() positional argument must be a dict");
      for (const auto& [key, value] : call.args[0].as_dict().entries) attrs->set(key, value);
    }
    for (const auto& [key, value] : call.kwargs) {
      if (value.kind() == ValueKind::kNamespace && name == "namespace") {
        fail("a namespace cannot hold another namespace");
      }
      attrs->set(key, value);
    }
    return name == "dict" ? Value::dict(std::move(attrs)) : Value::namespace_object(std::move(attrs));
  }
  if (name == "range") {
    Params p("range()", call, {"start", "stop", "step"});
    int64_t start = 0;
    int64_t stop = 0;
    int64_t step = 1;
    if (p.given(1)) {
      start = p.integer(0);
      stop = p.integer(1);
      if (p.given(2)) step = p.integer(2);
    } else {
      stop = p.integer(0);
    }
    if (step == 0) fail("range() arg 3 must not be zero");
    // jinja2's sandbox refuses ranges of more than 100000 items (MAX_RANGE).
    const double count =
        std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
    if (count > 100000) fail("range() too big: the sandbox allows at most 100000 items");
    std::vector<Value> items;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.push_back(Value::integer(i));
    return make_list(std::move(items));
  }
  if (name == "strftime_now") {
    Params p("strftime_now()", call, {"format"});
    const std::string format = p.string(0);
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    for (size_t size = 64; size <= 4096; size *= 4) {
      std::string buf(size + format.size(), '\0');
      const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
      if (n > 0 || format.empty()) {
        buf.resize(n);
        return Value::string(std::move(buf));
      }
    }
    fail("strftime_now(): formatted date too long");
  }
  (void)limits;
  fail("unknown function '" + std::string(name) + "'");
}

}  // namespace anvil::jinja
