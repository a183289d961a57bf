// The tokenizer.json pre-tokenizers Anvil implements, with Hugging Face's split behaviors: a pattern's matches
// and the gaps between them become spans, and the behavior decides which spans stand alone, merge or go.
#include "tokenizer/pretokenizer.h"

#include <algorithm>
#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

// HF's Pattern::find_matches for a regex or literal: the matches and the gaps between them, in order.
void spans_from_matches(size_t text_bytes, const std::vector<MatchRange>& matches, std::vector<Span>& spans) {
  spans.clear();
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    if (prev != start) spans.push_back({prev, start, false});
    spans.push_back({start, end, true});
    prev = end;
  }
  if (prev != text_bytes) spans.push_back({prev, text_bytes, false});
}

// HF's Pattern::find_matches for a character predicate: every matching character is its own match.
template <typename Predicate>
void spans_from_chars(std::string_view text, Predicate matches, std::vector<Span>& spans) {
  spans.clear();
  size_t last = 0;
  for (size_t pos = 0; pos < text.size();) {
    const CodePoint cp = decode_code_point(text, pos);
    if (matches(cp.value)) {
      if (last < pos) spans.push_back({last, pos, false});
      spans.push_back({pos, pos + cp.num_bytes, true});
      last = pos + cp.num_bytes;
    }
    pos += cp.num_bytes;
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
}

// HF's NormalizedString::split: turns spans into the kept ranges, then appends the non-empty ones to `out`.
void split_by_spans(const Piece& piece, std::vector<Span>& spans, SplitBehavior behavior, std::vector<Piece>& out) {
  std::vector<Span> kept;
  kept.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      kept = spans;
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t i = spans.size(); i-- > 0;) {
        const Span& s = spans[i];
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().start = s.start;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& s : kept) {
    if (s.end <= s.start) continue;
    out.push_back({piece.text.substr(s.start, s.end - s.start), piece.at_text_start && s.start == 0});
  }
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) ANVIL_RETURN_IF_ERROR(step->pre_tokenize(pieces));
    return Status();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    std::vector<MatchRange> matches;
    std::vector<Span> spans;
    for (const Piece& piece : pieces) {
      ANVIL_RETURN_IF_ERROR(pattern_.find_all(piece.text, matches));
      spans_from_matches(piece.text.size(), matches, spans);
      if (invert_) {
        for (Span& s : spans) s.is_match = !s.is_match;
      }
      split_by_spans(piece, spans, behavior_, out);
    }
    pieces = std::move(out);
    return Status();
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Digits: numeric characters (Rust char::is_numeric) each on their own, or in contiguous runs.
class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    std::vector<Span> spans;
    for (const Piece& piece : pieces) {
      spans_from_chars(piece.text, is_numeric, spans);
      split_by_spans(piece, spans, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, out);
    }
    pieces = std::move(out);
    return Status();
  }

 private:
  bool individual_;
};

// ByteLevel: optionally a space in front, optionally GPT-2's split, then every byte spelled in the
// byte-level alphabet.
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<SplitPreTokenizer> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (Piece& piece : pieces) {
        if (piece.text.empty() || piece.text.front() != ' ') piece.text.insert(0, 1, ' ');
      }
    }
    if (split_) ANVIL_RETURN_IF_ERROR(split_->pre_tokenize(pieces));
    std::string mapped;
    for (Piece& piece : pieces) {
      mapped.clear();
      mapped.reserve(piece.text.size() * 2);
      append_byte_level(piece.text, mapped);
      piece.text.swap(mapped);
    }
    return Status();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> split_;
};

enum class PrependScheme { kAlways, kNever, kFirst };

// Metaspace: spaces become the replacement character, which is prepended per the scheme; with `split`
// each replacement character starts a new piece.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    std::vector<Span> spans;
    const char32_t replacement_cp = decode_code_point(replacement_, 0).value;
    for (Piece& piece : pieces) {
      std::string text;
      text.reserve(piece.text.size() + replacement_.size());
      for (const char c : piece.text) {
        if (c == ' ') {
          text += replacement_;
        } else {
          text.push_back(c);
        }
      }
      const bool starts_with_replacement = text.compare(0, replacement_.size(), replacement_) == 0;
      const bool prepend =
          scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && piece.at_text_start);
      if (prepend && !starts_with_replacement) text.insert(0, replacement_);
      Piece rewritten{std::move(text), piece.at_text_start};
      if (!split_) {
        out.push_back(std::move(rewritten));
        continue;
      }
      spans_from_chars(
          rewritten.text, [&](char32_t cp) { return cp == replacement_cp; }, spans);
      split_by_spans(rewritten, spans, SplitBehavior::kMergedWithNext, out);
    }
    pieces = std::move(out);
    return Status();
  }

 private:
  std::string replacement_;  // one character
  PrependScheme scheme_;
  bool split_;
};

Expected<SplitBehavior> parse_behavior(const nlohmann::json& j, const JsonWhere& where) {
  ANVIL_ASSIGN_OR_RETURN(const std::string name, json_string(j, "behavior", where));
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return where.field("behavior").unsupported_here("unknown split behavior \"" + name + "\"");
}

Expected<std::unique_ptr<PreTokenizer>> parse_metaspace(const nlohmann::json& j, const JsonWhere& where) {
  ANVIL_ASSIGN_OR_RETURN(std::string replacement, json_string(j, "replacement", where));
  if (replacement.empty() || decode_code_point(replacement, 0).num_bytes != replacement.size()) {
    return where.field("replacement").error("expected one character, found \"" + replacement + "\"");
  }
  PrependScheme scheme = PrependScheme::kAlways;
  const nlohmann::json& scheme_json = json_member(j, "prepend_scheme");
  if (scheme_json.is_string()) {
    const std::string name = scheme_json.get<std::string>();
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else {
      return where.field("prepend_scheme").unsupported_here("unknown prepend scheme \"" + name + "\"");
    }
  } else {
    // Files from before prepend_scheme existed say add_prefix_space instead.
    ANVIL_ASSIGN_OR_RETURN(const bool add_prefix_space, json_bool(j, "add_prefix_space", true, where));
    scheme = add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  ANVIL_ASSIGN_OR_RETURN(const bool split, json_bool(j, "split", true, where));
  return std::unique_ptr<PreTokenizer>(std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split));
}

}  // namespace

Expected<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  ANVIL_ASSIGN_OR_RETURN(const std::string type, json_type(j, where));
  if (type == "Sequence") {
    const nlohmann::json& list = json_member(j, "pretokenizers");
    if (!list.is_array()) return where.field("pretokenizers").error("expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> step,
                             parse_pre_tokenizer(list[i], where.field("pretokenizers").index(i)));
      if (step) steps.push_back(std::move(step));
    }
    return std::unique_ptr<PreTokenizer>(std::make_unique<SequencePreTokenizer>(std::move(steps)));
  }
  if (type == "ByteLevel") {
    ANVIL_ASSIGN_OR_RETURN(const bool add_prefix_space, json_bool(j, "add_prefix_space", true, where));
    ANVIL_ASSIGN_OR_RETURN(const bool use_regex, json_bool(j, "use_regex", true, where));
    std::unique_ptr<SplitPreTokenizer> split;
    if (use_regex) {
      ANVIL_ASSIGN_OR_RETURN(Pattern pattern, Pattern::regex(kGpt2SplitPattern, where.at()));
      split = std::make_unique<SplitPreTokenizer>(std::move(pattern), SplitBehavior::kIsolated, false);
    }
    return std::unique_ptr<PreTokenizer>(std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(split)));
  }
  if (type == "Split") {
    ANVIL_ASSIGN_OR_RETURN(Pattern pattern, parse_pattern(json_member(j, "pattern"), where.field("pattern")));
    ANVIL_ASSIGN_OR_RETURN(const SplitBehavior behavior, parse_behavior(j, where));
    ANVIL_ASSIGN_OR_RETURN(const bool invert, json_bool(j, "invert", false, where));
    return std::unique_ptr<PreTokenizer>(std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert));
  }
  if (type == "Digits") {
    ANVIL_ASSIGN_OR_RETURN(const bool individual, json_bool(j, "individual_digits", false, where));
    return std::unique_ptr<PreTokenizer>(std::make_unique<DigitsPreTokenizer>(individual));
  }
  if (type == "Metaspace") return parse_metaspace(j, where);
  return where.unsupported_here("unknown pre-tokenizer type \"" + type +
                                "\" (supported: Sequence, ByteLevel, Split, Digits, Metaspace)");
}

}  // namespace anvil
