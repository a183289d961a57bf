// ChatTemplate: renders a model's Jinja chat template (tokenizer_config.json "chat_template", GGUF
// "tokenizer.chat_template") into the prompt text, byte for byte as transformers' apply_chat_template does
// (jinja2 with trim_blocks and lstrip_blocks, raise_exception, tojson without ASCII escaping). Parse once,
// render many times; the implemented Jinja subset and its documented differences are listed below.
//
// Supported: {{ }}, {% %}, {# #}, whitespace control (-, +), raw; if/elif/else, for (tuple unpacking,
// `for ... if ...`, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem, break,
// continue), set (names, tuples, namespace attributes, set blocks), macro (positional, keyword and default
// arguments), with, print, transformers' generation block; literals, arithmetic, ~, comparisons, and/or/not,
// in, is-tests, conditional expressions, indexing, slicing, attributes; the filters, tests and methods named
// in jinja_filters.cpp and jinja_ops.cpp; globals raise_exception, namespace, range, dict, strftime_now.
// Rejected at parse time with an error naming it: include, extends, import, from, block, call, filter,
// autoescape, do, unknown tags, filters, tests and method names, and recursive loops.
//
// Differences from Python, by design: integers are 64-bit (overflow is an error); case mapping covers ASCII,
// Latin-1, Latin Extended-A, Greek and Cyrillic; filters and methods that give generators, ranges or dict
// views in jinja2 give lists (which print as lists); `%` string formatting and Markup auto-escaping are not
// modelled; repr() of exotic unprintable code points is not escaped; jinja2's constant folding (which turns
// some runtime errors on literals into undefined values) is not reproduced. Invalid UTF-8 in messages and
// variables is replaced by U+FFFD before rendering (Python strings cannot hold it); a template that is not
// valid UTF-8 is an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "anvil/status.h"

namespace anvil {

namespace jinja {
struct Template;
}

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  std::string bos_token;
  std::string eos_token;
  // Extra string variables, such as Llama 3.1's date_string.
  std::vector<std::pair<std::string, std::string>> variables;
  // Extra variables given as JSON text and parsed at render time, such as `tools`. A JSON variable named
  // "messages" replaces the message list, for conversations with tool calls or structured content.
  std::vector<std::pair<std::string, std::string>> json_variables;
  // A hostile template cannot produce more than this, nor build a longer string.
  size_t max_output_bytes = size_t{16} << 20;
  // Nor run for more than this many steps (statements, expressions and loop iterations, plus one step per
  // 256 bytes of string or 8 list items that an operation reads or builds).
  int64_t max_steps = 10'000'000;
};

class ChatTemplate {
 public:
  // Parses `source`. Errors name the template line and the problem: "chat template line 4: unsupported
  // filter 'wordwrap'".
  static Expected<ChatTemplate> parse(std::string_view source);

  // Renders the conversation. The template sees messages (dicts with role and content), add_generation_prompt,
  // bos_token, eos_token, tools and documents (none unless given as JSON variables), and the extra variables.
  // A raise_exception() in the template becomes an error carrying its message.
  Expected<std::string> render(std::span<const ChatMessage> messages, const ChatTemplateOptions& opts) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Template> tmpl) : template_(std::move(tmpl)) {}

  std::shared_ptr<const jinja::Template> template_;
};

}  // namespace anvil
