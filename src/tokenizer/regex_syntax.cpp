// Oniguruma -> PCRE2 pattern rewriting: one pass over the pattern that tracks character classes, copies what
// means the same in both engines, rewrites what differs and refuses what PCRE2 cannot express.
#include "tokenizer/regex_syntax.h"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "tokenizer/unicode_props.h"

namespace anvil::regex_internal {
namespace {

namespace ut = unicode_tables;

// Oniguruma's Unicode \s is the White_Space property; PCRE2's (with PCRE2_UCP) also takes U+180E.
constexpr std::string_view kSpace = "\\p{White_Space}";
constexpr std::string_view kNotSpace = "\\P{White_Space}";
constexpr std::string_view kHexItems = "0-9a-fA-F";  // Oniguruma's \h

constexpr std::array<const char*, ut::kNumCategories> kCategoryNames = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
constexpr std::array<const char*, ut::kNumCategories> kCategoryLongNames = {
    "uppercaseletter",    "lowercaseletter",  "titlecaseletter",  "modifierletter",
    "otherletter",        "nonspacingmark",   "spacingmark",      "enclosingmark",
    "decimalnumber",      "letternumber",     "othernumber",      "connectorpunctuation",
    "dashpunctuation",    "openpunctuation",  "closepunctuation", "initialpunctuation",
    "finalpunctuation",   "otherpunctuation", "mathsymbol",       "currencysymbol",
    "modifiersymbol",     "othersymbol",      "spaceseparator",   "lineseparator",
    "paragraphseparator", "control",          "format",           "surrogate",
    "privateuse",         "unassigned"};
struct MajorClass {
  char letter;
  const char* long_name;
  int first;  // its categories are first..last in unicode_tables::Category order
  int last;
};
constexpr std::array<MajorClass, 7> kMajorClasses = {{{'L', "letter", ut::kLu, ut::kLo},
                                                      {'M', "mark", ut::kMn, ut::kMe},
                                                      {'N', "number", ut::kNd, ut::kNo},
                                                      {'P', "punctuation", ut::kPc, ut::kPo},
                                                      {'S', "symbol", ut::kSm, ut::kSo},
                                                      {'Z', "separator", ut::kZs, ut::kZp},
                                                      {'C', "other", ut::kCc, ut::kCn}}};
constexpr uint32_t kAllCategories = (uint32_t{1} << ut::kNumCategories) - 1;

constexpr uint32_t bit(int category) {
  return uint32_t{1} << category;
}
constexpr uint32_t bits(int first, int last) {
  return ((uint32_t{1} << (last + 1)) - 1) & ~(bit(first) - 1);
}

void append_range(char32_t first, char32_t last, std::string& out) {
  char buf[32];
  if (first == last) {
    std::snprintf(buf, sizeof(buf), "\\x{%X}", static_cast<unsigned>(first));
  } else {
    std::snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", static_cast<unsigned>(first), static_cast<unsigned>(last));
  }
  out += buf;
}

// NOTE: PCRE2 10.42 (Debian 12) has Unicode 14.0 tables; HF's Oniguruma (and unicode_tables.cpp) has 16.0, which
// assigns ~10k more code points (126 ranges: CJK Ext. H/I, Garay, Todhri, ...). Without these ranges \p{L} missed
// them: 58 of 4350 all-code-point sweep lines split differently on the GPT-2/Llama-3/Qwen2 patterns.
// Per category: the code points Unicode 16 puts in it that PCRE2 calls unassigned, as class items; and the
// code points still unassigned in Unicode 16. Found once, by asking PCRE2 which assigned code points it calls Cn.
struct UnicodeGap {
  std::array<std::string, ut::kNumCategories> items;
};

UnicodeGap find_unicode_gap() {
  UnicodeGap gap;
  std::string text;
  std::vector<size_t> offsets;
  std::vector<char32_t> code_points;
  for (size_t r = 0; r < ut::kNumCategoryRuns; ++r) {
    const char32_t first = ut::kCategoryRuns[r].start;
    const char32_t last = (r + 1 < ut::kNumCategoryRuns ? ut::kCategoryRuns[r + 1].start : 0x110000) - 1;
    const int category = ut::kCategoryRuns[r].category;
    if (category == ut::kCn) {
      append_range(first, last, gap.items[ut::kCn]);
      continue;
    }
    if (category == ut::kCs || category == ut::kCo) continue;  // the same in every version
    for (char32_t cp = first; cp <= last; ++cp) {
      offsets.push_back(text.size());
      code_points.push_back(cp);
      append_utf8(cp, text);
    }
  }
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\p{Cn}"), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  pcre2_match_data* data = code != nullptr ? pcre2_match_data_create(1, nullptr) : nullptr;
  if (data == nullptr) {
    pcre2_code_free(code);
    return gap;
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::array<std::vector<char32_t>, ut::kNumCategories> missing;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (size_t start = 0; start < text.size();) {
    if (pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, data, nullptr) < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t idx =
        static_cast<size_t>(std::lower_bound(offsets.begin(), offsets.end(), ovector[0]) - offsets.begin());
    if (idx >= code_points.size() || ovector[1] <= start) break;
    missing[general_category(code_points[idx])].push_back(code_points[idx]);
    start = ovector[1];
  }
  pcre2_match_data_free(data);
  pcre2_code_free(code);
  for (int c = 0; c < ut::kCn; ++c) {
    const std::vector<char32_t>& cps = missing[c];
    for (size_t i = 0; i < cps.size();) {
      size_t j = i;
      while (j + 1 < cps.size() && cps[j + 1] == cps[j] + 1) ++j;
      append_range(cps[i], cps[j], gap.items[c]);
      i = j + 1;
    }
  }
  return gap;
}

const UnicodeGap& unicode_gap() {
  static const UnicodeGap gap = find_unicode_gap();
  return gap;
}

// Class items matching exactly the code points whose Unicode 16 general category is in `set`.
std::string category_items(uint32_t set) {
  const UnicodeGap& gap = unicode_gap();
  std::string properties;
  std::string ranges;
  for (const MajorClass& major : kMajorClasses) {
    const uint32_t members = bits(major.first, major.last);
    // PCRE2's \p{C} takes the code points only it calls unassigned, so C is always spelled out.
    if ((set & members) == members && major.letter != 'C') {
      properties += std::string("\\p{") + major.letter + "}";
      for (int c = major.first; c <= major.last; ++c) ranges += gap.items[c];
      continue;
    }
    for (int c = major.first; c <= major.last; ++c) {
      if ((set & bit(c)) == 0) continue;
      if (c != ut::kCn) properties += std::string("\\p{") + kCategoryNames[c] + "}";
      ranges += gap.items[c];
    }
  }
  return properties + ranges;
}

// Oniguruma's Unicode \w: Alphabetic, marks, decimal digits and connector punctuation; outside a class, code
// points below U+0100 follow its Latin-1 table instead, which also takes \u00B2 \u00B3 \u00B9 \u00BC-\u00BE. (PCRE2's
// \w is letters, all numbers and "_".) Checked against HF's Split on every code point. As class items.
std::string word_items(bool in_class) {
  const UnicodeGap& gap = unicode_gap();
  std::string items = "\\p{Alphabetic}" + category_items(bits(ut::kMn, ut::kNd) | bit(ut::kPc));
  if (!in_class) items += "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
  for (int c = ut::kLu; c <= ut::kLo; ++c) items += gap.items[c];
  return items + gap.items[ut::kNl];
}

// The general categories a \p{name} names (short or long names; case, spaces, "_" and "-" ignored, as in
// Oniguruma), or 0 for any other property (scripts, binary properties), which PCRE2 gets unchanged.
uint32_t category_set(std::string_view name) {
  std::string key;
  for (const char c : name) {
    if (c != ' ' && c != '_' && c != '-') key.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (key == "lc" || key == "l&" || key == "casedletter") return bits(ut::kLu, ut::kLt);
  for (const MajorClass& major : kMajorClasses) {
    if (key == std::string(1, static_cast<char>(std::tolower(major.letter))) || key == major.long_name) {
      return bits(major.first, major.last);
    }
  }
  for (int c = 0; c < ut::kNumCategories; ++c) {
    std::string short_name = kCategoryNames[c];
    for (char& ch : short_name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (key == short_name || key == kCategoryLongNames[c]) return bit(c);
  }
  return 0;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

class Translator {
 public:
  explicit Translator(std::string_view pattern) : p_(pattern) {}

  Expected<TranslatedPattern> run() {
    while (i_ < p_.size()) {
      const char c = p_[i_];
      if (c == '\\') {
        ANVIL_RETURN_IF_ERROR(escape());
      } else if (in_class_) {
        ANVIL_RETURN_IF_ERROR(class_char());
      } else if (c == '[') {
        open_class();
      } else if (c == '(' && i_ + 1 < p_.size() && p_[i_ + 1] == '?') {
        ANVIL_RETURN_IF_ERROR(group());
      } else if (c == '{') {
        ANVIL_RETURN_IF_ERROR(interval());
      } else {
        copy(1);
      }
    }
    out_.source_byte.push_back(p_.size());
    return std::move(out_);
  }

 private:
  void emit(std::string_view s, size_t source) {
    out_.pcre2 += s;
    out_.source_byte.insert(out_.source_byte.end(), s.size(), source);
  }
  void copy(size_t num_bytes) {
    num_bytes = std::min(num_bytes, p_.size() - i_);
    for (size_t k = 0; k < num_bytes; ++k) emit(p_.substr(i_ + k, 1), i_ + k);
    i_ += num_bytes;
  }
  Status refuse(size_t at, const std::string& what) const {
    return unsupported(what + " at offset " + std::to_string(at) + " has no PCRE2 equivalent");
  }

  void open_class() {
    copy(1);
    if (i_ < p_.size() && p_[i_] == '^') copy(1);
    if (i_ < p_.size() && p_[i_] == ']') copy(1);  // a leading ] is literal in both
    in_class_ = true;
  }

  Status class_char() {
    const char c = p_[i_];
    if (c == ']') {
      in_class_ = false;
    } else if (c == '[') {
      return refuse(i_, "a nested class or POSIX bracket ([...] inside [...])");
    } else if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') {
      return refuse(i_, "the class intersection &&");
    }
    copy(1);
    return Status();
  }

  // "(?" at i_: option letters are rewritten (Oniguruma's m is PCRE2's s); comments are copied whole; every other
  // group kind ((?:  (?=  (?!  (?<=  (?<!  (?>  (?<name>) means the same in both.
  Status group() {
    const size_t start = i_;
    size_t j = i_ + 2;
    if (j < p_.size() && p_[j] == '#') {
      const size_t close = p_.find(')', j);
      copy(close == std::string_view::npos ? p_.size() - i_ : close + 1 - i_);
      return Status();
    }
    while (j < p_.size() && (std::isalpha(static_cast<unsigned char>(p_[j])) || p_[j] == '-')) ++j;
    if (j == i_ + 2 || j >= p_.size() || (p_[j] != ')' && p_[j] != ':')) {
      copy(2);
      return Status();
    }
    emit("(?", start);
    for (size_t k = i_ + 2; k < j; ++k) {
      const char f = p_[k];
      if (f == 'i' || f == '-') {
        emit(p_.substr(k, 1), k);
      } else if (f == 'm') {
        emit("s", k);  // Oniguruma (?m): "." also matches \n
      } else {
        return refuse(k, std::string("the option (?") + f + ")");
      }
    }
    i_ = j;
    copy(1);
    return Status();
  }

  // "{" outside a class: {n} {n,} {n,m} and Oniguruma's {,n}; anything else is a literal brace.
  Status interval() {
    const size_t start = i_;
    size_t j = i_ + 1;
    const size_t low_begin = j;
    while (j < p_.size() && is_digit(p_[j])) ++j;
    const std::string_view low = p_.substr(low_begin, j - low_begin);
    const bool has_comma = j < p_.size() && p_[j] == ',';
    std::string_view high;
    if (has_comma) {
      const size_t high_begin = ++j;
      while (j < p_.size() && is_digit(p_[j])) ++j;
      high = p_.substr(high_begin, j - high_begin);
    }
    if (j >= p_.size() || p_[j] != '}' || (low.empty() && high.empty())) {
      emit("\\{", start);
      ++i_;
      return Status();
    }
    emit("{", start);
    emit(low.empty() ? std::string_view("0") : low, start + 1);
    if (has_comma) {
      emit(",", start + 1);
      emit(high, start + 1);
    }
    emit("}", j);
    i_ = j + 1;
    if (i_ < p_.size() && p_[i_] == '+') {
      return refuse(start, "a repeat {n,m}+ (a repeated repeat in Oniguruma, possessive in PCRE2)");
    }
    if (!has_comma && i_ < p_.size() && p_[i_] == '?') {
      return refuse(start, "a repeat {n}? (optional in Oniguruma, lazy in PCRE2)");
    }
    return Status();
  }

  // A general-category escape at `start` (\p{..} \P{..} \d \D): the Unicode 16 set, as a class or its items.
  Status categories(size_t start, uint32_t set, bool negated) {
    if (negated && in_class_) set = ~set & kAllCategories;  // items can only add: spell out the complement
    const std::string items = category_items(set);
    if (in_class_) {
      emit(items, start);
    } else {
      emit(negated ? "[^" : "[", start);
      emit(items, start);
      emit("]", start);
    }
    i_ += 2;
    return Status();
  }

  Status escape() {
    const size_t start = i_;
    if (i_ + 1 >= p_.size()) {
      copy(1);  // PCRE2 reports the trailing backslash
      return Status();
    }
    const char e = p_[i_ + 1];
    auto replace = [&](std::string_view s) {
      emit(s, start);
      i_ += 2;
      return Status();
    };
    auto in_brackets = [&](std::string_view negation, std::string_view items) {
      emit("[", start);
      emit(negation, start);
      emit(items, start);
      emit("]", start);
      i_ += 2;
      return Status();
    };
    switch (e) {
      case 's':
        return replace(kSpace);
      case 'S':
        return replace(kNotSpace);
      case 'd':
        return categories(start, bit(ut::kNd), false);
      case 'D':
        return categories(start, bit(ut::kNd), true);
      case 'w':
        return in_class_ ? replace(word_items(true)) : in_brackets("", word_items(false));
      case 'W':
        if (in_class_) return refuse(start, "\\W inside a class");
        return in_brackets("^", word_items(false));
      case 'h':
        return in_class_ ? replace(kHexItems) : in_brackets("", kHexItems);
      case 'H':
        if (in_class_) return refuse(start, "\\H inside a class");
        return in_brackets("^", kHexItems);
      case 'b':
      case 'B': {
        if (in_class_) break;  // backspace in both
        const std::string w = "[" + word_items(false) + "]";
        // A word boundary: a word character on exactly one side (or, for \B, on both or neither).
        return replace(e == 'b' ? "(?:(?<=" + w + ")(?!" + w + ")|(?<!" + w + ")(?=" + w + "))"
                                : "(?:(?<=" + w + ")(?=" + w + ")|(?<!" + w + ")(?!" + w + "))");
      }
      case 'p':
      case 'P': {
        const size_t close = i_ + 2 < p_.size() && p_[i_ + 2] == '{' ? p_.find('}', i_ + 2) : std::string_view::npos;
        if (close == std::string_view::npos) break;
        std::string_view name = p_.substr(i_ + 3, close - i_ - 3);
        bool negated = e == 'P';
        if (!name.empty() && name[0] == '^') {
          negated = !negated;
          name.remove_prefix(1);
        }
        const uint32_t set = category_set(name);
        if (set == 0) break;
        i_ = close - 1;  // categories() steps past the two characters of an escape
        return categories(start, set, negated);
      }
      case 'v':
        return replace("\\x0B");  // Oniguruma: vertical tab; PCRE2: any vertical space
      case 'u': {
        size_t k = i_ + 2;
        while (k < p_.size() && k < i_ + 6 && std::isxdigit(static_cast<unsigned char>(p_[k]))) ++k;
        if (k != i_ + 6) break;  // PCRE2 reports \u without four hex digits
        emit("\\x{", start);
        emit(p_.substr(i_ + 2, 4), start + 2);
        emit("}", start + 5);
        i_ = k;
        return Status();
      }
      case 'Q':
      case 'E':
        return refuse(start, std::string("\\") + e + " quoting");
      default:
        break;
    }
    copy(2);
    // \x{...} \o{...} \p{...} \P{...} \k{...} \g{...}: the braces belong to the escape, not to a repeat.
    if (std::isalpha(static_cast<unsigned char>(e)) && i_ < p_.size() && p_[i_] == '{') {
      const size_t close = p_.find('}', i_);
      copy(close == std::string_view::npos ? 1 : close + 1 - i_);
    }
    return Status();
  }

  std::string_view p_;
  size_t i_ = 0;
  bool in_class_ = false;
  TranslatedPattern out_;
};

}  // namespace

Expected<TranslatedPattern> onig_to_pcre2(std::string_view pattern) {
  return Translator(pattern).run();
}

}  // namespace anvil::regex_internal
