// Pattern matching: literals by search, regexes on PCRE2 (8-bit, UTF + UCP, JIT when available). Each thread
// keeps its own match data, match context and JIT stack, so one compiled regex serves concurrent encode calls.
// Matches are iterated as HF's Oniguruma iterator does.
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <algorithm>
#include <limits>

#include "tokenizer/regex_syntax.h"
#include "tokenizer/unicode_props.h"

namespace anvil {
namespace regex_internal {

struct CompiledRegex {
  pcre2_code* code = nullptr;
  CompiledRegex() = default;
  CompiledRegex(const CompiledRegex&) = delete;
  CompiledRegex& operator=(const CompiledRegex&) = delete;
  ~CompiledRegex() { pcre2_code_free(code); }
};

}  // namespace regex_internal

namespace {

// NOTE: the bound on PCRE2's backtracking is ~1000 steps per byte still to search (plus a floor): the split
// patterns take well under 50, so only a catastrophically backtracking pattern (from a hostile file) reaches it.
constexpr uint64_t kMatchLimitFloor = 1'000'000;
constexpr uint64_t kMatchLimitPerByte = 1000;
constexpr size_t kJitStackStartBytes = 32 * 1024;
constexpr size_t kJitStackMaxBytes = 1024 * 1024;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buffer));
}

// One thread's match state: match data for the whole-match offsets only, a match context and a JIT stack.
class ThreadMatchState {
 public:
  ThreadMatchState()
      : data_(pcre2_match_data_create(1, nullptr)),
        context_(pcre2_match_context_create(nullptr)),
        jit_stack_(pcre2_jit_stack_create(kJitStackStartBytes, kJitStackMaxBytes, nullptr)) {
    if (context_ != nullptr && jit_stack_ != nullptr) pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(context_);
    pcre2_match_data_free(data_);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;

  bool ok() const { return data_ != nullptr && context_ != nullptr; }

  // pcre2_match from `start`, with the backtracking bound for `bytes_left`; a JIT stack overflow retries on the
  // interpreter (whose frames live on the heap).
  int match(const pcre2_code* code, std::string_view text, size_t start, uint32_t options) {
    const uint64_t limit = kMatchLimitFloor + kMatchLimitPerByte * static_cast<uint64_t>(text.size() - start);
    pcre2_set_match_limit(context_, static_cast<uint32_t>(std::min<uint64_t>(limit, UINT32_MAX)));
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    int rc = pcre2_match(code, subject, text.size(), start, options, data_, context_);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_JIT, data_, context_);
    }
    return rc;
  }
  MatchRange range() const {
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data_);
    return {ovector[0], ovector[1]};
  }

 private:
  pcre2_match_data* data_;
  pcre2_match_context* context_;
  pcre2_jit_stack* jit_stack_;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

Pattern Pattern::literal(std::string_view text) {
  Pattern p;
  p.text_ = std::string(text);
  return p;
}

Expected<Pattern> Pattern::regex(std::string_view pattern, const std::string& where) {
  const std::string named = where + ": regex \"" + std::string(pattern) + "\": ";
  auto translated = regex_internal::onig_to_pcre2(pattern);
  if (!translated.ok()) return Status(translated.status().code(), named + translated.status().message());
  const regex_internal::TranslatedPattern& t = translated.value();

  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  if (context == nullptr) return internal_error(named + "out of memory");
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  pcre2_set_bsr(context, PCRE2_BSR_UNICODE);
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  auto compiled = std::make_shared<regex_internal::CompiledRegex>();
  compiled->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(t.pcre2.data()), t.pcre2.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C, &error, &error_offset, context);
  pcre2_compile_context_free(context);
  if (compiled->code == nullptr) {
    const size_t offset = t.source_byte[std::min<size_t>(error_offset, t.source_byte.size() - 1)];
    return invalid_file(named + pcre2_message(error) + " at offset " + std::to_string(offset));
  }
  // NOTE: JIT is an optimization only: where it is unavailable (or fails), pcre2_match interprets.
  pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);
  Pattern p;
  p.text_ = std::string(pattern);
  p.compiled_ = std::move(compiled);
  return p;
}

Status Pattern::find_all(std::string_view text, std::vector<MatchRange>& matches) const {
  matches.clear();
  if (!compiled_) {
    if (text_.empty()) return Status();
    for (size_t pos = text.find(text_); pos != std::string_view::npos; pos = text.find(text_, pos + text_.size())) {
      matches.emplace_back(pos, pos + text_.size());
    }
    return Status();
  }
  ThreadMatchState& state = thread_match_state();
  if (!state.ok()) return internal_error("regex " + text_ + ": out of memory for PCRE2 match data");
  // The first call checks the whole text is UTF-8; the later ones skip the check (it would make this quadratic).
  uint32_t options = 0;
  size_t search_from = 0;
  bool has_last_end = false;
  size_t last_end = 0;
  while (search_from <= text.size()) {
    const int rc = state.match(compiled_->code, text, search_from, options);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
        rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_NOMEMORY) {
      return resource_exhausted("regex " + text_ + " needs too much backtracking on a " + std::to_string(text.size()) +
                                "-byte text (" + pcre2_message(rc) + ")");
    }
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) {
      return invalid_argument("regex " + text_ + ": the text is not valid UTF-8 (" + pcre2_message(rc) + ")");
    }
    if (rc < 0) return internal_error("regex " + text_ + ": " + pcre2_message(rc));
    options = PCRE2_NO_UTF_CHECK;
    const auto [start, end] = state.range();
    if (end < start || end > text.size()) {
      return unsupported("regex " + text_ + ": a match that ends before it starts (\\K in a lookahead?)");
    }
    if (start == end && has_last_end && last_end == end) {
      // Oniguruma's iterator: an empty match right after the previous one is skipped by one character.
      if (search_from >= text.size()) break;
      search_from += decode_code_point(text, search_from).num_bytes;
      continue;
    }
    matches.emplace_back(start, end);
    has_last_end = true;
    last_end = end;
    search_from = end;
    if (start == end && end >= text.size()) break;
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
