// compile_regex: the parser (Oniguruma's Ruby syntax, the subset tokenizer.json split patterns use: Unicode
// properties, classes, non-capturing/case-insensitive/atomic groups, lookahead, greedy/lazy/possessive
// quantifiers, anchors) and the compiler to RegexProgram instructions. Unsupported constructs are named.
#include "tokenizer/regex_program.h"

#include <string>

namespace anvil::regex_internal {
namespace {

enum class NodeKind { kEmpty, kClass, kConcat, kAlternate, kRepeat, kLook, kAtomic, kAssert };

struct Node {
  NodeKind kind = NodeKind::kEmpty;
  std::vector<Node> kids;
  int32_t cls = kAnyClass;  // kClass
  int32_t min = 0;          // kRepeat
  int32_t max = 0;          // kRepeat; kUnbounded
  RepeatMode mode = RepeatMode::kGreedy;
  bool negate = false;  // kLook
  AssertKind assertion = AssertKind::kTextStart;
};

bool can_match_empty(const Node& n) {
  switch (n.kind) {
    case NodeKind::kEmpty:
    case NodeKind::kLook:
    case NodeKind::kAssert:
      return true;
    case NodeKind::kClass:
      return false;
    case NodeKind::kConcat:
      return std::all_of(n.kids.begin(), n.kids.end(), can_match_empty);
    case NodeKind::kAlternate:
      return std::any_of(n.kids.begin(), n.kids.end(), can_match_empty);
    case NodeKind::kRepeat:
      return n.min == 0 || can_match_empty(n.kids[0]);
    case NodeKind::kAtomic:
      return can_match_empty(n.kids[0]);
  }
  return true;
}

// The categories a \p{name} names: a general category or group by short or long name (Oniguruma ignores case,
// spaces, underscores and hyphens), Any, Assigned, or White_Space (which sets `is_white_space_class`).
Expected<uint32_t> property_bits(const std::string& name, bool& is_white_space_class) {
  std::string key;
  for (const char c : name) {
    if (c == '_' || c == ' ' || c == '-') continue;
    key.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  }
  const auto bit = [](ut::Category c) { return category_bit(c); };
  constexpr uint32_t kPunct = category_bit(ut::kPc) | category_bit(ut::kPd) | category_bit(ut::kPs) |
                              category_bit(ut::kPe) | category_bit(ut::kPi) | category_bit(ut::kPf) |
                              category_bit(ut::kPo);
  constexpr uint32_t kSymbol =
      category_bit(ut::kSm) | category_bit(ut::kSc) | category_bit(ut::kSk) | category_bit(ut::kSo);
  constexpr uint32_t kSeparator = category_bit(ut::kZs) | category_bit(ut::kZl) | category_bit(ut::kZp);
  constexpr uint32_t kOther = category_bit(ut::kCc) | category_bit(ut::kCf) | category_bit(ut::kCs) |
                              category_bit(ut::kCo) | category_bit(ut::kCn);
  constexpr uint32_t kAll = (uint32_t{1} << ut::kNumCategories) - 1;
  struct Named {
    const char* short_name;
    const char* long_name;
    uint32_t bits;
  };
  const Named names[] = {
      {"l", "letter", kLetterBits},
      {"lu", "uppercaseletter", bit(ut::kLu)},
      {"ll", "lowercaseletter", bit(ut::kLl)},
      {"lt", "titlecaseletter", bit(ut::kLt)},
      {"lm", "modifierletter", bit(ut::kLm)},
      {"lo", "otherletter", bit(ut::kLo)},
      {"lc", "casedletter", bit(ut::kLu) | bit(ut::kLl) | bit(ut::kLt)},
      {"m", "mark", kMarkBits},
      {"mn", "nonspacingmark", bit(ut::kMn)},
      {"mc", "spacingmark", bit(ut::kMc)},
      {"me", "enclosingmark", bit(ut::kMe)},
      {"n", "number", kNumberBits},
      {"nd", "decimalnumber", bit(ut::kNd)},
      {"nl", "letternumber", bit(ut::kNl)},
      {"no", "othernumber", bit(ut::kNo)},
      {"p", "punctuation", kPunct},
      {"pc", "connectorpunctuation", bit(ut::kPc)},
      {"pd", "dashpunctuation", bit(ut::kPd)},
      {"ps", "openpunctuation", bit(ut::kPs)},
      {"pe", "closepunctuation", bit(ut::kPe)},
      {"pi", "initialpunctuation", bit(ut::kPi)},
      {"pf", "finalpunctuation", bit(ut::kPf)},
      {"po", "otherpunctuation", bit(ut::kPo)},
      {"s", "symbol", kSymbol},
      {"sm", "mathsymbol", bit(ut::kSm)},
      {"sc", "currencysymbol", bit(ut::kSc)},
      {"sk", "modifiersymbol", bit(ut::kSk)},
      {"so", "othersymbol", bit(ut::kSo)},
      {"z", "separator", kSeparator},
      {"zs", "spaceseparator", bit(ut::kZs)},
      {"zl", "lineseparator", bit(ut::kZl)},
      {"zp", "paragraphseparator", bit(ut::kZp)},
      {"c", "other", kOther},
      {"cc", "control", bit(ut::kCc)},
      {"cf", "format", bit(ut::kCf)},
      {"cs", "surrogate", bit(ut::kCs)},
      {"co", "privateuse", bit(ut::kCo)},
      {"cn", "unassigned", bit(ut::kCn)},
      {"any", "any", kAll},
      {"assigned", "assigned", kAll & ~bit(ut::kCn)},
  };
  is_white_space_class = key == "whitespace" || key == "space";
  if (is_white_space_class) return 0u;
  for (const Named& n : names) {
    if (key == n.short_name || key == n.long_name) return n.bits;
  }
  if (key == "combiningmark") return kMarkBits;
  return unsupported("property \\p{" + name + "}");
}

class Parser {
 public:
  Parser(std::string_view pattern, std::vector<CharClass>& classes) : pattern_(pattern), classes_(classes) {}

  Expected<Node> parse() {
    ANVIL_ASSIGN_OR_RETURN(Node node, parse_alternation());
    if (pos_ < pattern_.size()) return fail("unbalanced ')'");
    return node;
  }

 private:
  Status fail(const std::string& problem) const {
    return invalid_file("regex does not compile at offset " + std::to_string(pos_) + ": " + problem);
  }
  Status not_supported(const std::string& construct) const {
    return unsupported("regex construct " + construct + " at offset " + std::to_string(pos_) + " is not supported");
  }
  bool at_end() const { return pos_ >= pattern_.size(); }
  char32_t peek() const { return decode_code_point(pattern_, pos_).value; }
  char32_t next() {
    const CodePoint cp = decode_code_point(pattern_, pos_);
    pos_ += cp.num_bytes;
    return cp.value;
  }
  bool consume(char c) {
    if (!at_end() && pattern_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  int32_t add_class(CharClass cls) {
    if (ignore_case_) cls.close_under_case_folding();
    cls.finalize();
    classes_.push_back(std::move(cls));
    return static_cast<int32_t>(classes_.size() - 1);
  }
  Node class_node(CharClass cls) {
    Node n;
    n.kind = NodeKind::kClass;
    n.cls = add_class(std::move(cls));
    return n;
  }

  Expected<Node> parse_alternation() {
    Node alt;
    alt.kind = NodeKind::kAlternate;
    while (true) {
      ANVIL_ASSIGN_OR_RETURN(Node branch, parse_concat());
      alt.kids.push_back(std::move(branch));
      if (!consume('|')) break;
    }
    if (alt.kids.size() == 1) return std::move(alt.kids[0]);
    return alt;
  }

  Expected<Node> parse_concat() {
    Node seq;
    seq.kind = NodeKind::kConcat;
    while (!at_end() && pattern_[pos_] != '|' && pattern_[pos_] != ')') {
      ANVIL_ASSIGN_OR_RETURN(Node atom, parse_quantified());
      if (atom.kind != NodeKind::kEmpty) seq.kids.push_back(std::move(atom));
    }
    if (seq.kids.empty()) return Node{};
    if (seq.kids.size() == 1) return std::move(seq.kids[0]);
    return seq;
  }

  // Reads {n}, {n,}, {n,m}, {,m} at pos_ ('{' already seen); false (pos_ unchanged) if it is not one.
  bool parse_interval(int32_t& min, int32_t& max) {
    const size_t start = pos_;
    auto number = [&](int32_t& out) {
      size_t digits = 0;
      int64_t v = 0;
      while (!at_end() && pattern_[pos_] >= '0' && pattern_[pos_] <= '9') {
        v = std::min<int64_t>(v * 10 + (pattern_[pos_] - '0'), int64_t{1} << 40);
        ++pos_;
        ++digits;
      }
      out = static_cast<int32_t>(std::min<int64_t>(v, kMaxRepeat + 1));
      return digits > 0;
    };
    ++pos_;
    int32_t lo = 0;
    int32_t hi = 0;
    const bool has_lo = number(lo);
    if (consume(',')) {
      const bool has_hi = number(hi);
      if (!has_hi) hi = kUnbounded;
      if (!has_lo && !has_hi) {
        pos_ = start;
        return false;
      }
    } else {
      if (!has_lo) {
        pos_ = start;
        return false;
      }
      hi = lo;
    }
    if (!consume('}')) {
      pos_ = start;
      return false;
    }
    min = lo;
    max = hi;
    return true;
  }

  Expected<Node> parse_quantified() {
    ANVIL_ASSIGN_OR_RETURN(Node atom, parse_atom());
    int num_quantifiers = 0;
    while (!at_end()) {
      const char c = pattern_[pos_];
      int32_t min = 0;
      int32_t max = 0;
      bool is_interval = false;
      if (c == '*') {
        min = 0, max = kUnbounded, ++pos_;
      } else if (c == '+') {
        min = 1, max = kUnbounded, ++pos_;
      } else if (c == '?') {
        min = 0, max = 1, ++pos_;
      } else if (c == '{' && parse_interval(min, max)) {
        is_interval = true;
      } else {
        break;
      }
      if (min > kMaxRepeat || max > kMaxRepeat) return fail("repeat count above " + std::to_string(kMaxRepeat));
      if (max != kUnbounded && max < min) return fail("repeat {n,m} with m < n");
      RepeatMode mode = RepeatMode::kGreedy;
      if (consume('?')) {
        mode = RepeatMode::kLazy;
      } else if (!is_interval && consume('+')) {
        mode = RepeatMode::kPossessive;
      }
      if (atom.kind == NodeKind::kEmpty) return fail("a quantifier with nothing to repeat");
      if (++num_quantifiers > 2) return not_supported("more than two quantifiers in a row");
      if (max == kUnbounded && atom.kind != NodeKind::kClass && can_match_empty(atom)) {
        return not_supported("an unbounded repeat of something that can match empty");
      }
      Node rep;
      rep.kind = NodeKind::kRepeat;
      rep.min = min;
      rep.max = max;
      rep.mode = mode;
      rep.kids.push_back(std::move(atom));
      atom = std::move(rep);
    }
    return atom;
  }

  Expected<Node> parse_group() {
    // '(' already consumed.
    if (++depth_ > kMaxNesting) return not_supported("groups nested deeper than " + std::to_string(kMaxNesting));
    struct DepthGuard {
      int& depth;
      ~DepthGuard() { --depth; }
    } guard{depth_};
    const bool saved_ignore_case = ignore_case_;
    Node group;
    bool restore_flags = true;
    if (consume('?')) {
      if (at_end()) return fail("unterminated group");
      const char c = pattern_[pos_];
      if (c == ':') {
        ++pos_;
      } else if (c == '=' || c == '!') {
        ++pos_;
        group.kind = NodeKind::kLook;
        group.negate = c == '!';
      } else if (c == '>') {
        ++pos_;
        group.kind = NodeKind::kAtomic;
      } else if (c == '<' && pos_ + 1 < pattern_.size() && (pattern_[pos_ + 1] == '=' || pattern_[pos_ + 1] == '!')) {
        return not_supported("lookbehind (?<= or (?<!");
      } else if (c == '<' || c == '\'') {
        const char close = c == '<' ? '>' : '\'';
        const size_t end = pattern_.find(close, pos_ + 1);
        if (end == std::string_view::npos) return fail("unterminated group name");
        pos_ = end + 1;
      } else if (c == '#') {
        const size_t end = pattern_.find(')', pos_);
        if (end == std::string_view::npos) return fail("unterminated comment");
        pos_ = end + 1;
        return Node{};
      } else {
        // Flags: (?i) (?-i) (?i:...) (?i-i:...)
        bool on = true;
        bool flag = ignore_case_;
        while (!at_end() && pattern_[pos_] != ':' && pattern_[pos_] != ')') {
          const char f = pattern_[pos_++];
          if (f == '-') {
            on = false;
          } else if (f == 'i') {
            flag = on;
          } else {
            return not_supported(std::string("flag '") + f + "'");
          }
        }
        if (at_end()) return fail("unterminated group");
        ignore_case_ = flag;
        if (consume(')')) {
          // (?i) applies to the rest of the enclosing group.
          restore_flags = false;
          return Node{};
        }
        ++pos_;  // ':'
      }
    }
    ANVIL_ASSIGN_OR_RETURN(Node body, parse_alternation());
    if (!consume(')')) return fail("missing ')'");
    if (restore_flags) ignore_case_ = saved_ignore_case;
    if (group.kind == NodeKind::kEmpty) return body;
    group.kids.push_back(std::move(body));
    return group;
  }

  // An escape after '\' (consumed) that stands for one code point, or -1 if it is not one.
  Expected<int64_t> parse_char_escape(char32_t c) {
    switch (c) {
      case 't':
        return 0x09;
      case 'n':
        return 0x0A;
      case 'r':
        return 0x0D;
      case 'f':
        return 0x0C;
      case 'v':
        return 0x0B;
      case 'a':
        return 0x07;
      case 'e':
        return 0x1B;
      case '0':
        return 0x00;
      case 'x':
      case 'u': {
        const bool braces = c == 'x' && consume('{');
        const size_t max_digits = braces ? 8 : (c == 'x' ? 2 : 4);
        int64_t v = 0;
        size_t digits = 0;
        while (!at_end() && digits < max_digits) {
          const char h = pattern_[pos_];
          const int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
          if (d < 0) break;
          v = v * 16 + d;
          ++pos_;
          ++digits;
        }
        if (braces && !consume('}')) return fail("unterminated \\x{...}");
        if (digits == 0 || (c == 'u' && digits != 4)) return fail("bad hex escape");
        if (v > 0x10FFFF) return fail("code point above U+10FFFF");
        return v;
      }
      default:
        break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9')) return int64_t{-1};
    return static_cast<int64_t>(c);  // an escaped punctuation or other character stands for itself
  }

  // A class escape (\s \d \w \p{..} and their negations, \h) after '\' (consumed); false if `c` is not one.
  Expected<bool> parse_class_escape(char32_t c, CharClass& cls, bool& negated) {
    negated = false;
    switch (c) {
      case 's':
      case 'S':
        cls.white_space = true;
        negated = c == 'S';
        return true;
      case 'd':
      case 'D':
        cls.categories = category_bit(ut::kNd);
        negated = c == 'D';
        return true;
      case 'w':
      case 'W':
        cls.categories = kWordBits;
        negated = c == 'W';
        return true;
      case 'h':
      case 'H':
        cls.ranges = {{'0', '9'}, {'a', 'f'}, {'A', 'F'}};
        negated = c == 'H';
        return true;
      case 'p':
      case 'P': {
        if (!consume('{')) return fail("expected '{' after \\p");
        negated = c == 'P';
        if (consume('^')) negated = !negated;
        const size_t end = pattern_.find('}', pos_);
        if (end == std::string_view::npos) return fail("unterminated \\p{");
        const std::string name(pattern_.substr(pos_, end - pos_));
        bool white_space = false;
        auto bits = property_bits(name, white_space);
        if (!bits.ok()) return not_supported("\\p{" + name + "}");
        pos_ = end + 1;
        cls.categories = bits.value();
        cls.white_space = white_space;
        return true;
      }
      default:
        return false;
    }
  }

  Expected<Node> parse_atom() {
    const char c = pattern_[pos_];
    if (c == '(') {
      ++pos_;
      return parse_group();
    }
    if (c == '[') {
      ++pos_;
      ANVIL_ASSIGN_OR_RETURN(CharClass cls, parse_bracket());
      return class_node(std::move(cls));
    }
    if (c == '.') {
      ++pos_;
      Node n;
      n.kind = NodeKind::kClass;
      n.cls = kAnyClass;
      return n;
    }
    if (c == '^' || c == '$') {
      ++pos_;
      Node n;
      n.kind = NodeKind::kAssert;
      n.assertion = c == '^' ? AssertKind::kLineStart : AssertKind::kLineEnd;
      return n;
    }
    if (c == '*' || c == '+' || c == '?') return fail("a quantifier with nothing to repeat");
    if (c == '\\') {
      ++pos_;
      if (at_end()) return fail("a trailing backslash");
      const char32_t e = next();
      Node n;
      n.kind = NodeKind::kAssert;
      switch (e) {
        case 'A':
          n.assertion = AssertKind::kTextStart;
          return n;
        case 'z':
          n.assertion = AssertKind::kTextEnd;
          return n;
        case 'Z':
          n.assertion = AssertKind::kTextEndNewline;
          return n;
        case 'b':
          n.assertion = AssertKind::kWordBoundary;
          return n;
        case 'B':
          n.assertion = AssertKind::kNotWordBoundary;
          return n;
        default:
          break;
      }
      CharClass cls;
      bool negated = false;
      ANVIL_ASSIGN_OR_RETURN(const bool is_class, parse_class_escape(e, cls, negated));
      if (is_class) {
        cls.negated = negated;
        return class_node(std::move(cls));
      }
      ANVIL_ASSIGN_OR_RETURN(const int64_t cp, parse_char_escape(e));
      if (cp < 0) return not_supported(std::string("escape \\") + static_cast<char>(e));
      CharClass lit;
      lit.ranges.emplace_back(static_cast<char32_t>(cp), static_cast<char32_t>(cp));
      return class_node(std::move(lit));
    }
    const char32_t cp = next();
    CharClass lit;
    lit.ranges.emplace_back(cp, cp);
    return class_node(std::move(lit));
  }

  // One member of a bracket class: a code point (>= 0) or a class escape merged into `cls` (-1).
  Expected<int64_t> parse_bracket_item(CharClass& cls) {
    if (pattern_[pos_] == '[') {
      if (pos_ + 1 < pattern_.size() && pattern_[pos_ + 1] == ':') return not_supported("POSIX bracket [:name:]");
      return not_supported("a nested class [..[..]..]");
    }
    if (pattern_.compare(pos_, 2, "&&") == 0) return not_supported("class intersection &&");
    if (pattern_[pos_] != '\\') return static_cast<int64_t>(next());
    ++pos_;
    if (at_end()) return fail("a trailing backslash");
    const char32_t e = next();
    CharClass part;
    bool negated = false;
    ANVIL_ASSIGN_OR_RETURN(const bool is_class, parse_class_escape(e, part, negated));
    if (is_class) {
      if (negated) {
        cls.negated_parts.push_back(std::move(part));
      } else {
        cls.categories |= part.categories;
        cls.white_space = cls.white_space || part.white_space;
        cls.ranges.insert(cls.ranges.end(), part.ranges.begin(), part.ranges.end());
      }
      return int64_t{-1};
    }
    if (e == 'b') return int64_t{0x08};
    ANVIL_ASSIGN_OR_RETURN(const int64_t cp, parse_char_escape(e));
    if (cp < 0) return not_supported(std::string("escape \\") + static_cast<char>(e) + " in a class");
    return cp;
  }

  Expected<CharClass> parse_bracket() {
    CharClass cls;
    if (consume('^')) cls.negated = true;
    bool first = true;
    while (true) {
      if (at_end()) return fail("unterminated class '['");
      if (pattern_[pos_] == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      ANVIL_ASSIGN_OR_RETURN(const int64_t lo, parse_bracket_item(cls));
      if (lo < 0) continue;
      if (pos_ + 1 < pattern_.size() && pattern_[pos_] == '-' && pattern_[pos_ + 1] != ']') {
        ++pos_;
        ANVIL_ASSIGN_OR_RETURN(const int64_t hi, parse_bracket_item(cls));
        if (hi < 0) return fail("a range ending in a class escape");
        if (hi < lo) return fail("a range out of order");
        cls.ranges.emplace_back(static_cast<char32_t>(lo), static_cast<char32_t>(hi));
      } else {
        cls.ranges.emplace_back(static_cast<char32_t>(lo), static_cast<char32_t>(lo));
      }
    }
    return cls;
  }

  std::string_view pattern_;
  std::vector<CharClass>& classes_;
  size_t pos_ = 0;
  int depth_ = 0;
  bool ignore_case_ = false;
};

class Compiler {
 public:
  explicit Compiler(RegexProgram& program) : code_(program.code) {}

  Status emit(const Node& n) {
    if (code_.size() > kMaxProgram) return unsupported("regex too large once repeats are expanded");
    switch (n.kind) {
      case NodeKind::kEmpty:
        return Status();
      case NodeKind::kClass:
        code_.push_back({Op::kClass, RepeatMode::kGreedy, false, AssertKind::kTextStart, n.cls});
        return Status();
      case NodeKind::kAssert: {
        Inst inst{Op::kAssert};
        inst.assertion = n.assertion;
        code_.push_back(inst);
        return Status();
      }
      case NodeKind::kConcat:
        for (const Node& kid : n.kids) ANVIL_RETURN_IF_ERROR(emit(kid));
        return Status();
      case NodeKind::kAlternate: {
        std::vector<size_t> jumps;
        for (size_t i = 0; i < n.kids.size(); ++i) {
          size_t split = 0;
          if (i + 1 < n.kids.size()) {
            split = code_.size();
            code_.push_back({Op::kSplit});
            code_[split].x = static_cast<int32_t>(code_.size());
          }
          ANVIL_RETURN_IF_ERROR(emit(n.kids[i]));
          if (i + 1 < n.kids.size()) {
            jumps.push_back(code_.size());
            code_.push_back({Op::kJmp});
            code_[split].y = static_cast<int32_t>(code_.size());
          }
        }
        for (const size_t j : jumps) code_[j].x = static_cast<int32_t>(code_.size());
        return Status();
      }
      case NodeKind::kLook:
      case NodeKind::kAtomic: {
        const size_t head = code_.size();
        Inst inst{n.kind == NodeKind::kLook ? Op::kLook : Op::kAtomic};
        inst.negate = n.negate;
        inst.x = static_cast<int32_t>(head + 1);
        code_.push_back(inst);
        ANVIL_RETURN_IF_ERROR(emit(n.kids[0]));
        code_.push_back({Op::kMatch});
        code_[head].y = static_cast<int32_t>(code_.size());
        return Status();
      }
      case NodeKind::kRepeat:
        return emit_repeat(n);
    }
    return Status();
  }

 private:
  Status emit_repeat(const Node& n) {
    const Node& kid = n.kids[0];
    if (kid.kind == NodeKind::kClass) {
      Inst inst{Op::kRepeatClass};
      inst.x = kid.cls;
      inst.min = n.min;
      inst.max = n.max;
      inst.mode = n.mode;
      code_.push_back(inst);
      return Status();
    }
    if (n.mode == RepeatMode::kPossessive) {
      Node greedy = n;
      greedy.mode = RepeatMode::kGreedy;
      Node atomic;
      atomic.kind = NodeKind::kAtomic;
      atomic.kids.push_back(std::move(greedy));
      return emit(atomic);
    }
    for (int32_t i = 0; i < n.min; ++i) ANVIL_RETURN_IF_ERROR(emit(kid));
    const bool greedy = n.mode == RepeatMode::kGreedy;
    if (n.max == kUnbounded) {
      const size_t loop = code_.size();
      code_.push_back({Op::kSplit});
      ANVIL_RETURN_IF_ERROR(emit(kid));
      code_.push_back({Op::kJmp});
      code_.back().x = static_cast<int32_t>(loop);
      const auto body = static_cast<int32_t>(loop + 1);
      const auto after = static_cast<int32_t>(code_.size());
      code_[loop].x = greedy ? body : after;
      code_[loop].y = greedy ? after : body;
      return Status();
    }
    std::vector<size_t> splits;
    for (int32_t i = n.min; i < n.max; ++i) {
      splits.push_back(code_.size());
      code_.push_back({Op::kSplit});
      ANVIL_RETURN_IF_ERROR(emit(kid));
      if (code_.size() > kMaxProgram) return unsupported("regex too large once repeats are expanded");
    }
    const auto after = static_cast<int32_t>(code_.size());
    for (const size_t s : splits) {
      const auto body = static_cast<int32_t>(s + 1);
      code_[s].x = greedy ? body : after;
      code_[s].y = greedy ? after : body;
    }
    return Status();
  }

  std::vector<Inst>& code_;
};

}  // namespace

Expected<std::shared_ptr<const RegexProgram>> compile_regex(std::string_view pattern) {
  auto program = std::make_shared<RegexProgram>();
  Parser parser(pattern, program->classes);
  ANVIL_ASSIGN_OR_RETURN(const Node root, parser.parse());
  Compiler compiler(*program);
  ANVIL_RETURN_IF_ERROR(compiler.emit(root));
  program->code.push_back({Op::kMatch});
  return std::shared_ptr<const RegexProgram>(std::move(program));
}

}  // namespace anvil::regex_internal
