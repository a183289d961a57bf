// BpeModel: vocabulary and merge tables, and HF's word-merging algorithm (models/bpe/word.rs merge_all).
#include "tokenizer/bpe.h"

#include <algorithm>

#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

size_t hash_key(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return static_cast<size_t>(key);
}

// HF's Merge ordering: the lowest rank first, then the leftmost position. std::push_heap keeps the largest
// on top, so "a < b" means a comes out later.
bool merge_after(const BpeScratch::Merge& a, const BpeScratch::Merge& b) {
  if (a.rank != b.rank) return a.rank > b.rank;
  return a.pos > b.pos;
}

const char* hex_digits = "0123456789ABCDEF";

std::string byte_token(uint8_t b) {
  return std::string("<0x") + hex_digits[b >> 4] + hex_digits[b & 15] + ">";
}

}  // namespace

Expected<std::unique_ptr<BpeModel>> BpeModel::create(std::vector<std::pair<std::string, int32_t>> vocab,
                                                     const std::vector<std::pair<std::string, std::string>>& merges,
                                                     BpeOptions options, const std::string& where) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->options_ = std::move(options);
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0) return invalid_file(where + ": vocab entry \"" + token + "\" has negative id " + std::to_string(id));
    max_id = std::max<int64_t>(max_id, id);
  }
  // NOTE: ids index a flat table; a vocabulary whose ids run far past its size (never seen in real files) is
  // refused rather than allowed to allocate gigabytes.
  const auto num_entries = static_cast<int64_t>(vocab.size());
  if (max_id >= 2 * num_entries + 65536) {
    return invalid_file(where + ": vocab id " + std::to_string(max_id) + " is far beyond its " +
                        std::to_string(num_entries) + " entries");
  }
  model->id_tokens_.resize(static_cast<size_t>(max_id + 1));
  model->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  model->token_ids_.reserve(vocab.size());
  for (auto& [token, id] : vocab) {
    const auto idx = static_cast<size_t>(id);
    if (!model->has_id_[idx]) {
      model->has_id_[idx] = true;
      model->id_tokens_[idx] = token;
    }
    model->token_ids_.insert_or_assign(std::move(token), id);
  }

  model->flat_char_ids_.assign(kFlatChars, -1);
  for (const auto& [token, id] : model->token_ids_) {
    if (token.empty()) continue;
    const CodePoint cp = decode_code_point(token, 0);
    if (cp.num_bytes != token.size()) continue;
    if (cp.value < kFlatChars) {
      model->flat_char_ids_[cp.value] = id;
    } else {
      model->other_char_ids_[cp.value] = id;
    }
  }
  model->has_all_byte_ids_ = true;
  for (int b = 0; b < 256; ++b) {
    const auto found = model->token_ids_.find(byte_token(static_cast<uint8_t>(b)));
    model->byte_ids_[b] = found == model->token_ids_.end() ? -1 : found->second;
    model->has_all_byte_ids_ = model->has_all_byte_ids_ && model->byte_ids_[b] >= 0;
  }
  if (model->options_.unk_token) {
    const auto found = model->token_ids_.find(*model->options_.unk_token);
    if (found == model->token_ids_.end()) {
      return invalid_file(where + ": unk_token \"" + *model->options_.unk_token + "\" is not in the vocabulary");
    }
    model->unk_id_ = found->second;
  }

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  model->merges_.assign(capacity, MergeEntry{kEmptyKey, 0, 0});
  const size_t prefix_bytes = model->options_.continuing_subword_prefix.size();
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const std::string at = where + ": merge " + std::to_string(rank) + " (\"" + left + "\" \"" + right + "\")";
    const auto left_it = model->token_ids_.find(left);
    if (left_it == model->token_ids_.end()) return invalid_file(at + " names \"" + left + "\", not in the vocabulary");
    const auto right_it = model->token_ids_.find(right);
    if (right_it == model->token_ids_.end()) {
      return invalid_file(at + " names \"" + right + "\", not in the vocabulary");
    }
    if (right.size() < prefix_bytes) return invalid_file(at + ": the right token is shorter than the subword prefix");
    const std::string merged = left + right.substr(prefix_bytes);
    const auto merged_it = model->token_ids_.find(merged);
    if (merged_it == model->token_ids_.end()) {
      return invalid_file(at + " makes \"" + merged + "\", which is not in the vocabulary");
    }
    model->insert_merge(left_it->second, right_it->second, static_cast<uint32_t>(rank), merged_it->second);
  }
  return model;
}

void BpeModel::insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merges_.size() - 1;
  for (size_t slot = hash_key(key) & mask;; slot = (slot + 1) & mask) {
    MergeEntry& e = merges_[slot];
    // A pair listed twice keeps its last rank, as HF's HashMap collect does.
    if (e.key == kEmptyKey || e.key == key) {
      e = {key, rank, new_id};
      return;
    }
  }
}

const BpeModel::MergeEntry* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merges_.size() - 1;
  for (size_t slot = hash_key(key) & mask;; slot = (slot + 1) & mask) {
    const MergeEntry& e = merges_[slot];
    if (e.key == key) return &e;
    if (e.key == kEmptyKey) return nullptr;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto found = token_ids_.find(token);
  if (found == token_ids_.end()) return std::nullopt;
  return found->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_tokens_.size() || !has_id_[static_cast<size_t>(id)]) return nullptr;
  return &id_tokens_[static_cast<size_t>(id)];
}

int32_t BpeModel::char_id(char32_t cp) const {
  if (cp < kFlatChars) return flat_char_ids_[cp];
  const auto found = other_char_ids_.find(cp);
  return found == other_char_ids_.end() ? -1 : found->second;
}

void BpeModel::tokenize(std::string_view piece, BpeScratch& scratch, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    const auto found = token_ids_.find(piece);
    if (found != token_ids_.end()) {
      ids.push_back(found->second);
      return;
    }
  }
  auto& symbols = scratch.symbols;
  symbols.clear();
  auto add = [&](int32_t id, size_t num_bytes) {
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, idx - 1, idx + 1, static_cast<uint32_t>(num_bytes)});
  };
  const bool plain = options_.continuing_subword_prefix.empty() && options_.end_of_word_suffix.empty();
  int32_t unk_pending_id = -1;
  size_t unk_pending_bytes = 0;
  for (size_t pos = 0; pos < piece.size();) {
    const CodePoint cp = decode_code_point(piece, pos);
    const std::string_view spelling = piece.substr(pos, cp.num_bytes);
    pos += cp.num_bytes;
    int32_t id = -1;
    std::string_view symbol = spelling;
    if (plain) {
      id = char_id(cp.value);
    } else {
      std::string& s = scratch.text;
      s.clear();
      if (pos != cp.num_bytes) s += options_.continuing_subword_prefix;
      s += spelling;
      if (pos == piece.size()) s += options_.end_of_word_suffix;
      symbol = s;
      const auto found = token_ids_.find(symbol);
      if (found != token_ids_.end()) id = found->second;
    }
    if (id >= 0) {
      if (unk_pending_id >= 0) {
        add(unk_pending_id, unk_pending_bytes);
        unk_pending_id = -1;
      }
      add(id, cp.num_bytes);
      continue;
    }
    if (options_.byte_fallback) {
      bool all_bytes = true;
      for (const char c : symbol) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        for (const char c : symbol) add(byte_ids_[static_cast<uint8_t>(c)], 1);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (unk_pending_id >= 0 && options_.fuse_unk) {
        unk_pending_bytes += cp.num_bytes;
      } else {
        if (unk_pending_id >= 0) add(unk_pending_id, unk_pending_bytes);
        unk_pending_id = unk_id_;
        unk_pending_bytes = cp.num_bytes;
      }
    }
    // NOTE: without an unk token an unknown character is dropped, as HF does.
  }
  if (unk_pending_id >= 0) add(unk_pending_id, unk_pending_bytes);
  if (symbols.empty()) return;
  symbols.back().next = -1;
  merge_all(scratch);
  for (const BpeScratch::Symbol& s : symbols) {
    if (s.num_bytes != 0) ids.push_back(s.id);
  }
}

void BpeModel::merge_all(BpeScratch& scratch) const {
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  heap.clear();
  const auto num_symbols = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i + 1 < num_symbols; ++i) {
    if (const MergeEntry* m = find_merge(symbols[i].id, symbols[i + 1].id)) heap.push_back({m->rank, i, m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), merge_after);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), merge_after);
    const BpeScratch::Merge top = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& current = symbols[static_cast<size_t>(top.pos)];
    if (current.num_bytes == 0 || current.next == -1) continue;
    const int32_t next_pos = current.next;
    const BpeScratch::Symbol right = symbols[static_cast<size_t>(next_pos)];
    // A stale entry: the pair at this position no longer merges into the same token.
    const MergeEntry* target = find_merge(current.id, right.id);
    if (target == nullptr || target->new_id != top.new_id) continue;
    current.id = top.new_id;
    current.num_bytes += right.num_bytes;
    current.next = right.next;
    symbols[static_cast<size_t>(next_pos)].num_bytes = 0;
    if (right.next >= 0 && right.next < num_symbols) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (current.prev >= 0) {
      const BpeScratch::Symbol& prev = symbols[static_cast<size_t>(current.prev)];
      if (const MergeEntry* m = find_merge(prev.id, current.id)) {
        heap.push_back({m->rank, current.prev, m->new_id});
        std::push_heap(heap.begin(), heap.end(), merge_after);
      }
    }
    if (current.next >= 0 && current.next < num_symbols) {
      if (const MergeEntry* m = find_merge(current.id, symbols[static_cast<size_t>(current.next)].id)) {
        heap.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(heap.begin(), heap.end(), merge_after);
      }
    }
  }
}

}  // namespace anvil
