// AddedVocabulary: the "added_tokens" of a tokenizer.json (special tokens such as <s> or <|im_start|>, and
// plain added tokens). They are found in the text before pre-tokenization, leftmost-longest and never split,
// with HF's lstrip/rstrip/single_word/normalized rules; ids are assigned as HF's add_tokens does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "anvil/status.h"

namespace anvil {

class BpeModel;
class Normalizer;

struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
  // What decode writes for it: the content, normalized when `normalized` is set (HF's id_to_token).
  std::string decode_text;
};

// A byte range of the text: an added token (id >= 0, which may include stripped spaces) or text (id -1).
struct AddedSplit {
  size_t start;
  size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  // Adds `tokens` in order, as HF's AddedVocabulary::add_tokens does: a token whose content is in the model's
  // vocabulary takes that id, any other the next id after the largest so far (at least the model's number of
  // entries). Tokens with normalized=true are matched in normalized text against their content normalized by
  // `normalizer` (may be null).
  static Expected<AddedVocabulary> create(const std::vector<AddedToken>& tokens, const BpeModel& model,
                                          const Normalizer* normalizer);

  // Splits valid UTF-8 `text` at the added tokens of one matcher: the non-normalized ones (applied to the
  // original text) or the normalized ones (applied to each normalized piece). Appends to `out`.
  void split(std::string_view text, bool normalized, std::vector<AddedSplit>& out) const;

  // The token that `id` names, if it is an added token.
  const AddedToken* find_by_id(int32_t id) const;
  std::optional<int32_t> find_by_content(std::string_view content) const;
  bool is_special(std::string_view content) const;
  // One past the largest added id (0 when none).
  int32_t id_limit() const { return id_limit_; }
  bool empty() const { return by_id_.empty(); }

 private:
  // A byte trie over the patterns of one matcher.
  struct Matcher {
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;
      int32_t id = -1;  // the token ending here, if any
    };
    std::vector<Node> nodes;       // nodes[0] is the root
    std::vector<bool> first_byte;  // [256] can a pattern start with this byte?
    void add(std::string_view pattern, int32_t id);
    // The leftmost-longest match at or after `from`: {start, end, id}, or id -1.
    AddedSplit find(std::string_view text, size_t from) const;
  };

  void find_matches(std::string_view text, const Matcher& matcher, std::vector<AddedSplit>& out) const;

  std::unordered_map<int32_t, AddedToken> by_id_;
  std::unordered_map<std::string, int32_t> by_content_;
  std::vector<std::string> special_contents_;
  Matcher raw_;
  Matcher normalized_;
  int32_t id_limit_ = 0;
};

}  // namespace anvil
