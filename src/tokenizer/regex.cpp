// Pattern matching: literals by search, regexes on a backtracking VM over RegexProgram with an explicit stack and
// a step budget. Single-character repeats (\p{L}+, \s*, [\r\n]*) run as one instruction that gives characters back
// one at a time, so the common split patterns need no stack entry per character. Matches are iterated as
// HF's Oniguruma iterator does.
#include "tokenizer/regex.h"

#include "tokenizer/regex_program.h"

namespace anvil {
namespace {

using namespace regex_internal;

// The backtracking VM. One Matcher serves one find_all call; `steps` bounds the total work.
class Matcher {
 public:
  Matcher(const RegexProgram& program, std::string_view text, int64_t step_budget)
      : prog_(program), text_(text), steps_left_(step_budget) {}

  static constexpr int64_t kNoMatch = -1;
  static constexpr int64_t kGaveUp = -2;

  // The end of the highest-priority match of the sub-program at `pc` starting at `pos`, or kNoMatch/kGaveUp.
  int64_t run(int32_t pc, size_t pos) {
    const size_t base = stack_.size();
    int64_t result = kNoMatch;
    while (true) {
      if (--steps_left_ < 0) {
        result = kGaveUp;
        break;
      }
      const Inst& inst = prog_.code[static_cast<size_t>(pc)];
      bool ok = true;
      switch (inst.op) {
        case Op::kClass: {
          if (pos >= text_.size()) {
            ok = false;
            break;
          }
          const CodePoint cp = decode_code_point(text_, pos);
          ok = prog_.class_matches(inst.x, cp.value);
          if (ok) {
            pos += cp.num_bytes;
            ++pc;
          }
          break;
        }
        case Op::kSplit:
          stack_.push_back({inst.y, Entry::kResume, pos, 0, 0});
          pc = inst.x;
          break;
        case Op::kJmp:
          pc = inst.x;
          break;
        case Op::kMatch:
          result = static_cast<int64_t>(pos);
          stack_.resize(base);
          return result;
        case Op::kLook:
        case Op::kAtomic: {
          const int64_t sub = run(inst.x, pos);
          if (sub == kGaveUp) {
            stack_.resize(base);
            return kGaveUp;
          }
          if (inst.op == Op::kLook) {
            ok = (sub >= 0) != inst.negate;
          } else {
            ok = sub >= 0;
            if (ok) pos = static_cast<size_t>(sub);
          }
          if (ok) pc = inst.y;
          break;
        }
        case Op::kAssert:
          ok = check_assert(inst.assertion, pos);
          if (ok) ++pc;
          break;
        case Op::kRepeatClass:
          ok = start_repeat(inst, pc, pos);
          break;
      }
      if (ok) continue;
      if (!backtrack(base, pc, pos)) break;
    }
    stack_.resize(base);
    return result;
  }

 private:
  struct Entry {
    enum Kind : uint8_t { kResume, kGiveBack, kExtend };
    int32_t pc;  // where to continue
    Kind kind;
    size_t pos;     // kResume: position; kGiveBack/kExtend: the current end of the repeat
    size_t floor;   // kGiveBack: the end after the minimum count
    int32_t count;  // kExtend: characters taken so far
  };

  bool check_assert(AssertKind kind, size_t pos) const {
    const size_t n = text_.size();
    switch (kind) {
      case AssertKind::kLineStart:
        return pos == 0 || text_[pos - 1] == '\n';
      case AssertKind::kLineEnd:
        return pos == n || text_[pos] == '\n';
      case AssertKind::kTextStart:
        return pos == 0;
      case AssertKind::kTextEnd:
        return pos == n;
      case AssertKind::kTextEndNewline:
        return pos == n || (pos + 1 == n && text_[pos] == '\n');
      case AssertKind::kWordBoundary:
      case AssertKind::kNotWordBoundary: {
        auto is_word = [](char32_t cp) { return (category_bit(general_category(cp)) & kWordBits) != 0; };
        const bool before = pos > 0 && is_word(decode_code_point(text_, previous_code_point_start(text_, pos)).value);
        const bool after = pos < n && is_word(decode_code_point(text_, pos).value);
        return (before != after) == (kind == AssertKind::kWordBoundary);
      }
    }
    return false;
  }

  // Takes one more character of class `cls` at `pos`, if there is one.
  bool take(int32_t cls, size_t& pos) const {
    if (pos >= text_.size()) return false;
    const CodePoint cp = decode_code_point(text_, pos);
    if (!prog_.class_matches(cls, cp.value)) return false;
    pos += cp.num_bytes;
    return true;
  }

  bool start_repeat(const Inst& inst, int32_t& pc, size_t& pos) {
    int32_t count = 0;
    for (; count < inst.min; ++count) {
      if (!take(inst.x, pos)) return false;
    }
    const size_t floor = pos;
    if (inst.mode == RepeatMode::kLazy) {
      if (inst.max == kUnbounded || count < inst.max) stack_.push_back({pc + 1, Entry::kExtend, pos, 0, count});
      ++pc;
      return true;
    }
    while ((inst.max == kUnbounded || count < inst.max) && take(inst.x, pos)) {
      ++count;
      if (--steps_left_ < 0) return false;
    }
    if (inst.mode == RepeatMode::kGreedy && pos > floor) stack_.push_back({pc + 1, Entry::kGiveBack, pos, floor, 0});
    ++pc;
    return true;
  }

  // Resumes the most recent alternative; false when none is left above `base`.
  bool backtrack(size_t base, int32_t& pc, size_t& pos) {
    while (stack_.size() > base) {
      Entry& e = stack_.back();
      switch (e.kind) {
        case Entry::kResume:
          pc = e.pc;
          pos = e.pos;
          stack_.pop_back();
          return true;
        case Entry::kGiveBack: {
          e.pos = previous_code_point_start(text_, e.pos);
          pc = e.pc;
          pos = e.pos;
          if (e.pos <= e.floor) stack_.pop_back();
          return true;
        }
        case Entry::kExtend: {
          const Inst& repeat = prog_.code[static_cast<size_t>(e.pc - 1)];
          size_t p = e.pos;
          if (!take(repeat.x, p)) {
            stack_.pop_back();
            continue;
          }
          e.pos = p;
          ++e.count;
          pc = e.pc;
          pos = p;
          if (repeat.max != kUnbounded && e.count >= repeat.max) stack_.pop_back();
          return true;
        }
      }
    }
    return false;
  }

  const RegexProgram& prog_;
  std::string_view text_;
  int64_t steps_left_;
  std::vector<Entry> stack_;
};

}  // namespace

Pattern Pattern::literal(std::string_view text) {
  Pattern p;
  p.text_ = std::string(text);
  return p;
}

Expected<Pattern> Pattern::regex(std::string_view pattern, const std::string& where) {
  auto program = regex_internal::compile_regex(pattern);
  if (!program.ok()) return Status(program.status().code(), where + ": " + program.status().message());
  Pattern p;
  p.text_ = std::string(pattern);
  p.program_ = std::move(program).value();
  return p;
}

Status Pattern::find_all(std::string_view text, std::vector<MatchRange>& matches) const {
  matches.clear();
  if (!program_) {
    if (text_.empty()) return Status();
    for (size_t pos = text.find(text_); pos != std::string_view::npos; pos = text.find(text_, pos + text_.size())) {
      matches.emplace_back(pos, pos + text_.size());
    }
    return Status();
  }
  // NOTE: the budget allows ~1000 steps per byte: the split patterns take well under 50, so only a
  // catastrophically backtracking pattern (from a hostile file) reaches it.
  const int64_t budget = 1'000'000 + static_cast<int64_t>(text.size()) * 1000;
  Matcher matcher(*program_, text, budget);
  size_t search_from = 0;
  bool has_last_end = false;
  size_t last_end = 0;
  while (search_from <= text.size()) {
    int64_t end = Matcher::kNoMatch;
    size_t start = search_from;
    for (; start <= text.size(); start += start < text.size() ? decode_code_point(text, start).num_bytes : 1) {
      end = matcher.run(0, start);
      if (end != Matcher::kNoMatch) break;
    }
    if (end == Matcher::kGaveUp) {
      return resource_exhausted("regex " + text_ + " needs too many backtracking steps on a " +
                                std::to_string(text.size()) + "-byte text");
    }
    if (end == Matcher::kNoMatch) break;
    const auto match_end = static_cast<size_t>(end);
    if (start == match_end && has_last_end && last_end == match_end) {
      // Oniguruma's iterator: an empty match right after the previous one is skipped by one character.
      if (search_from >= text.size()) break;
      search_from += decode_code_point(text, search_from).num_bytes;
      continue;
    }
    matches.emplace_back(start, match_end);
    has_last_end = true;
    last_end = match_end;
    search_from = match_end;
    if (start == match_end && match_end >= text.size()) break;
  }
  return Status();
}

Expected<Pattern> parse_pattern(const nlohmann::json& j, const JsonWhere& where) {
  const nlohmann::json& literal = json_member(j, "String");
  if (literal.is_string()) return Pattern::literal(literal.get<std::string>());
  const nlohmann::json& regex = json_member(j, "Regex");
  if (regex.is_string()) return Pattern::regex(regex.get<std::string>(), where.field("Regex").at());
  return where.error("expected a pattern {\"String\": ...} or {\"Regex\": ...}, found " + j.dump());
}

}  // namespace anvil
