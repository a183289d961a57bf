// Renders a parsed template: walks the statement tree with jinja2's scoping (an if shares its scope, each for
// loop iteration gets a fresh one, macros see their arguments and the template's top level), under limits on
// output size, work and nesting so that no template can hang or exhaust the process.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_builtins.h"

namespace anvil::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{16} << 20;  // also bounds every string built while rendering
  int64_t max_steps = 10'000'000;              // statements, expressions, loop iterations, and size-based work
  int max_macro_depth = 20;                    // nested macro calls
};

// Renders `tmpl` with the given top-level variables. Errors say "chat template line N: ...".
Expected<std::string> render_template(const Template& tmpl, std::vector<std::pair<std::string, Value>> variables,
                                      const RenderLimits& limits);

}  // namespace anvil::jinja
