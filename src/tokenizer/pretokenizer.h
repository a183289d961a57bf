// Pre-tokenizers of a tokenizer.json ("pre_tokenizer"): they cut normalized text into the pieces the BPE model
// merges within, and may rewrite them (ByteLevel maps bytes to its alphabet, Metaspace spaces to "▁").
// Supported: Sequence, ByteLevel, Split (String or regex, every split behavior, invert), Digits,
// Metaspace (prepend_scheme always/never/first, split).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/json_fields.h"

namespace anvil {

struct Piece {
  std::string text;
  // True when the piece begins at byte 0 of the text given to encode (HF's offsets_original().0 == 0), which
  // Metaspace's prepend_scheme "first" asks. A piece cut from inside another begins elsewhere.
  bool at_text_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` (non-empty valid UTF-8) by their splits, in order; empty splits are dropped.
  // Fails only if a regex gives up.
  virtual Status pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// Builds the pre-tokenizer `j` describes; null JSON gives a null pointer. An unknown "type" is an error
// naming it and the field.
Expected<std::unique_ptr<PreTokenizer>> parse_pre_tokenizer(const nlohmann::json& j, const JsonWhere& where);

// GPT-2's split pattern, which ByteLevel uses when use_regex is true.
inline constexpr const char* kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace anvil
