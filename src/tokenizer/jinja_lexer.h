// Tokenizer for the Jinja2 subset chat templates use. It reproduces jinja2's lexer rules exactly, because
// whitespace is part of a prompt: newline normalization and the dropped final newline, `{%-`/`-%}` stripping,
// and the trim_blocks/lstrip_blocks environment options that transformers' apply_chat_template turns on.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/status.h"

namespace anvil::jinja {

enum class TokenKind {
  kData,           // template text, already stripped as whitespace control asks
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,  // text holds the operator: "+", "//", "==", "(", ...
  kEof,
};

struct Token {
  TokenKind kind = TokenKind::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;
};

struct LexOptions {
  bool trim_blocks = true;    // drop the first newline after a block or comment tag
  bool lstrip_blocks = true;  // drop spaces and tabs before a block or comment tag that starts a line
};

// Splits `source` (valid UTF-8) into tokens ending with kEof. Errors name the template line:
// "chat template line 3: unterminated string".
Expected<std::vector<Token>> tokenize(std::string_view source, const LexOptions& options);

}  // namespace anvil::jinja
