// AddedVocabulary: HF's id assignment, the two leftmost-longest matchers, and find_matches' strip rules.
#include "tokenizer/added_vocab.h"

#include <algorithm>
#include <unordered_set>

#include "tokenizer/bpe.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

bool same_token(const AddedToken& a, const AddedToken& b) {
  return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
         a.normalized == b.normalized && a.special == b.special;
}

// The code point that ends just before byte `end` of valid UTF-8 `text` (end > 0).
CodePoint code_point_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return decode_code_point(text, start);
}

// Where the run of White_Space at the end of text[0, end) starts.
size_t space_run_start(std::string_view text, size_t end) {
  while (end > 0) {
    const CodePoint cp = code_point_before(text, end);
    if (!is_white_space(cp.value)) break;
    end -= cp.num_bytes;
  }
  return end;
}

// Where the run of White_Space starting at `start` ends.
size_t space_run_end(std::string_view text, size_t start) {
  while (start < text.size()) {
    const CodePoint cp = decode_code_point(text, start);
    if (!is_white_space(cp.value)) break;
    start += cp.num_bytes;
  }
  return start;
}

}  // namespace

void AddedVocabulary::Matcher::add(std::string_view pattern, int32_t id) {
  if (nodes.empty()) {
    nodes.emplace_back();
    first_byte.assign(256, false);
  }
  if (pattern.empty()) return;
  first_byte[static_cast<uint8_t>(pattern[0])] = true;
  int32_t node = 0;
  for (const char c : pattern) {
    const auto byte = static_cast<uint8_t>(c);
    int32_t child = -1;
    for (const auto& [b, idx] : nodes[static_cast<size_t>(node)].children) {
      if (b == byte) child = idx;
    }
    if (child < 0) {
      child = static_cast<int32_t>(nodes.size());
      nodes[static_cast<size_t>(node)].children.emplace_back(byte, child);
      nodes.emplace_back();
    }
    node = child;
  }
  // The first pattern added wins among identical ones, as the automaton's pattern order does.
  if (nodes[static_cast<size_t>(node)].id < 0) nodes[static_cast<size_t>(node)].id = id;
}

AddedSplit AddedVocabulary::Matcher::find(std::string_view text, size_t from) const {
  if (nodes.empty()) return {text.size(), text.size(), -1};
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_byte[static_cast<uint8_t>(text[start])]) continue;
    int32_t node = 0;
    AddedSplit best{start, start, -1};
    for (size_t pos = start; pos < text.size(); ++pos) {
      const auto byte = static_cast<uint8_t>(text[pos]);
      int32_t child = -1;
      for (const auto& [b, idx] : nodes[static_cast<size_t>(node)].children) {
        if (b == byte) child = idx;
      }
      if (child < 0) break;
      node = child;
      if (nodes[static_cast<size_t>(node)].id >= 0) best = {start, pos + 1, nodes[static_cast<size_t>(node)].id};
    }
    if (best.id >= 0) return best;
  }
  return {text.size(), text.size(), -1};
}

Expected<AddedVocabulary> AddedVocabulary::create(const std::vector<AddedToken>& tokens, const BpeModel& model,
                                                  const Normalizer* normalizer) {
  AddedVocabulary vocab;
  std::vector<const AddedToken*> special_list;
  std::vector<const AddedToken*> plain_list;
  std::unordered_set<std::string> special_set;
  for (const AddedToken& token : tokens) {
    if (token.special && !token.content.empty() && special_set.insert(token.content).second) {
      special_list.push_back(&token);
      vocab.special_contents_.push_back(token.content);
    }
  }
  const int32_t model_entries = model.num_entries();
  int32_t max_added_id = -1;
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    int32_t id = 0;
    if (const auto found = vocab.by_content_.find(token.content); found != vocab.by_content_.end()) {
      // Content maps to one id, so an identical token can only sit there.
      const auto existing = vocab.by_id_.find(found->second);
      if (existing != vocab.by_id_.end() && same_token(existing->second, token)) continue;
      id = found->second;
    } else if (const std::optional<int32_t> model_id = model.token_to_id(token.content)) {
      id = *model_id;
    } else {
      id = max_added_id < 0 ? model_entries
                            : (max_added_id >= model_entries || model_entries == 0 ? max_added_id + 1 : model_entries);
      if (id >= kMaxTokenId) return invalid_file("added token \"" + token.content + "\": id out of range");
    }
    max_added_id = std::max(max_added_id, id);
    vocab.by_content_[token.content] = id;
    AddedToken& stored = vocab.by_id_[id];
    stored = token;
    stored.decode_text = token.content;
    if (token.normalized && normalizer != nullptr) ANVIL_RETURN_IF_ERROR(normalizer->normalize(stored.decode_text));
    vocab.id_limit_ = std::max(vocab.id_limit_, id + 1);
    if (special_set.count(token.content) == 0) plain_list.push_back(&token);
  }
  vocab.raw_.add({}, -1);
  vocab.normalized_.add({}, -1);
  for (const auto* list : {&special_list, &plain_list}) {
    for (const AddedToken* token : *list) {
      const int32_t id = vocab.by_content_.at(token->content);
      if (!token->normalized) {
        vocab.raw_.add(token->content, id);
        continue;
      }
      std::string pattern = token->content;
      if (normalizer != nullptr) {
        const Status status = normalizer->normalize(pattern);
        if (!status.ok()) return status;
      }
      vocab.normalized_.add(pattern, id);
    }
  }
  return vocab;
}

void AddedVocabulary::split(std::string_view text, bool normalized, std::vector<AddedSplit>& out) const {
  find_matches(text, normalized ? normalized_ : raw_, out);
}

void AddedVocabulary::find_matches(std::string_view text, const Matcher& matcher, std::vector<AddedSplit>& out) const {
  if (text.empty()) return;
  size_t start_offset = 0;
  size_t search_from = 0;
  while (search_from < text.size()) {
    const AddedSplit match = matcher.find(text, search_from);
    if (match.id < 0) break;
    // The automaton moves on past every match, kept or not.
    search_from = match.end;
    size_t start = match.start;
    size_t stop = match.end;
    const AddedToken& token = by_id_.at(match.id);
    if (token.single_word) {
      const bool start_space = start == 0 || !is_word_char(code_point_before(text, start).value);
      const bool stop_space = stop == text.size() || !is_word_char(decode_code_point(text, stop).value);
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(space_run_start(text, start), start_offset);
    if (token.rstrip) stop = space_run_end(text, stop);
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, match.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  const auto found = by_id_.find(id);
  return found == by_id_.end() ? nullptr : &found->second;
}

std::optional<int32_t> AddedVocabulary::find_by_content(std::string_view content) const {
  const auto found = by_content_.find(std::string(content));
  if (found == by_content_.end()) return std::nullopt;
  return found->second;
}

bool AddedVocabulary::is_special(std::string_view content) const {
  return std::find(special_contents_.begin(), special_contents_.end(), content) != special_contents_.end();
}

}  // namespace anvil
