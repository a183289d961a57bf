// Code point stepping, category lookup (a two-level table built once from the generated runs), HF's
// character predicates, simple case folding, and NFC/NFD by the algorithms of UAX #15.
#include "tokenizer/unicode_props.h"

#include <algorithm>
#include <array>
#include <unordered_map>

namespace anvil {
namespace ut = unicode_tables;
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr size_t kBlockBits = 8;
constexpr size_t kBlockSize = size_t{1} << kBlockBits;

struct CategoryTable {
  std::vector<uint16_t> block_of;  // [0x110000 / 256] index of each 256-code-point block in `blocks`
  std::vector<uint8_t> blocks;     // [num_distinct_blocks * 256]
};

CategoryTable build_category_table() {
  std::vector<uint8_t> flat(kMaxCodePoint + 1, ut::kCn);
  for (size_t i = 0; i < ut::kNumCategoryRuns; ++i) {
    const uint32_t start = ut::kCategoryRuns[i].start;
    const uint32_t end = i + 1 < ut::kNumCategoryRuns ? ut::kCategoryRuns[i + 1].start : kMaxCodePoint + 1;
    std::fill(flat.begin() + start, flat.begin() + end, ut::kCategoryRuns[i].category);
  }
  CategoryTable table;
  const size_t num_blocks = flat.size() / kBlockSize;
  table.block_of.resize(num_blocks);
  std::unordered_map<std::string, uint16_t> seen;
  for (size_t b = 0; b < num_blocks; ++b) {
    std::string block(reinterpret_cast<const char*>(flat.data() + b * kBlockSize), kBlockSize);
    const auto [it, inserted] = seen.emplace(std::move(block), static_cast<uint16_t>(seen.size()));
    if (inserted) {
      table.blocks.insert(table.blocks.end(), flat.begin() + static_cast<std::ptrdiff_t>(b * kBlockSize),
                          flat.begin() + static_cast<std::ptrdiff_t>((b + 1) * kBlockSize));
    }
    table.block_of[b] = it->second;
  }
  return table;
}

const CategoryTable& category_table() {
  static const CategoryTable table = build_category_table();
  return table;
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const ut::CombiningRun* end = ut::kCombiningRuns + ut::kNumCombiningRuns;
  const ut::CombiningRun* it =
      std::upper_bound(ut::kCombiningRuns, end, cp, [](char32_t c, const ut::CombiningRun& r) { return c < r.first; });
  if (it == ut::kCombiningRuns) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const ut::Decomposition* find_decomposition(char32_t cp) {
  const ut::Decomposition* end = ut::kDecompositions + ut::kNumDecompositions;
  const ut::Decomposition* it =
      std::lower_bound(ut::kDecompositions, end, cp, [](const ut::Decomposition& d, char32_t c) { return d.cp < c; });
  return it != end && it->cp == cp ? it : nullptr;
}

constexpr char32_t kSBase = 0xAC00;
constexpr char32_t kLBase = 0x1100;
constexpr char32_t kVBase = 0x1161;
constexpr char32_t kTBase = 0x11A7;
constexpr char32_t kLCount = 19;
constexpr char32_t kVCount = 21;
constexpr char32_t kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount;
constexpr char32_t kSCount = kLCount * kNCount;

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const ut::Decomposition* d = find_decomposition(cp)) {
    decompose(d->first, out);
    if (d->second != 0) decompose(d->second, out);
    return;
  }
  out.push_back(cp);
}

// The primary composite of (first, second), or 0.
char32_t compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const ut::Composition* end = ut::kCompositions + ut::kNumCompositions;
  const ut::Composition* it =
      std::lower_bound(ut::kCompositions, end, std::pair{first, second},
                       [](const ut::Composition& c, const std::pair<char32_t, char32_t>& key) {
                         return c.first != key.first ? c.first < key.first : c.second < key.second;
                       });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

}  // namespace

CodePoint decode_code_point(std::string_view text, size_t pos) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) return {b0, 1};
  const size_t left = text.size() - pos;
  auto cont = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(text[pos + k]) & 0x3F); };
  if (b0 < 0xE0 && left >= 2) return {(static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1), 2};
  if (b0 < 0xF0 && left >= 3) return {(static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2), 3};
  if (b0 >= 0xF0 && left >= 4) {
    return {(static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), 4};
  }
  // Only reachable on invalid input, which callers never pass: take one byte so loops still advance.
  return {0xFFFD, 1};
}

size_t previous_code_point_start(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

ut::Category general_category(char32_t cp) {
  if (cp > kMaxCodePoint) return ut::kCn;
  const CategoryTable& t = category_table();
  return static_cast<ut::Category>(t.blocks[t.block_of[cp >> kBlockBits] * kBlockSize + (cp & (kBlockSize - 1))]);
}

bool is_white_space(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_numeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const ut::NumericRun* end = ut::kNumericRuns + ut::kNumNumericRuns;
  const ut::NumericRun* it =
      std::upper_bound(ut::kNumericRuns, end, cp, [](char32_t c, const ut::NumericRun& r) { return c < r.first; });
  return it != ut::kNumericRuns && cp <= std::prev(it)->last;
}

bool is_word_char(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
  }
  if (cp == 0x200C || cp == 0x200D) return true;  // Join_Control
  if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
      (cp >= 0x1F170 && cp <= 0x1F189)) {
    return true;
  }
  const ut::Category cat = general_category(cp);
  return cat <= ut::kMe || cat == ut::kNd || cat == ut::kNl || cat == ut::kPc;
}

char32_t simple_case_fold(char32_t cp) {
  const ut::CaseFold* end = ut::kCaseFolds + ut::kNumCaseFolds;
  const ut::CaseFold* it =
      std::lower_bound(ut::kCaseFolds, end, cp, [](const ut::CaseFold& f, char32_t c) { return f.cp < c; });
  return it != end && it->cp == cp ? it->folded : cp;
}

std::vector<char32_t> case_fold_orbit(char32_t cp) {
  const char32_t folded = simple_case_fold(cp);
  std::vector<char32_t> orbit{folded};
  for (size_t i = 0; i < ut::kNumCaseFolds; ++i) {
    if (ut::kCaseFolds[i].folded == folded) orbit.push_back(ut::kCaseFolds[i].cp);
  }
  if (std::find(orbit.begin(), orbit.end(), cp) == orbit.end()) orbit.push_back(cp);
  std::sort(orbit.begin(), orbit.end());
  orbit.erase(std::unique(orbit.begin(), orbit.end()), orbit.end());
  return orbit;
}

void normalize_unicode(std::string& text, NormalForm form) {
  bool below_combining = true;
  for (const char c : text) below_combining = below_combining && static_cast<uint8_t>(c) < 0xC0;
  if (below_combining) return;  // ASCII only: already normalized
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint cp = decode_code_point(text, pos);
    decompose(cp.value, cps);
    pos += cp.num_bytes;
  }
  // Canonical ordering: each run of non-starters sorted by combining class, stably.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  if (form == NormalForm::kNfc && !cps.empty()) {
    size_t starter = 0;
    int last_class = combining_class(cps[0]) == 0 ? 0 : 256;
    size_t out = 1;
    for (size_t i = 1; i < cps.size(); ++i) {
      const char32_t ch = cps[i];
      const int ch_class = combining_class(ch);
      const char32_t composite = last_class == 256 ? 0 : compose(cps[starter], ch);
      if (composite != 0 && (last_class < ch_class || last_class == 0)) {
        cps[starter] = composite;
        continue;
      }
      if (ch_class == 0) starter = out;
      last_class = ch_class;
      cps[out++] = ch;
    }
    cps.resize(out);
  }
  std::string result;
  result.reserve(text.size() + 8);
  for (const char32_t cp : cps) append_utf8(cp, result);
  text = std::move(result);
}

}  // namespace anvil
