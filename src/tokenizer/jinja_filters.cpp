// jinja2's filters and tests (jinja2/filters.py, jinja2/tests.py) for the names in kFilters and kTests,
// with transformers' tojson (ensure_ascii=False, key order kept). Filters that return generators in jinja2
// (select, reject, map, ...) return lists here; templates consume them with `| list`, `| join` or a loop.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_params.h"

namespace anvil::jinja {
namespace {

constexpr std::string_view kFilters[] = {
    "abs",    "capitalize", "count",      "d",       "default", "dictsort", "e",     "escape",   "first",      "float",
    "indent", "int",        "items",      "join",    "last",    "length",   "list",  "lower",    "map",        "max",
    "min",    "reject",     "rejectattr", "replace", "reverse", "round",    "safe",  "select",   "selectattr", "sort",
    "string", "sum",        "title",      "tojson",  "trim",    "unique",   "upper", "wordcount"};
constexpr std::string_view kTests[] = {"boolean", "callable", "defined",  "divisibleby", "eq",   "equalto",
                                       "escaped", "even",     "false",    "float",       "ge",   "greaterthan",
                                       "gt",      "in",       "integer",  "iterable",    "le",   "lessthan",
                                       "lower",   "lt",       "mapping",  "ne",          "none", "number",
                                       "odd",     "sameas",   "sequence", "string",      "true", "undefined",
                                       "upper",   "==",       "!=",       "<",           "<=",   ">",
                                       ">="};

// jinja2's title: split on runs of [-\s({[<], then upper-case each piece's first character and lower the rest.
std::string title(const std::string& s) {
  std::string out;
  size_t pos = 0;
  bool piece_start = true;
  while (pos < s.size()) {
    size_t length = 0;
    const uint32_t cp = decode_code_point(s, pos, &length);
    const bool separator = is_py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    const std::string ch = s.substr(pos, length);
    if (separator) {
      // A run of separators is a piece of its own; the text after it starts a new piece.
      out += ch;
      piece_start = true;
    } else {
      out += piece_start ? py_upper(ch) : py_lower(ch);
      piece_start = false;
    }
    pos += length;
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

int64_t length_of(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return 0;
    case ValueKind::kString:
      return static_cast<int64_t>(code_point_count(v.as_string()));
    case ValueKind::kList:
      return static_cast<int64_t>(v.as_list().items.size());
    case ValueKind::kDict:
      return static_cast<int64_t>(v.as_dict().entries.size());
    default:
      fail(std::string("object of type '") + type_name(v) + "' has no len()");
  }
}

std::optional<double> parse_float(std::string s) {
  s = py_strip(s, std::nullopt, true, true);
  std::string lower = ascii_lower(s);
  const bool negative = !lower.empty() && lower[0] == '-';
  const std::string body = !lower.empty() && (lower[0] == '-' || lower[0] == '+') ? lower.substr(1) : lower;
  if (body == "inf" || body == "infinity") return negative ? -INFINITY : INFINITY;
  if (body == "nan") return NAN;
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      continue;
    }
    digits += s[i];
  }
  const char* begin = digits.data() + (!digits.empty() && digits[0] == '+' ? 1 : 0);
  double value = 0;
  const auto result = std::from_chars(begin, digits.data() + digits.size(), value);
  if (digits.empty() || result.ec != std::errc() || result.ptr != digits.data() + digits.size()) return std::nullopt;
  return value;
}

std::optional<int64_t> parse_int(const std::string& text) {
  const std::string s = py_strip(text, std::nullopt, true, true);
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_' && i > 0 && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      continue;
    }
    digits += c;
  }
  const char* begin = digits.data() + (!digits.empty() && digits[0] == '+' ? 1 : 0);
  int64_t value = 0;
  const auto result = std::from_chars(begin, digits.data() + digits.size(), value);
  if (digits.empty() || result.ec != std::errc() || result.ptr != digits.data() + digits.size()) return std::nullopt;
  return value;
}

std::optional<int64_t> float_to_int(double f) {
  if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) return std::nullopt;
  return static_cast<int64_t>(std::trunc(f));
}

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0, each with getitem semantics.
Value lookup_path(const Value& item, const std::string& path) {
  Value current = item;
  size_t begin = 0;
  while (true) {
    const size_t dot = path.find('.', begin);
    const std::string part = path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
    const bool numeric =
        !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    int64_t index = 0;
    if (numeric && std::from_chars(part.data(), part.data() + part.size(), index).ec == std::errc()) {
      current = get_item(current, Value::integer(index));
    } else {
      current = get_item(current, Value::string(part));
    }
    if (dot == std::string::npos) return current;
    if (current.is_undefined()) return current;
    begin = dot + 1;
  }
}

Value sort_key(const Value& item, const Value& attribute, bool case_sensitive) {
  Value key = item;
  if (!attribute.is_undefined() && !attribute.is_none()) {
    key = attribute.is_integral() ? get_item(item, attribute) : lookup_path(item, to_str(attribute));
  }
  if (!case_sensitive && key.is_string()) return Value::string(py_lower(key.as_string()));
  return key;
}

// select/reject/selectattr/rejectattr: keep items whose test (or truthiness) matches `keep`.
Value filter_items(const Value& input, const CallArgs& call, bool by_attribute, bool keep) {
  std::vector<Value> args = call.args;
  std::string attribute;
  if (by_attribute) {
    if (args.empty() || !args[0].is_string()) fail("selectattr/rejectattr need an attribute name");
    attribute = args[0].as_string();
    args.erase(args.begin());
  }
  std::string test;
  if (!args.empty()) {
    if (!args[0].is_string()) fail("select/reject need a test name");
    test = args[0].as_string();
    args.erase(args.begin());
    if (!is_supported_test(test)) fail("unsupported test '" + test + "'");
  }
  CallArgs test_args;
  test_args.args = std::move(args);
  test_args.kwargs = call.kwargs;
  std::vector<Value> out;
  if (!truthy(input)) return make_list({});  // jinja2 iterates only a truthy input
  for (const Value& item : iterate(input)) {
    const Value subject = by_attribute ? lookup_path(item, attribute) : item;
    const bool passed = test.empty() ? truthy(subject) : apply_test(test, subject, test_args);
    if (passed == keep) out.push_back(item);
  }
  return make_list(std::move(out));
}

Value map_items(const Value& input, const CallArgs& call, const Limits& limits) {
  std::vector<Value> out;
  if (!truthy(input)) return make_list({});  // jinja2 iterates only a truthy input
  const std::pair<std::string, Value>* attribute = nullptr;
  const std::pair<std::string, Value>* fallback = nullptr;
  for (const auto& kw : call.kwargs) {
    if (kw.first == "attribute") attribute = &kw;
    if (kw.first == "default") fallback = &kw;
  }
  if (attribute) {
    for (const Value& item : iterate(input)) {
      Value v = lookup_path(item, to_str(attribute->second));
      out.push_back(v.is_undefined() && fallback ? fallback->second : v);
    }
    return make_list(std::move(out));
  }
  if (call.args.empty() || !call.args[0].is_string()) fail("map needs a filter name or attribute=");
  const std::string filter = call.args[0].as_string();
  if (!is_supported_filter(filter)) fail("unsupported filter '" + filter + "'");
  CallArgs filter_args;
  filter_args.args.assign(call.args.begin() + 1, call.args.end());
  filter_args.kwargs = call.kwargs;
  for (const Value& item : iterate(input)) out.push_back(apply_filter(filter, item, filter_args, limits));
  return make_list(std::move(out));
}

Value replace(const std::string& s, const std::string& old, const std::string& replacement, int64_t count,
              const Limits& limits) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    // Python inserts the replacement before every character and at the end.
    const std::vector<size_t> offsets = code_point_offsets(s);
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      if (count < 0 || done < count) {
        out += replacement;
        ++done;
      }
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
      check_string_size(out.size(), limits);
    }
    if (count < 0 || done < count) out += replacement;
    check_string_size(out.size(), limits);
    return Value::string(std::move(out));
  }
  size_t begin = 0;
  for (size_t pos = s.find(old); pos != std::string::npos && (count < 0 || done < count); pos = s.find(old, begin)) {
    out.append(s, begin, pos - begin);
    out += replacement;
    check_string_size(out.size(), limits);
    begin = pos + old.size();
    ++done;
  }
  out.append(s, begin, std::string::npos);
  check_string_size(out.size(), limits);
  return Value::string(std::move(out));
}

Value indent(const std::string& text, const Value& width, bool first, bool blank) {
  const std::string unit =
      width.is_string()
          ? width.as_string()
          : std::string(static_cast<size_t>(std::clamp<int64_t>(width.is_integral() ? width.as_int() : 4, 0, 1024)),
                        ' ');
  CallArgs no_args;
  const Value lines_value = call_method(Value::string(text + "\n"), "splitlines", no_args, Limits{});
  const auto& lines = lines_value.as_list().items;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i].as_string();
    if (i > 0) out += '\n';
    if ((i > 0 || first) && (blank || !line.empty())) out += unit;
    out += line;
  }
  if (lines.empty() && first) out = unit;
  return Value::string(std::move(out));
}

Value round_value(const Value& v, int64_t precision, const std::string& method) {
  if (!v.is_number()) fail(std::string("round: must be a number, not ") + type_name(v));
  const double x = v.as_float();
  if (method == "ceil" || method == "floor") {
    const double scale = std::pow(10.0, static_cast<double>(precision));
    return Value::floating((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
  }
  if (method != "common") fail("round: method must be common, ceil or floor");
  if (v.is_integral()) {
    // Python's round(int, n) stays an int; a negative n rounds to a power of ten, half to even.
    if (precision >= 0) return Value::integer(v.as_int());
    if (precision < -18) return Value::integer(0);
    int64_t scale = 1;
    for (int64_t i = 0; i < -precision; ++i) scale *= 10;
    const int64_t q = v.as_int() / scale;
    const int64_t r = v.as_int() % scale;
    int64_t rounded = q;
    if (2 * std::llabs(r) > scale || (2 * std::llabs(r) == scale && q % 2 != 0)) rounded += r < 0 ? -1 : 1;
    int64_t result = 0;
    if (__builtin_mul_overflow(rounded, scale, &result)) fail("integer overflow (integers are limited to 64 bits)");
    return Value::integer(result);
  }
  if (!std::isfinite(x)) return Value::floating(x);
  // Python's round() rounds the exact binary value half to even, as printf's correctly rounded %.*f does.
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::clamp<int64_t>(precision, 0, 300)), x);
  double result = std::strtod(buf, nullptr);
  if (precision < 0) {
    const double scale = std::pow(10.0, static_cast<double>(-precision));
    result = std::nearbyint(x / scale) * scale;
  }
  return Value::floating(result);
}

Value min_max(const Value& input, const CallArgs& call, bool want_max) {
  Params p(want_max ? "filter 'max'" : "filter 'min'", call, {"case_sensitive", "attribute"});
  const bool case_sensitive = truthy(p.get(0));
  const std::vector<Value> items = iterate(input);
  if (items.empty()) return Value::undefined("no items for min/max: the sequence was empty");
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    const Value a = sort_key(items[i], p.get(1), case_sensitive);
    const Value b = sort_key(items[best], p.get(1), case_sensitive);
    if (want_max ? less_than(b, a) : less_than(a, b)) best = i;
  }
  return items[best];
}

Value to_json_filter(const Value& input, const CallArgs& call) {
  Params p("filter 'tojson'", call, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions options;
  options.ensure_ascii = p.given(0) && truthy(p.get(0));
  const Value& indent_value = p.get(1);
  if (indent_value.is_integral()) {
    options.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(indent_value.as_int(), 0, 1024)), ' ');
  } else if (indent_value.is_string()) {
    options.indent = indent_value.as_string();
  } else if (!indent_value.is_undefined() && !indent_value.is_none()) {
    fail("filter 'tojson': indent must be an integer or a string");
  }
  if (options.indent) options.item_separator = ",";
  const Value& separators = p.get(2);
  if (separators.is_list()) {
    const auto& items = separators.as_list().items;
    if (items.size() != 2 || !items[0].is_string() || !items[1].is_string()) {
      fail("filter 'tojson': separators must be two strings");
    }
    options.item_separator = items[0].as_string();
    options.key_separator = items[1].as_string();
  }
  options.sort_keys = truthy(p.get(3));
  return Value::string(to_json(input, options));
}

}  // namespace

bool is_supported_filter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool is_supported_test(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

Value apply_filter(std::string_view name, const Value& input, const CallArgs& call, const Limits& limits) {
  const std::string what = "filter '" + std::string(name) + "'";
  if (name == "default" || name == "d") {
    Params p(what, call, {"default_value", "boolean"});
    const bool use_default = input.is_undefined() || (truthy(p.get(1)) && !truthy(input));
    if (!use_default) return input;
    return p.given(0) ? p.get(0) : Value::string("");
  }
  if (name == "trim") {
    Params p(what, call, {"chars"});
    std::optional<std::string> chars;
    if (p.given(0) && !p.get(0).is_none()) chars = p.string(0);
    return Value::string(py_strip(to_str(input), chars, true, true));
  }
  if (name == "length" || name == "count") {
    Params p(what, call, {});
    return Value::integer(length_of(input));
  }
  if (name == "tojson") return to_json_filter(input, call);
  if (name == "join") {
    Params p(what, call, {"d", "attribute"});
    const std::string separator = p.given(0) ? to_str(p.get(0)) : "";
    std::string out;
    bool first = true;
    for (const Value& item : iterate(input)) {
      if (!first) out += separator;
      first = false;
      out += to_str(p.given(1) ? lookup_path(item, to_str(p.get(1))) : item);
      check_string_size(out.size(), limits);
    }
    return Value::string(std::move(out));
  }
  if (name == "replace") {
    Params p(what, call, {"old", "new", "count"});
    if (!p.given(0) || !p.given(1)) fail(what + " needs the old and new strings");
    const int64_t count = p.given(2) && !p.get(2).is_none() ? p.integer(2) : -1;
    return replace(to_str(input), to_str(p.get(0)), to_str(p.get(1)), count, limits);
  }
  if (name == "items") {
    Params p(what, call, {});
    if (input.is_undefined()) return make_list({});
    if (!input.is_dict()) fail("filter 'items': can only get item pairs from a mapping");
    return call_method(input, "items", CallArgs{}, limits);
  }
  if (name == "selectattr" || name == "rejectattr") return filter_items(input, call, true, name == "selectattr");
  if (name == "select" || name == "reject") return filter_items(input, call, false, name == "select");
  if (name == "map") return map_items(input, call, limits);
  if (name == "min" || name == "max") return min_max(input, call, name == "max");
  if ((name == "int" || name == "float" || name == "round" || name == "abs") && input.is_undefined()) {
    // Python's int()/float()/round()/abs() of jinja2's Undefined raise instead of falling back.
    fail(input.undefined_name().empty() ? "a value is undefined" : input.undefined_name());
  }
  if (name == "int") {
    Params p(what, call, {"default", "base"});
    const Value fallback = p.given(0) ? p.get(0) : Value::integer(0);
    if (p.given(1) && !(p.get(1).is_integral() && p.get(1).as_int() == 10)) fail(what + ": only base 10 is supported");
    if (input.is_integral()) return Value::integer(input.as_int());
    if (input.kind() == ValueKind::kFloat) {
      const auto i = float_to_int(input.as_float());
      return i ? Value::integer(*i) : fallback;
    }
    if (input.is_string()) {
      if (const auto i = parse_int(input.as_string())) return Value::integer(*i);
      if (const auto f = parse_float(input.as_string())) {
        if (const auto i = float_to_int(*f)) return Value::integer(*i);
      }
    }
    return fallback;
  }
  if (name == "float") {
    Params p(what, call, {"default"});
    const Value fallback = p.given(0) ? p.get(0) : Value::floating(0.0);
    if (input.is_number()) return Value::floating(input.as_float());
    if (input.is_string()) {
      if (const auto f = parse_float(input.as_string())) return Value::floating(*f);
    }
    return fallback;
  }
  if (name == "indent") {
    Params p(what, call, {"width", "first", "blank"});
    if (!input.is_string()) fail(what + " needs a string, not " + type_name(input));
    return indent(input.as_string(), p.given(0) ? p.get(0) : Value::integer(4), truthy(p.get(1)), truthy(p.get(2)));
  }
  if (name == "round") {
    Params p(what, call, {"precision", "method"});
    return round_value(input, p.given(0) ? p.integer(0) : 0, p.given(1) ? p.string(1) : "common");
  }
  if (name == "sort" || name == "unique") {
    Params p(what, call,
             name == "sort" ? std::initializer_list<std::string_view>{"reverse", "case_sensitive", "attribute"}
                            : std::initializer_list<std::string_view>{"case_sensitive", "attribute"});
    const size_t case_idx = name == "sort" ? 1 : 0;
    const bool case_sensitive = truthy(p.get(case_idx));
    const Value& attribute = p.get(case_idx + 1);
    std::vector<Value> items = iterate(input);
    std::vector<Value> out;
    if (name == "unique") {
      std::vector<Value> seen;
      for (const Value& item : items) {
        const Value key = sort_key(item, attribute, case_sensitive);
        if (!is_hashable(key)) fail(std::string("unhashable type: '") + type_name(key) + "'");
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
          seen.push_back(key);
          out.push_back(item);
        }
      }
      return make_list(std::move(out));
    }
    const bool reverse = truthy(p.get(0));
    std::vector<std::pair<Value, Value>> keyed;
    for (const Value& item : items) {
      if (attribute.is_undefined() || attribute.is_none()) {
        keyed.emplace_back(sort_key(item, attribute, case_sensitive), item);
        continue;
      }
      // jinja2 sorts by the list of the comma-separated attributes' values (so equal undefined keys tie).
      std::vector<Value> keys;
      const std::string spec = to_str(attribute);
      for (size_t begin = 0; begin <= spec.size();) {
        const size_t comma = std::min(spec.find(',', begin), spec.size());
        keys.push_back(sort_key(item, Value::string(spec.substr(begin, comma - begin)), case_sensitive));
        begin = comma + 1;
      }
      keyed.emplace_back(make_list(std::move(keys)), item);
    }
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
      return reverse ? less_than(b.first, a.first) : less_than(a.first, b.first);
    });
    for (auto& kv : keyed) out.push_back(std::move(kv.second));
    return make_list(std::move(out));
  }
  if (name == "dictsort") {
    Params p(what, call, {"case_sensitive", "by", "reverse"});
    if (!input.is_dict()) fail(what + ": argument must be a dict");
    const bool by_value = p.given(1) && to_str(p.get(1)) == "value";
    std::vector<Value> pairs = call_method(input, "items", CallArgs{}, limits).as_list().items;
    const bool case_sensitive = truthy(p.get(0));
    const bool reverse = truthy(p.get(2));
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
      const Value ka = sort_key(a.as_list().items[by_value ? 1 : 0], Value(), case_sensitive);
      const Value kb = sort_key(b.as_list().items[by_value ? 1 : 0], Value(), case_sensitive);
      return reverse ? less_than(kb, ka) : less_than(ka, kb);
    });
    return make_list(std::move(pairs));
  }
  if (name == "sum") {
    Params p(what, call, {"attribute", "start"});
    Value total = p.given(1) ? p.get(1) : Value::integer(0);
    for (const Value& item : iterate(input)) {
      total = binary_op("+", total, p.given(0) ? lookup_path(item, to_str(p.get(0))) : item, limits);
    }
    return total;
  }
  Params p(what, call, {});
  if (name == "upper") return Value::string(py_upper(to_str(input)));
  if (name == "lower") return Value::string(py_lower(to_str(input)));
  if (name == "capitalize") return Value::string(py_capitalize(to_str(input)));
  if (name == "title") return Value::string(title(to_str(input)));
  if (name == "string") return Value::string(to_str(input));
  if (name == "safe") return Value::string(to_str(input));  // Markup(value): a string
  if (name == "e" || name == "escape") return Value::string(html_escape(to_str(input)));
  if (name == "list") return make_list(iterate(input));
  if (name == "first") {
    const std::vector<Value> items = iterate(input);
    return items.empty() ? Value::undefined("no first item, the sequence was empty") : items.front();
  }
  if (name == "last") {
    const std::vector<Value> items = iterate(input);
    return items.empty() ? Value::undefined("no last item, the sequence was empty") : items.back();
  }
  if (name == "reverse") {
    std::vector<Value> items = iterate(input);
    std::reverse(items.begin(), items.end());
    if (!input.is_string()) return make_list(std::move(items));
    std::string out;
    for (const Value& c : items) out += c.as_string();
    return Value::string(std::move(out));
  }
  if (name == "abs") {
    if (input.is_integral()) return input.as_int() < 0 ? negate(input) : Value::integer(input.as_int());
    if (input.kind() == ValueKind::kFloat) return Value::floating(std::fabs(input.as_float()));
    fail(std::string("bad operand type for abs(): '") + type_name(input) + "'");
  }
  if (name == "wordcount") {
    const std::string s = to_str(input);
    int64_t words = 0;
    bool in_word = false;
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      const bool word_char = std::isalnum(u) || c == '_' || u >= 0x80;
      if (word_char && !in_word) ++words;
      in_word = word_char;
    }
    return Value::integer(words);
  }
  fail("unsupported filter '" + std::string(name) + "'");
}

bool apply_test(std::string_view name, const Value& input, const CallArgs& call) {
  const std::string what = "test '" + std::string(name) + "'";
  const Limits limits;
  if (name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "!=" || name == "lt" ||
      name == "lessthan" || name == "<" || name == "le" || name == "<=" || name == "gt" || name == "greaterthan" ||
      name == ">" || name == "ge" || name == ">=" || name == "in" || name == "sameas" || name == "divisibleby") {
    Params p(what, call, {"other"});
    if (!p.given(0)) fail(what + " needs an argument");
    const Value& other = p.get(0);
    if (name == "eq" || name == "equalto" || name == "==") return equals(input, other);
    if (name == "ne" || name == "!=") return !equals(input, other);
    if (name == "lt" || name == "lessthan" || name == "<") return less_than(input, other);
    if (name == "le" || name == "<=") return !less_than(other, input);
    if (name == "gt" || name == "greaterthan" || name == ">") return less_than(other, input);
    if (name == "ge" || name == ">=") return !less_than(input, other);
    if (name == "in") return contains(other, input);
    // Python's `is`: exact for None, booleans and small values; containers compare by value here.
    if (name == "sameas") return input.kind() == other.kind() && equals(input, other);
    return equals(binary_op("%", input, other, limits), Value::integer(0));
  }
  Params p(what, call, {});
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.is_none();
  if (name == "boolean") return input.kind() == ValueKind::kBool;
  if (name == "true") return input.kind() == ValueKind::kBool && input.as_bool();
  if (name == "false") return input.kind() == ValueKind::kBool && !input.as_bool();
  if (name == "integer") return input.kind() == ValueKind::kInt;
  if (name == "float") return input.kind() == ValueKind::kFloat;
  if (name == "number") return input.is_number();
  if (name == "string") return input.is_string();
  if (name == "mapping") return input.is_dict();
  if (name == "callable") return input.kind() == ValueKind::kCallable;
  if (name == "escaped") return false;
  if (name == "iterable") {
    return input.is_undefined() || input.is_string() || input.is_list() || input.is_dict();
  }
  if (name == "sequence") {
    return input.is_undefined() || input.is_string() || input.is_list() || input.is_dict();
  }
  if (name == "odd" || name == "even") {
    const Value r = binary_op("%", input, Value::integer(2), limits);
    return equals(r, Value::integer(name == "odd" ? 1 : 0));
  }
  if (name == "lower" || name == "upper") {
    const Value r =
        call_method(Value::string(to_str(input)), name == "lower" ? "islower" : "isupper", CallArgs{}, limits);
    return r.as_bool();
  }
  fail("unsupported test '" + std::string(name) + "'");
}

}  // namespace anvil::jinja
