// Llama2cTokenizer: the SentencePiece BPE vocabulary of a llama2.c tokenizer.bin (pieces with scores, byte
// fallback pieces <0xHH>, unk/bos/eos at ids 0/1/2), and its encoder: dummy-prefix space, UTF-8 characters,
// then highest-score merges of adjacent pieces, as llama2.c's encode() does, in O(n log n).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace anvil {

class Llama2cTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kUnkId = 0;
  static constexpr int32_t kBosId = 1;
  static constexpr int32_t kEosId = 2;
  // Texts longer than this are refused by encode (symbol offsets are 32-bit).
  static constexpr size_t kMaxTextBytes = size_t{1} << 30;

  // `pieces` and `scores` have one entry per token id (at least 3); pieces are stored as in the file, where
  // the word-start marker may be "▁" (U+2581) or already a space.
  Llama2cTokenizer(std::vector<std::string> pieces, std::vector<float> scores);

  Expected<std::vector<int32_t>> encode(std::string_view text, const EncodeOptions& options) const override;
  std::string token_bytes(int32_t id) const override;
  bool strips_leading_space() const override { return true; }
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t bos_id() const override { return kBosId; }
  int32_t eos_id() const override { return kEosId; }

  // True when every byte 0x00..0xFF has a <0xHH> piece, so that any text encodes without <unk>.
  bool has_full_byte_fallback() const;

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  std::vector<std::string> token_bytes_;  // [vocab_size] what each id decodes to (specials: empty)
  std::vector<float> scores_;             // [vocab_size]
  // Mergeable pieces (not special, not byte fallback), by their decoded text; first id wins on duplicates.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> piece_ids_;
  std::array<int32_t, 256> byte_ids_;  // id of <0xHH> for each byte, or kUnkId where the vocab lacks it
  bool has_full_byte_fallback_ = true;
  size_t max_piece_bytes_ = 0;  // longest key of piece_ids_: longer merges are never looked up
};

// Parses the bytes of a llama2.c tokenizer.bin: int32 max_token_length, then `vocab_size` records of
// (float32 score, int32 length, `length` bytes), little-endian, and nothing after them. `source` names the
// file in errors, which give the byte offset and the record (token id) at fault.
Expected<std::unique_ptr<Llama2cTokenizer>> parse_llama2c_tokenizer(const uint8_t* data, size_t size,
                                                                    int32_t vocab_size, const std::string& source);

}  // namespace anvil
