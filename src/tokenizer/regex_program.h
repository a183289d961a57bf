// RegexProgram: a compiled tokenizer.json regex (character classes and a small instruction list) and
// compile_regex, which parses the Oniguruma (Ruby syntax) subset that split patterns use. regex.cpp runs the
// program on its backtracking VM; this header is internal to the two.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/unicode_props.h"

namespace anvil::regex_internal {

namespace ut = unicode_tables;

constexpr uint32_t category_bit(ut::Category c) {
  return uint32_t{1} << c;
}
constexpr uint32_t kLetterBits = category_bit(ut::kLu) | category_bit(ut::kLl) | category_bit(ut::kLt) |
                                 category_bit(ut::kLm) | category_bit(ut::kLo);
constexpr uint32_t kMarkBits = category_bit(ut::kMn) | category_bit(ut::kMc) | category_bit(ut::kMe);
constexpr uint32_t kNumberBits = category_bit(ut::kNd) | category_bit(ut::kNl) | category_bit(ut::kNo);
constexpr uint32_t kWordBits = kLetterBits | kMarkBits | category_bit(ut::kNd) | category_bit(ut::kPc);

constexpr int32_t kUnbounded = -1;
constexpr int32_t kMaxRepeat = 1000;
constexpr size_t kMaxProgram = 100000;
constexpr int32_t kAnyClass = -1;  // "." : any character but \n
constexpr int kMaxNesting = 100;   // group depth: bounds the parser's, compiler's and matcher's recursion

struct CharClass {
  std::vector<std::pair<char32_t, char32_t>> ranges;  // sorted, merged after finalize()
  uint32_t categories = 0;                            // bits of unicode_tables::Category
  bool white_space = false;                           // \s
  std::vector<CharClass> negated_parts;               // \S \D \W \P{..} inside brackets
  bool negated = false;
  std::array<uint64_t, 2> ascii{};  // the answer for code points below 128

  bool contains(char32_t cp) const {
    const auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                     [](char32_t c, const std::pair<char32_t, char32_t>& r) { return c < r.first; });
    if (it != ranges.begin() && cp <= std::prev(it)->second) return true;
    if ((categories & category_bit(general_category(cp))) != 0) return true;
    if (white_space && is_white_space(cp)) return true;
    for (const CharClass& part : negated_parts) {
      if (!part.matches(cp)) return true;
    }
    return false;
  }
  bool matches(char32_t cp) const {
    if (cp < 128) return ((ascii[cp >> 6] >> (cp & 63)) & 1) != 0;
    return contains(cp) != negated;
  }
  void sort_ranges() {
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<char32_t, char32_t>> merged;
    for (const auto& r : ranges) {
      if (!merged.empty() && r.first <= merged.back().second + 1) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    ranges = std::move(merged);
  }
  // Adds every code point that case-folds like one already in the ranges (simple folding).
  void close_under_case_folding() {
    sort_ranges();
    std::vector<char32_t> extra;
    std::vector<char32_t> folds;
    auto in_ranges = [&](char32_t cp) {
      const auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                       [](char32_t c, const std::pair<char32_t, char32_t>& r) { return c < r.first; });
      return it != ranges.begin() && cp <= std::prev(it)->second;
    };
    for (size_t i = 0; i < ut::kNumCaseFolds; ++i) {
      if (in_ranges(ut::kCaseFolds[i].cp)) {
        extra.push_back(ut::kCaseFolds[i].folded);
        folds.push_back(ut::kCaseFolds[i].folded);
      }
    }
    std::sort(folds.begin(), folds.end());
    for (size_t i = 0; i < ut::kNumCaseFolds; ++i) {
      const char32_t f = ut::kCaseFolds[i].folded;
      if (in_ranges(f) || std::binary_search(folds.begin(), folds.end(), f)) extra.push_back(ut::kCaseFolds[i].cp);
    }
    for (const char32_t cp : extra) ranges.emplace_back(cp, cp);
    sort_ranges();
  }
  void finalize() {
    sort_ranges();
    for (CharClass& part : negated_parts) part.finalize();
    ascii = {};
    for (char32_t cp = 0; cp < 128; ++cp) {
      if (contains(cp) != negated) ascii[cp >> 6] |= uint64_t{1} << (cp & 63);
    }
  }
};

enum class RepeatMode : uint8_t { kGreedy, kLazy, kPossessive };
enum class AssertKind : uint8_t {
  kLineStart,
  kLineEnd,
  kTextStart,
  kTextEnd,
  kTextEndNewline,
  kWordBoundary,
  kNotWordBoundary
};

enum class Op : uint8_t { kClass, kSplit, kJmp, kMatch, kLook, kAtomic, kAssert, kRepeatClass };

struct Inst {
  Op op;
  RepeatMode mode = RepeatMode::kGreedy;
  bool negate = false;
  AssertKind assertion = AssertKind::kTextStart;
  int32_t x = 0;    // kClass/kRepeatClass: class; kSplit/kJmp: target; kLook/kAtomic: sub-program start
  int32_t y = 0;    // kSplit: second target; kLook/kAtomic: continuation
  int32_t min = 0;  // kRepeatClass
  int32_t max = 0;  // kRepeatClass (kUnbounded)
};

struct RegexProgram {
  std::vector<CharClass> classes;
  std::vector<Inst> code;

  bool class_matches(int32_t cls, char32_t cp) const {
    if (cls == kAnyClass) return cp != '\n';
    return classes[static_cast<size_t>(cls)].matches(cp);
  }
};

// Parses and compiles `pattern`. Errors give the problem and its byte offset (unsupported constructs are
// kUnsupported, malformed patterns kInvalidFile); the caller adds where the pattern came from.
Expected<std::shared_ptr<const RegexProgram>> compile_regex(std::string_view pattern);

}  // namespace anvil::regex_internal
