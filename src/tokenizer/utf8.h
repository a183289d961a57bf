// UTF-8 helpers shared by the tokenizer, the decoder and the incremental detokenizer: classify the sequence
// at a position, and copy bytes to text with invalid sequences replaced by U+FFFD. One replacement rule for
// batch decode and streaming keeps "streamed text == decoded text" true for every token sequence.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace anvil {

enum class Utf8Kind {
  kComplete,    // a well-formed character of `length` bytes
  kInvalid,     // `length` bytes (a maximal subpart, >= 1) that can never start a character
  kIncomplete,  // `length` bytes that are a valid start but the input ends before the character does
};

struct Utf8Sequence {
  Utf8Kind kind;
  size_t length;
};

// Classifies the bytes at `pos` (< bytes.size()) by the Unicode well-formedness table (no overlongs, no
// surrogates, nothing above U+10FFFF). An invalid result covers the maximal subpart, as Unicode recommends.
Utf8Sequence classify_utf8(std::string_view bytes, size_t pos);

// What to do with an incomplete sequence at the end of the input.
enum class Utf8Tail {
  kHold,     // leave it unconsumed: more bytes may complete it
  kReplace,  // replace it with one U+FFFD: the input is final
};

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Appends `bytes` to `out` as valid UTF-8: each invalid maximal subpart becomes one U+FFFD (the rule of
// Python's bytes.decode(errors="replace")). Returns the number of bytes consumed, which is bytes.size()
// unless `tail` is kHold and the input ends inside a character.
size_t append_valid_utf8(std::string_view bytes, Utf8Tail tail, std::string& out);

// Convenience: the whole input as valid UTF-8.
std::string to_valid_utf8(std::string_view bytes);

}  // namespace anvil
