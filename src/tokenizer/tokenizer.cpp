// Tokenizer::decode, shared by every vocabulary format: concatenate token bytes, apply the SentencePiece
// leading-space rule once, and turn the bytes into valid UTF-8 the same way the incremental detokenizer does.
#include "tokenizer/tokenizer.h"

#include "tokenizer/utf8.h"

namespace anvil {

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  bool at_start = true;
  for (const int32_t id : ids) {
    std::string piece = token_bytes(id);
    if (piece.empty()) continue;
    if (at_start) {
      at_start = false;
      if (strips_leading_space() && piece.front() == ' ') piece.erase(0, 1);
    }
    bytes += piece;
  }
  return to_valid_utf8(bytes);
}

}  // namespace anvil
