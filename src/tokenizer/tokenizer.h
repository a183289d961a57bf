// Tokenizer: the interface every vocabulary format implements (llama2.c tokenizer.bin today;
// tokenizer.json and GGUF vocabularies later). Text in, token ids out, and the raw bytes of each token back.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/status.h"

namespace anvil {

struct EncodeOptions {
  bool add_bos = true;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual Expected<std::vector<int32_t>> encode(std::string_view text, const EncodeOptions& options) const = 0;
  // The raw bytes token `id` stands for (a byte-fallback token gives its byte; a word-start marker a space).
  // Special tokens (BOS/EOS) give an empty string.
  virtual std::string token_bytes(int32_t id) const = 0;
  // True for SentencePiece-style vocabularies whose decoder drops the leading space of the first piece.
  virtual bool strips_leading_space() const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;

  // Decodes a whole sequence (the leading-space rule applied once, to the first non-empty piece; each invalid
  // UTF-8 maximal subpart becomes U+FFFD, exactly as IncrementalDetokenizer streams it).
  std::string decode(std::span<const int32_t> ids) const;
};

// Loads a llama2.c tokenizer.bin: int32 max_token_length, then vocab_size records of
// (float32 score, int32 length, bytes). vocab_size comes from the model. Errors name the file and byte offset.
Expected<std::unique_ptr<Tokenizer>> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size);

}  // namespace anvil
