// llama2.c tokenizer.bin: the file parser (every size checked against the bytes left) and the SentencePiece
// BPE encoder over a doubly linked list of symbols with a priority queue of candidate merges.
#include "tokenizer/llama2c_tokenizer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <queue>
#include <utility>

#include "tokenizer/utf8.h"

namespace anvil {
namespace {

static_assert(std::endian::native == std::endian::little, "tokenizer.bin is read as little-endian");

constexpr std::string_view kWordStartMarker = "\xE2\x96\x81";  // "▁" U+2581

int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a "<0xHH>" piece stands for, or -1 for any other piece.
int byte_fallback_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  const int hi = hex_digit_value(piece[3]);
  const int lo = hex_digit_value(piece[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

std::string replace_word_start_markers(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    if (piece.substr(pos, kWordStartMarker.size()) == kWordStartMarker) {
      out.push_back(' ');
      pos += kWordStartMarker.size();
    } else {
      out.push_back(piece[pos]);
      ++pos;
    }
  }
  return out;
}

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

float read_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// A run of text in the encoder's working string: one UTF-8 character at first, a merged piece later.
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t start;
  uint32_t num_bytes;  // 0 once merged into its left neighbour
  int32_t id;
  bool is_mergeable;  // false for byte-fallback and <unk> symbols
};

struct MergeCandidate {
  float score;
  int32_t left_idx;
  int32_t right_idx;
  uint32_t num_bytes;  // of the merged piece; a mismatch later means the candidate is stale
  int32_t id;
};

// Highest score first; on equal scores the leftmost pair, as llama2.c's linear scan picks.
struct CandidateOrder {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    if (a.score != b.score) return a.score < b.score;
    return a.left_idx > b.left_idx;
  }
};

}  // namespace

Llama2cTokenizer::Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores)
    : scores_(std::move(scores)) {
  byte_ids_.fill(kUnkId);
  std::array<bool, 256> has_byte{};
  token_bytes_.resize(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (id == kUnkId || id == kBosId || id == kEosId) continue;
    const int byte = byte_fallback_value(pieces[i]);
    if (byte >= 0) {
      token_bytes_[i] = std::string(1, static_cast<char>(byte));
      if (!has_byte[byte]) {
        has_byte[byte] = true;
        byte_ids_[byte] = id;
      }
      continue;
    }
    token_bytes_[i] = replace_word_start_markers(pieces[i]);
    if (token_bytes_[i].empty()) continue;
    if (piece_ids_.emplace(token_bytes_[i], id).second) {
      max_piece_bytes_ = std::max(max_piece_bytes_, token_bytes_[i].size());
    }
  }
  for (const bool b : has_byte) has_full_byte_fallback_ = has_full_byte_fallback_ && b;
}

bool Llama2cTokenizer::has_full_byte_fallback() const { return has_full_byte_fallback_; }

std::string Llama2cTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= token_bytes_.size()) return {};
  return token_bytes_[static_cast<size_t>(id)];
}

Expected<std::vector<int32_t>> Llama2cTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  if (text.size() > kMaxTextBytes) {
    return out_of_range("text to encode has " + std::to_string(text.size()) + " bytes, more than the limit of " +
                        std::to_string(kMaxTextBytes));
  }
  std::vector<int32_t> ids;
  if (options.add_bos) ids.push_back(kBosId);
  if (text.empty()) return ids;

  // NOTE: SentencePiece's add_dummy_prefix: the text is encoded as if it started with a space (llama2.c
  // pushes the piece " " first); decode's leading-space rule removes it again.
  std::string work;
  work.reserve(text.size() + 1);
  work.push_back(' ');
  work.append(text);
  const std::string_view view(work);

  std::vector<Symbol> symbols;
  symbols.reserve(work.size());
  auto add_symbol = [&](size_t start, size_t num_bytes, int32_t id, bool is_mergeable) {
    const auto idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({idx - 1, idx + 1, static_cast<uint32_t>(start), static_cast<uint32_t>(num_bytes), id,
                       is_mergeable});
  };
  size_t pos = 0;
  while (pos < view.size()) {
    const Utf8Sequence seq = classify_utf8(view, pos);
    // An invalid or truncated sequence is taken one byte at a time, each byte its own character.
    const size_t char_bytes = seq.kind == Utf8Kind::kComplete ? seq.length : 1;
    const auto found = piece_ids_.find(view.substr(pos, char_bytes));
    if (found != piece_ids_.end()) {
      add_symbol(pos, char_bytes, found->second, true);
    } else {
      for (size_t k = 0; k < char_bytes; ++k) {
        add_symbol(pos + k, 1, byte_ids_[static_cast<uint8_t>(view[pos + k])], false);
      }
    }
    pos += char_bytes;
  }
  symbols.back().next = -1;

  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, CandidateOrder> queue;
  auto try_add = [&](int32_t left_idx, int32_t right_idx) {
    if (left_idx < 0 || right_idx < 0) return;
    const Symbol& left = symbols[static_cast<size_t>(left_idx)];
    const Symbol& right = symbols[static_cast<size_t>(right_idx)];
    if (!left.is_mergeable || !right.is_mergeable) return;
    const size_t num_bytes = size_t{left.num_bytes} + right.num_bytes;
    if (num_bytes > max_piece_bytes_) return;
    const auto found = piece_ids_.find(view.substr(left.start, num_bytes));
    if (found == piece_ids_.end()) return;
    queue.push({scores_[static_cast<size_t>(found->second)], left_idx, right_idx, static_cast<uint32_t>(num_bytes),
                found->second});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) try_add(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));

  while (!queue.empty()) {
    const MergeCandidate cand = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(cand.left_idx)];
    Symbol& right = symbols[static_cast<size_t>(cand.right_idx)];
    if (left.num_bytes == 0 || right.num_bytes == 0 || left.next != cand.right_idx ||
        left.num_bytes + right.num_bytes != cand.num_bytes) {
      continue;
    }
    left.num_bytes = cand.num_bytes;
    left.id = cand.id;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = cand.left_idx;
    right.num_bytes = 0;
    try_add(left.prev, cand.left_idx);
    try_add(cand.left_idx, left.next);
  }

  for (int32_t idx = 0; idx >= 0; idx = symbols[static_cast<size_t>(idx)].next) {
    ids.push_back(symbols[static_cast<size_t>(idx)].id);
  }
  return ids;
}

Expected<std::unique_ptr<Llama2cTokenizer>> parse_llama2c_tokenizer(const uint8_t* data, size_t size,
                                                                    int32_t vocab_size, const std::string& source) {
  const std::string where = "tokenizer file " + source + ": ";
  if (vocab_size < 3) {
    return invalid_argument(where + "vocab_size " + std::to_string(vocab_size) +
                            " from the model is below 3 (unk, bos and eos are ids 0, 1, 2)");
  }
  if (size < 4) {
    return invalid_file(where + "truncated at byte 0: the file has " + std::to_string(size) +
                        " bytes, fewer than the 4 of max_token_length");
  }
  const int32_t max_token_length = read_i32(data);
  if (max_token_length < 0) {
    return invalid_file(where + "max_token_length " + std::to_string(max_token_length) + " at byte 0 is negative");
  }
  const std::string of_total = " of " + std::to_string(vocab_size);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  // NOTE: reserve no more than the file could hold (8 bytes a record), so a huge vocab_size cannot make a
  // short file allocate gigabytes before the truncation error.
  const size_t max_records = (size - 4) / 8;
  pieces.reserve(std::min(static_cast<size_t>(vocab_size), max_records));
  scores.reserve(pieces.capacity());
  size_t offset = 4;
  for (int32_t id = 0; id < vocab_size; ++id) {
    const std::string record = "token " + std::to_string(id) + of_total;
    if (size - offset < 8) {
      return invalid_file(where + "truncated at byte " + std::to_string(offset) + " (" + record +
                          " needs an 8-byte score and length; the file has " + std::to_string(size) +
                          " bytes: does the model's vocab_size " + std::to_string(vocab_size) + " match it?)");
    }
    const float score = read_f32(data + offset);
    const int32_t length = read_i32(data + offset + 4);
    const std::string at = where + record + " at byte " + std::to_string(offset) + ": ";
    if (std::isnan(score)) return invalid_file(at + "score is NaN");
    if (length < 0) return invalid_file(at + "length " + std::to_string(length) + " is negative");
    if (length > max_token_length) {
      return invalid_file(at + "length " + std::to_string(length) + " exceeds max_token_length " +
                          std::to_string(max_token_length));
    }
    offset += 8;
    if (size - offset < static_cast<size_t>(length)) {
      return invalid_file(where + "truncated at byte " + std::to_string(offset) + " (" + record + " needs " +
                          std::to_string(length) + " piece bytes, " + std::to_string(size - offset) + " are left)");
    }
    pieces.emplace_back(reinterpret_cast<const char*>(data + offset), static_cast<size_t>(length));
    scores.push_back(score);
    offset += static_cast<size_t>(length);
  }
  if (offset != size) {
    return invalid_file(where + std::to_string(size - offset) + " trailing bytes at byte " + std::to_string(offset) +
                        " after the last of " + std::to_string(vocab_size) +
                        " records: does the model's vocab_size match this tokenizer?");
  }
  return std::make_unique<Llama2cTokenizer>(std::move(pieces), std::move(scores));
}

Expected<std::unique_ptr<Tokenizer>> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) return not_found("tokenizer file " + path + ": does not exist");
  if (!std::filesystem::is_regular_file(status)) {
    return invalid_file("tokenizer file " + path + ": is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_file("tokenizer file " + path + ": cannot be opened for reading");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return invalid_file("tokenizer file " + path + ": read error");
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Llama2cTokenizer> tokenizer,
                         parse_llama2c_tokenizer(bytes.data(), bytes.size(), vocab_size, path));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace anvil
