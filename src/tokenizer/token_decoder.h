// Decoders of a tokenizer.json ("decoder"): how token strings become text again. Each has HF's decode_chain
// (exact, over the whole token list) and a per-token form for streaming, where a token's bytes must not
// depend on its neighbours. Supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/json_fields.h"

namespace anvil {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // HF's decode_chain: rewrites the token strings (the caller joins the result).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // The bytes one token decodes to on its own (ByteLevel and ByteFallback give raw bytes, which may be part
  // of a UTF-8 character). Rules that look across tokens (Fuse, Strip, the first token of Metaspace) are left
  // out; strips_leading_space() reports the one that matters.
  virtual void stream_token(std::string& token) const = 0;
  // Whether decoding drops one leading space of the text (Strip of " ", Metaspace with a prepend scheme).
  virtual bool strips_leading_space() const { return false; }
};

// Builds the decoder `j` describes; null JSON gives a null pointer (HF then joins tokens with spaces).
Expected<std::unique_ptr<TokenDecoder>> parse_token_decoder(const nlohmann::json& j, const JsonWhere& where);

}  // namespace anvil
