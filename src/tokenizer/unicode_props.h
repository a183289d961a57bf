// Unicode helpers for the Hugging Face tokenizer pipeline: stepping through UTF-8 code points, general
// categories, the character predicates HF's Rust code uses (char::is_whitespace, char::is_numeric, regex \w),
// simple case folding, and NFC/NFD. All from the generated tables (unicode_tables.h); no library needed.
// Inputs are valid UTF-8 (encode replaces invalid bytes before anything here runs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace anvil {

// The code point starting at `pos` of valid UTF-8 `text`, and its length in bytes.
struct CodePoint {
  char32_t value;
  size_t num_bytes;
};
CodePoint decode_code_point(std::string_view text, size_t pos);
// The start of the code point that ends just before byte `end` (> 0) of valid UTF-8 `text`.
size_t previous_code_point_start(std::string_view text, size_t end);

// Appends the UTF-8 encoding of `cp` (<= U+10FFFF) to `out`.
void append_utf8(char32_t cp, std::string& out);

// The general category of `cp` (code points past U+10FFFF are Cn).
unicode_tables::Category general_category(char32_t cp);

// Rust char::is_whitespace: the Unicode White_Space property.
bool is_white_space(char32_t cp);
// Rust char::is_numeric: general category Nd, Nl or No, in the Unicode version of the Rust that built HF
// tokenizers (newer than its regex classes; the table is read from HF's Digits pre-tokenizer).
bool is_numeric(char32_t cp);
// Rust regex \w: Alphabetic, Mark, Nd, Pc or Join_Control (Alphabetic approximated as letters, Nl and the
// circled/squared Latin letters that are So with Other_Alphabetic).
bool is_word_char(char32_t cp);

// Simple case folding (the one-character folds of Unicode's CaseFolding), and every code point that folds
// to the same character as `cp` (including `cp`).
char32_t simple_case_fold(char32_t cp);
std::vector<char32_t> case_fold_orbit(char32_t cp);

enum class NormalForm { kNfc, kNfd };
// Normalizes valid UTF-8 `text` in place (canonical decomposition, canonical ordering, and for NFC the
// canonical composition, Hangul included).
void normalize_unicode(std::string& text, NormalForm form);

}  // namespace anvil
