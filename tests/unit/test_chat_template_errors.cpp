// Bad input for ChatTemplate: unsupported and unknown constructs rejected at parse time with the construct
// named, unclosed and mismatched blocks, lexer errors with line numbers, raise_exception messages, invalid
// UTF-8, and hostile templates (endless loops, output and string bombs, deep nesting, runaway recursion)
// stopped by the limits with a clear error instead of a hang or a crash.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace anvil {
namespace {

const std::vector<ChatMessage> kMessages = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}};

Status parse_error(const std::string& source) {
  auto parsed = ChatTemplate::parse(source);
  EXPECT_FALSE(parsed.ok()) << "parsed: " << source;
  return parsed.ok() ? Status() : parsed.status();
}

Expected<std::string> render(const std::string& source, const ChatTemplateOptions& opts = {}) {
  auto parsed = ChatTemplate::parse(source);
  if (!parsed.ok()) return parsed.status();
  return parsed->render(kMessages, opts);
}

Status render_error(const std::string& source, const ChatTemplateOptions& opts = {}) {
  auto result = render(source, opts);
  EXPECT_FALSE(result.ok()) << "rendered: " << source << " -> " << (result.ok() ? *result : "");
  return result.ok() ? Status() : result.status();
}

void expect_contains(const Status& status, const std::string& needle) {
  EXPECT_NE(status.message().find(needle), std::string::npos) << "expected '" << needle << "' in: " << status.message();
}

TEST(ChatTemplateErrors, UnsupportedTagsAreNamedAtParseTime) {
  for (const std::string tag :
       {"include", "extends", "import", "from", "block", "call", "filter", "autoescape", "do"}) {
    const Status s = parse_error("text {% " + tag + " 'x' %}");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    expect_contains(s, "unsupported tag '" + tag + "'");
    expect_contains(s, "line 1");
  }
  expect_contains(parse_error("{% frobnicate %}"), "unknown tag 'frobnicate'");
  expect_contains(parse_error("{% for x in [1] recursive %}{% endfor %}"), "recursive for loops are not supported");
}

TEST(ChatTemplateErrors, UnknownFiltersTestsMethodsAndFunctions) {
  expect_contains(parse_error("{{ x | wordwrap(10) }}"), "unsupported filter 'wordwrap'");
  expect_contains(parse_error("{{ x | no_such_filter }}"), "unsupported filter 'no_such_filter'");
  expect_contains(parse_error("{% if x is prime %}{% endif %}"), "unsupported test 'prime'");
  expect_contains(parse_error("{{ messages.append(1) }}"), "unsupported method 'append'");
  expect_contains(parse_error("{{ 'x'.format(1) }}"), "unsupported method 'format'");
  expect_contains(parse_error("{{ cycler('a', 'b') }}"), "unsupported function 'cycler'");
  expect_contains(parse_error("{% for x in [1] %}{{ loop.cycle('a', 'b') }}{% endfor %}"),
                  "unsupported method 'cycle'");
  // Filters inside an unused branch are still checked: the error comes before any rendering.
  expect_contains(parse_error("{% if false %}{{ 1 | nope }}{% endif %}"), "unsupported filter 'nope'");
}

TEST(ChatTemplateErrors, UnclosedAndMismatchedBlocks) {
  expect_contains(parse_error("line1\n{% if true %}\nno end"), "line 2: 'if' block is never closed (expected 'elif')");
  expect_contains(parse_error("{% for m in messages %}{{ m }}"), "'for' block is never closed");
  expect_contains(parse_error("{% macro f() %}x"), "'macro' block is never closed");
  expect_contains(parse_error("{% set x %}y"), "'set' block is never closed");
  expect_contains(parse_error("{% for x in y %}{% endif %}"), "unexpected 'endif'");
  expect_contains(parse_error("{% if x %}{% endfor %}{% endif %}"), "unexpected 'endfor'");
  expect_contains(parse_error("{% endfor %}"), "unexpected 'endfor'");
  expect_contains(parse_error("{% else %}"), "unexpected 'else'");
  expect_contains(parse_error("{% break %}"), "'break' outside of a for loop");
  expect_contains(parse_error("{% for x in y %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}"),
                  "'continue' outside of a for loop");
}

TEST(ChatTemplateErrors, LexerErrorsNameTheLine) {
  expect_contains(parse_error("a\nb\n{{ 'unterminated }}"), "line 3: unterminated string");
  expect_contains(parse_error("{{ x "), "unexpected end of template inside a '{{' tag");
  expect_contains(parse_error("{% if x "), "unexpected end of template inside a '{%' tag");
  expect_contains(parse_error("x {# comment"), "missing end of comment tag");
  expect_contains(parse_error("{% raw %}never ends"), "missing end of raw directive");
  expect_contains(parse_error("{{ (1 ] }}"), "unexpected ']', expected ')'");
  expect_contains(parse_error("{{ ) }}"), "unexpected ')'");
  expect_contains(parse_error("{{ 1 $ 2 }}"), "unexpected character '$'");
  expect_contains(parse_error("{{ 99999999999999999999 }}"), "too large");
  expect_contains(parse_error("{{ '\\x4' }}"), "truncated \\x escape");
  expect_contains(parse_error("{{ }}"), "expected an expression");
  expect_contains(parse_error("{{ 1 + }}"), "unexpected '}}'");
  expect_contains(parse_error("{% set 1 = 2 %}"), "expected a name");
  expect_contains(parse_error("{{ 'abc'[::, 1] }}"), "slices inside a tuple subscript are not supported");
}

TEST(ChatTemplateErrors, RaiseExceptionCarriesTheTemplateMessage) {
  const Status s = render_error("x\n{{ raise_exception('Roles must alternate: ' ~ messages[1].role) }}");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  expect_contains(s, "chat template line 2: raise_exception: Roles must alternate: user");
}

TEST(ChatTemplateErrors, RenderTimeErrorsAreClear) {
  expect_contains(render_error("{{ nothing.here }}"), "'nothing' is undefined");
  expect_contains(render_error("{{ messages[0].nope.deeper }}"), "'dict object' has no attribute 'nope'");
  expect_contains(render_error("{{ 'a' + 1 }}"), "unsupported operand type(s) for +: 'str' and 'int'");
  expect_contains(render_error("{{ 1 // 0 }}"), "division by zero");
  expect_contains(render_error("{{ 2 ** 64 }}"), "integer overflow");
  expect_contains(render_error("{% for x in 3 %}{% endfor %}"), "'int' object is not iterable");
  expect_contains(render_error("{% set s = 1 %}{% set s.a = 2 %}"), "is not a namespace");
  expect_contains(render_error("{{ [1, 2] | tojson(indent=[]) }}"), "indent must be an integer or a string");
  expect_contains(render_error("{{ x | tojson }}"), "not JSON serializable");
  expect_contains(render_error("{{ 'abc'.split('') }}"), "empty separator");
  expect_contains(render_error("{{ 'x' | replace('a') }}"), "needs the old and new strings");
  expect_contains(render_error("{{ 'x' | trim(1, 2) }}"), "takes at most 1 argument");
}

TEST(ChatTemplateErrors, InvalidUtf8) {
  // A template must be valid UTF-8.
  const Status s = parse_error(std::string("ok {{ 'a\xC3\x28' }}"));
  expect_contains(s, "invalid UTF-8 at byte 8");
  // Message content is repaired: each invalid sequence becomes U+FFFD, as Python's errors='replace' does.
  auto parsed = ChatTemplate::parse("{% for m in messages %}[{{ m.content }}|{{ m.content | length }}]{% endfor %}");
  ASSERT_TRUE(parsed.ok());
  const std::vector<ChatMessage> messages = {{"user", std::string("a\xFF"
                                                                  "b\xE2\x82")}};
  auto out = parsed->render(messages, ChatTemplateOptions{});
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(*out,
            "[a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD|4]");
}

TEST(ChatTemplateErrors, BadJsonVariables) {
  ChatTemplateOptions opts;
  opts.json_variables = {{"tools", "[{\"name\": "}};
  expect_contains(render_error("{{ tools }}", opts), "chat template variable 'tools': invalid JSON");
  opts.json_variables = {{"deep", std::string(5000, '[') + std::string(5000, ']')}};
  expect_contains(render_error("{{ deep }}", opts), "nested deeper than");
  opts.json_variables = {{"big", "18446744073709551615"}};
  expect_contains(render_error("{{ big }}", opts), "larger than 64 bits");
}

TEST(ChatTemplateErrors, HostileTemplatesHitLimits) {
  ChatTemplateOptions opts;
  opts.max_steps = 200000;
  opts.max_output_bytes = 1 << 20;
  expect_contains(
      render_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", opts),
      "render step limit of 200000 exceeded");
  expect_contains(render_error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", opts),
                  "rendered output longer than the limit of 1048576 bytes");
  expect_contains(render_error("{{ 'x' * 1000000000000 }}", opts), "string longer than the limit");
  expect_contains(render_error("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                               "{% endfor %}",
                               opts),
                  "string longer than the limit");
  expect_contains(render_error("{{ [0] * 100000000 }}", opts), "list longer than");
  expect_contains(render_error("{{ range(1000000000) | length }}", opts), "range() too big");
  expect_contains(render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", opts),
                  "macro calls nested deeper than 20");
  expect_contains(render_error("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}"
                               "{% endfor %}",
                               opts),
                  "nested deeper than 64 levels");
  expect_contains(render_error("{% set ns = namespace() %}{% set ns.me = ns %}", opts),
                  "a namespace cannot hold another namespace");
  // Work on big values counts too: a loop copying a 1 MiB string is stopped long before its 100000 iterations.
  opts.max_output_bytes = 4 << 20;
  expect_contains(render_error("{% set big = 'x' * 1048576 %}{% for i in range(100000) %}{% set y = big ~ i %}"
                               "{% if big in y %}{% endif %}{% endfor %}",
                               opts),
                  "render step limit of 200000 exceeded");
  // The default limits stop an endless template too.
  expect_contains(render_error("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"),
                  "render step limit of 10000000 exceeded");
}

TEST(ChatTemplateErrors, DeepNestingIsRejectedNotOverflowed) {
  expect_contains(parse_error("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"),
                  "nested deeper than");
  expect_contains(parse_error("{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}"), "nested deeper than");
  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  expect_contains(parse_error(nots + "1 }}"), "nested deeper than");
  expect_contains(parse_error("{{ " + std::string(5000, '-') + "1 }}"), "nested deeper than");
  std::string sum = "{{ 1";
  for (int i = 0; i < 5000; ++i) sum += " + 1";
  expect_contains(parse_error(sum + " }}"), "expression nested deeper than 200");
  std::string chain = "{{ x";
  for (int i = 0; i < 5000; ++i) chain += "[0]";
  expect_contains(parse_error(chain + " }}"), "expression nested deeper than 200");
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  expect_contains(parse_error(ifs), "nested deeper than 100 levels");
  // Realistic nesting is fine.
  auto ok = render(
      "{{ ((((1 + 2) * 3) - 4) // 2) }}{% if 1 %}{% if 2 %}{% for x in [[1]] %}{{ x[0] }}{% endfor %}"
      "{% endif %}{% endif %}");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(*ok, "21");
}

TEST(ChatTemplateErrors, EdgeCasesThatMustWork) {
  auto empty = render("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
  // jinja2 drops one trailing newline of the source and normalizes \r\n.
  auto text = render("plain\r\ntext\n\n");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "plain\ntext\n");
  // Variables: strings, JSON, and a JSON "messages" replacing the conversation.
  ChatTemplateOptions opts;
  opts.variables = {{"date_string", "01 Jan 2025"}};
  opts.json_variables = {{"tools", "[{\"name\": \"f\", \"x\": 1.5}]"},
                         {"messages", "[{\"role\": \"user\", \"content\": \"json\", \"n\": 3}]"}};
  auto vars = render(
      "{{ date_string }} {{ tools[0].name }} {{ tools | tojson }} {{ messages[0].n }} "
      "{{ messages | length }} {{ documents }}",
      opts);
  ASSERT_TRUE(vars.ok()) << vars.status().to_string();
  EXPECT_EQ(*vars, "01 Jan 2025 f [{\"name\": \"f\", \"x\": 1.5}] 3 1 None");
  // strftime_now gives today's date in the requested format.
  auto date = render("{{ strftime_now('%Y') | length }}");
  ASSERT_TRUE(date.ok()) << date.status().to_string();
  EXPECT_EQ(*date, "4");
}

}  // namespace
}  // namespace anvil
