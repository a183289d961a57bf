// BpeModel: the "BPE" model of a tokenizer.json, exactly as Hugging Face tokenizers runs it: a piece is cut
// into characters (or <0xHH> byte tokens with byte_fallback, or <unk>), then adjacent pairs merge by rank
// through a priority queue ordered by (rank, position), with HF's stale-entry rule; ignore_merges emits a
// piece that is itself a vocabulary entry as one token.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "anvil/status.h"

namespace anvil {

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

// Working memory of one encode call, reused across its pieces.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t num_bytes;  // 0 once merged into its left neighbour
  };
  struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Merge> heap;
  std::string text;
};

class BpeModel {
 public:
  // `vocab` holds (token, id) pairs and `merges` (left, right) pairs in rank order. `where` prefixes errors:
  // an id out of [0, 2^31 - 2], a merge naming a token not in the vocabulary or whose concatenation is not,
  // an unk_token not in the vocabulary.
  static Expected<std::unique_ptr<BpeModel>> create(std::vector<std::pair<std::string, int32_t>> vocab,
                                                    const std::vector<std::pair<std::string, std::string>>& merges,
                                                    BpeOptions options, const std::string& where);

  // Appends the ids of one pre-tokenized piece (valid UTF-8) to `ids`.
  void tokenize(std::string_view piece, BpeScratch& scratch, std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary entry of `id`, or null when no entry has that id.
  const std::string* id_to_token(int32_t id) const;
  // Number of vocabulary entries (HF get_vocab_size without added tokens).
  int32_t num_entries() const { return static_cast<int32_t>(token_ids_.size()); }
  // One past the largest id in the vocabulary.
  int32_t id_limit() const { return static_cast<int32_t>(id_tokens_.size()); }
  const BpeOptions& options() const { return options_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct MergeEntry {
    uint64_t key;  // (left id << 32) | right id; kEmptyKey when unused
    uint32_t rank;
    int32_t new_id;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  // Code points below this have their single-character token ids in a flat table.
  static constexpr char32_t kFlatChars = 0x3400;

  BpeModel() = default;
  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id);
  int32_t char_id(char32_t cp) const;
  void merge_all(BpeScratch& scratch) const;

  BpeOptions options_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_ids_;
  std::vector<std::string> id_tokens_;  // [id_limit] the entry of each id ("" where none)
  std::vector<bool> has_id_;            // [id_limit]
  std::vector<MergeEntry> merges_;      // open addressing, power-of-two size
  std::vector<int32_t> flat_char_ids_;  // [kFlatChars] id of the one-character token, or -1
  std::unordered_map<char32_t, int32_t> other_char_ids_;
  std::array<int32_t, 256> byte_ids_{};  // id of <0xHH>, or -1
  bool has_all_byte_ids_ = false;
  int32_t unk_id_ = -1;
};

}  // namespace anvil
