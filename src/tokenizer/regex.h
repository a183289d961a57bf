// Pattern: what a tokenizer.json "pattern" names ({"String": ...} or {"Regex": ...}) and the matching Hugging
// Face tokenizers does with it. Regexes run on a small backtracking engine over code points with Oniguruma's
// (Ruby syntax) meaning: Unicode \s \d \w and \p{..} general categories, classes, (?:) (?i:) (?>) groups,
// lookahead, greedy/lazy/possessive quantifiers, ^ $ \A \z. Unsupported constructs (lookbehind, scripts,
// backreferences, ...) are errors naming them. Matches are iterated as HF's Oniguruma iterator does.
// NOTE: a self-contained engine rather than PCRE2 or Oniguruma because the GPU machines have neither's
// development files (and no network); tokenizer split patterns use a small, well-defined subset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/json_fields.h"

namespace anvil {

// A [start, end) byte range of a match.
using MatchRange = std::pair<size_t, size_t>;

namespace regex_internal {
struct RegexProgram;
}

class Pattern {
 public:
  // A literal string: its non-overlapping occurrences, left to right. An empty literal matches nothing.
  static Pattern literal(std::string_view text);
  // Compiles a regex; errors name `where` (the tokenizer.json field), the construct and its offset.
  static Expected<Pattern> regex(std::string_view pattern, const std::string& where);

  // Appends the successive non-overlapping matches in valid UTF-8 `text` to `matches` (cleared first). Fails
  // only when a match needs more backtracking steps than the bound (catastrophic patterns), naming the regex.
  Status find_all(std::string_view text, std::vector<MatchRange>& matches) const;

 private:
  std::string text_;                                             // the literal, or the regex source (for errors)
  std::shared_ptr<const regex_internal::RegexProgram> program_;  // null for a literal
};

// Reads a tokenizer.json pattern object: {"String": literal} or {"Regex": pattern}.
Expected<Pattern> parse_pattern(const nlohmann::json& j, const JsonWhere& where);

}  // namespace anvil
