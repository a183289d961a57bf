// The library a chat template calls into: filters (`x | trim`), tests (`x is defined`), methods on strings,
// dicts and lists (`s.strip()`), global functions (`namespace()`, `range()`), attribute and item access,
// and the arithmetic operators, each with the Python semantics jinja2 gives it. Names the parser accepts are
// exactly the names implemented here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace anvil::jinja {

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

// Sizes a render may build, so a hostile template cannot exhaust memory.
struct Limits {
  size_t max_string_bytes = size_t{16} << 20;
  size_t max_list_items = size_t{1} << 20;
};

bool is_supported_filter(std::string_view name);
bool is_supported_test(std::string_view name);
bool is_supported_method(std::string_view name);
// Functions every template can call: raise_exception, namespace, range, dict, strftime_now.
bool is_supported_global(std::string_view name);
// jinja2 globals this renderer does not implement (cycler, joiner, lipsum).
bool is_unsupported_global(std::string_view name);

Value apply_filter(std::string_view name, const Value& input, const CallArgs& call, const Limits& limits);
bool apply_test(std::string_view name, const Value& input, const CallArgs& call);
Value call_method(const Value& receiver, std::string_view name, const CallArgs& call, const Limits& limits);
// raise_exception fails with the template's message, prefixed so the error says where it came from.
Value call_global(std::string_view name, const CallArgs& call, const Limits& limits);

// obj.name: methods first, then dict keys; undefined when absent (an error when obj itself is undefined).
Value get_attribute(const Value& obj, std::string_view name);
// obj[key]: dict keys, list and string indices (negative from the end); undefined when absent.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step] on lists, tuples and strings; undefined bounds are omitted ones.
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// Binary operators + - * / // % ** and ~, with Python's numeric rules; fails with a TypeError-like message.
Value binary_op(std::string_view op, const Value& a, const Value& b, const Limits& limits);
Value negate(const Value& v);
// `needle in container`.
bool contains(const Value& container, const Value& needle);

// The items a for loop walks: list items, dict keys, string characters; undefined is empty.
std::vector<Value> iterate(const Value& v);
// Python's hashability: lists and dicts (and tuples holding them) cannot be dict keys or set members.
bool is_hashable(const Value& v);
// Fails unless `s` fits in the string limit.
void check_string_size(size_t bytes, const Limits& limits);

}  // namespace anvil::jinja
