// Parser for chat templates: tokens to a Template tree, following jinja2's grammar and operator precedence
// (jinja2/parser.py). Everything the renderer would not support is rejected here, naming the construct:
// unknown or unsupported tags, filters, tests, methods and functions, and unclosed or mismatched blocks.
#pragma once

#include <memory>
#include <string_view>

#include "anvil/status.h"
#include "tokenizer/jinja_ast.h"

namespace anvil::jinja {

// Nesting limits that keep parsing and rendering within a small, fixed stack.
inline constexpr int kMaxExprDepth = 200;     // height of one expression tree
inline constexpr int kMaxParseNesting = 100;  // brackets, unary operators and nested blocks

// Parses a template (UTF-8). Errors say "chat template line N: ...".
Expected<std::shared_ptr<const Template>> parse_template(std::string_view source);

}  // namespace anvil::jinja
