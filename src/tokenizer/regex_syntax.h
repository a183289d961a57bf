// Oniguruma -> PCRE2 pattern rewriting. Hugging Face tokenizers compiles tokenizer.json regexes with Oniguruma
// (its default, Ruby-like syntax); Anvil runs them on PCRE2. Most syntax means the same in both. This rewrites
// what does not (\s \w \b \h \v \uHHHH {,n} (?m), and general categories \p{..} \d, which PCRE2 10.42 knows
// from Unicode 14 and Oniguruma from Unicode 16) and refuses, naming it, what has no PCRE2 equal, so a pattern
// never silently matches differently. Internal to regex.cpp; a header of its own so the rewrite is tested alone.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/status.h"

namespace anvil::regex_internal {

struct TranslatedPattern {
  std::string pcre2;                // the pattern in PCRE2 syntax
  std::vector<size_t> source_byte;  // for each byte of `pcre2`, and one past its end: the byte of the original
};

// Rewrites Oniguruma `pattern` for PCRE2 compiled with PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE and newline LF
// (Oniguruma's ^ and $ are line anchors and its "." stops at \n only). Errors are kUnsupported, naming the
// construct and its byte offset; malformed patterns pass through for PCRE2 to reject.
Expected<TranslatedPattern> onig_to_pcre2(std::string_view pattern);

}  // namespace anvil::regex_internal
