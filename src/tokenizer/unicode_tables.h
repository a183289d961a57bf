// The Unicode data the tokenizer needs, as plain arrays generated from Python's unicodedata
// (tools/make_tokenizer_fixtures.py --unicode-tables writes unicode_tables.cpp): general categories,
// canonical combining classes, canonical decompositions and compositions, Rust's numeric characters, simple
// case folds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace anvil::unicode_tables {

// General categories, in the order of the generated tables.
enum Category : uint8_t {
  kLu,
  kLl,
  kLt,
  kLm,
  kLo,
  kMn,
  kMc,
  kMe,
  kNd,
  kNl,
  kNo,
  kPc,
  kPd,
  kPs,
  kPe,
  kPi,
  kPf,
  kPo,
  kSm,
  kSc,
  kSk,
  kSo,
  kZs,
  kZl,
  kZp,
  kCc,
  kCf,
  kCs,
  kCo,
  kCn,
  kNumCategories
};

struct CategoryRun {
  uint32_t start;    // first code point of a run of one category; runs are sorted and cover 0..0x10FFFF
  uint8_t category;  // Category
};
struct CombiningRun {
  uint32_t first;
  uint32_t last;
  uint8_t ccc;  // canonical combining class (non-zero)
};
struct Decomposition {
  uint32_t cp;
  uint32_t first;
  uint32_t second;  // 0 for a singleton decomposition
};
struct Composition {
  uint32_t first;
  uint32_t second;
  uint32_t composite;  // sorted by (first, second)
};
struct NumericRun {
  uint32_t first;  // a run of code points Rust's char::is_numeric accepts, sorted
  uint32_t last;
};
struct CaseFold {
  uint32_t cp;
  uint32_t folded;  // sorted by cp
};

extern const char* const kUnicodeVersion;
extern const CategoryRun kCategoryRuns[];
extern const size_t kNumCategoryRuns;
extern const CombiningRun kCombiningRuns[];
extern const size_t kNumCombiningRuns;
extern const Decomposition kDecompositions[];  // sorted by cp
extern const size_t kNumDecompositions;
extern const Composition kCompositions[];
extern const size_t kNumCompositions;
extern const NumericRun kNumericRuns[];
extern const size_t kNumNumericRuns;
extern const CaseFold kCaseFolds[];
extern const size_t kNumCaseFolds;

}  // namespace anvil::unicode_tables
