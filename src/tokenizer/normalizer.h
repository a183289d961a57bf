// Normalizers of a tokenizer.json ("normalizer"): the text rewrites applied to each piece of text between
// added tokens before pre-tokenization. Supported: Sequence, NFC, NFD, Prepend, Replace, Strip.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "anvil/status.h"
#include "tokenizer/json_fields.h"

namespace anvil {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites valid UTF-8 `text` in place (it stays valid UTF-8). Fails only if a regex gives up.
  virtual Status normalize(std::string& text) const = 0;
};

// Builds the normalizer `j` describes; null JSON gives a null pointer (no normalizer). An unknown "type" is
// an error naming it and the field.
Expected<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const JsonWhere& where);

}  // namespace anvil
