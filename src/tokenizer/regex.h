// Pattern: what a tokenizer.json "pattern" names ({"String": ...} or {"Regex": ...}) and the matching Hugging
// Face tokenizers does with it. Regexes run on PCRE2 (UTF + Unicode properties, JIT-compiled where the platform
// has it), after regex_syntax.h rewrites the few Oniguruma constructs that mean something else in PCRE2; matches
// are iterated as HF's Oniguruma iterator does. A Pattern is immutable: concurrent find_all calls are safe.
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
struct CompiledRegex;
}

class Pattern {
 public:
  // A literal string: its non-overlapping occurrences, left to right. An empty literal matches nothing.
  static Pattern literal(std::string_view text);
  // Compiles an Oniguruma-syntax regex; errors name `where` (the tokenizer.json field), the pattern, the problem
  // and its offset: kUnsupported for a construct PCRE2 cannot mean the same by, kInvalidFile for a malformed one.
  static Expected<Pattern> regex(std::string_view pattern, const std::string& where);

  // Appends the successive non-overlapping matches in UTF-8 `text` to `matches` (cleared first). Fails, naming
  // the regex, with kResourceExhausted when a match needs more backtracking than the bound (catastrophic
  // patterns) and kInvalidArgument when `text` is not valid UTF-8 (the tokenizer replaces such bytes first).
  Status find_all(std::string_view text, std::vector<MatchRange>& matches) const;

 private:
  std::string text_;                                               // the literal, or the regex source (for errors)
  std::shared_ptr<const regex_internal::CompiledRegex> compiled_;  // null for a literal
};

// Reads a tokenizer.json pattern object: {"String": literal} or {"Regex": pattern}.
Expected<Pattern> parse_pattern(const nlohmann::json& j, const JsonWhere& where);

}  // namespace anvil
