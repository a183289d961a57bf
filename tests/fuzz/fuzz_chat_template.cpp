// fuzz-sources: src/tokenizer/chat_template.cpp src/tokenizer/jinja_eval.cpp src/tokenizer/jinja_filters.cpp src/tokenizer/jinja_lexer.cpp src/tokenizer/jinja_ops.cpp src/tokenizer/jinja_parser.cpp src/tokenizer/jinja_unicode.cpp src/tokenizer/jinja_value.cpp src/tokenizer/utf8.cpp src/core/status.cpp
// Fuzzes the chat template parser and renderer: the input is a template, rendered (when it parses) on a
// fixed conversation with small limits. Rendering must not crash, must be deterministic, and must produce
// valid UTF-8 within the output limit.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/utf8.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

bool valid_utf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const anvil::Utf8Sequence seq = anvil::classify_utf8(s, pos);
    if (seq.kind != anvil::Utf8Kind::kComplete) return false;
    pos += seq.length;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  auto parsed = anvil::ChatTemplate::parse(source);
  if (!parsed.ok()) {
    check(!parsed.status().message().empty());
    return 0;
  }
  static const std::vector<anvil::ChatMessage> kMessages = {{"system", "You are terse."},
                                                            {"user", "Hi \xC3\xA9 \xF0\x9F\x98\x80\n  x"},
                                                            {"assistant", "Hello"},
                                                            {"user", "Bye"}};
  anvil::ChatTemplateOptions opts;
  opts.add_generation_prompt = true;
  opts.bos_token = "<s>";
  opts.eos_token = "</s>";
  opts.variables = {{"date_string", "26 Jul 2024"}};
  opts.json_variables = {
      {"tools", R"([{"type": "function", "function": {"name": "f", "parameters": {"a": [1, 2.5, null]}}}])"}};
  opts.max_output_bytes = 1 << 16;
  opts.max_steps = 20000;
  const auto first = parsed->render(kMessages, opts);
  const auto second = parsed->render(kMessages, opts);
  check(first.ok() == second.ok());
  if (first.ok()) {
    check(*first == *second);
    check(first->size() <= opts.max_output_bytes);
    check(valid_utf8(*first));
  } else {
    check(first.status().message() == second.status().message());
  }
  return 0;
}
